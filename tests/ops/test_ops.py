import pytest
import torch
import torch.nn.functional as F

import torchlite  # noqa: F401
from torchlite import TorchliteError
from torchlite.numerics.linear import dequantize_weight, quantize_weight


def _q(n=24, k=80, bits=4, gs=16, sym=True):
    return quantize_weight(torch.randn(n, k), bits, gs, sym, "group" if gs else "channel")


@pytest.mark.parametrize("bits, gs, sym", [(8, None, True), (8, 16, False), (4, 16, True), (4, None, False)])
def test_opcheck(bits, gs, sym):
    """Schema, fake (meta) implementation and autograd registration agree with the eager op."""
    qw = _q(bits=bits, gs=gs, sym=sym)
    x = torch.randn(2, 3, 80, requires_grad=True)
    bias = torch.randn(24)
    torch.library.opcheck(
        torch.ops.torchlite.qlinear.default, (x, qw.qdata, qw.scale, qw.zero, bias, bits, qw.group_size, 80)
    )
    torch.library.opcheck(
        torch.ops.torchlite.dequantize.default, (qw.qdata, qw.scale, qw.zero, bits, qw.group_size, 80, torch.float32)
    )
    granularity = "group" if gs else "channel"
    torch.library.opcheck(torch.ops.torchlite.quantize.default, (torch.randn(24, 80), bits, gs or 0, sym, granularity))


def test_qlinear_is_linear_of_dequantized_weight_and_differentiable():
    qw = _q()
    x = torch.randn(5, 80, requires_grad=True)
    bias = torch.randn(24, requires_grad=True)
    w = dequantize_weight(qw.qdata, qw.scale, qw.zero, 4, 16, 80)
    y = torch.ops.torchlite.qlinear(x, qw.qdata, qw.scale, qw.zero, bias, 4, 16, 80)
    torch.testing.assert_close(y, F.linear(x, w, bias))
    y.square().sum().backward()
    x2 = x.detach().requires_grad_()
    b2 = bias.detach().requires_grad_()
    F.linear(x2, w, b2).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(bias.grad, b2.grad)


def test_bf16_input_gives_bf16_output():
    qw = _q()
    y = torch.ops.torchlite.qlinear(torch.randn(3, 80, dtype=torch.bfloat16), qw.qdata, qw.scale, None, None, 4, 16, 80)
    assert y.dtype == torch.bfloat16 and y.shape == (3, 24)


def test_wrong_input_width_is_a_clear_error():
    qw = _q()
    with pytest.raises(TorchliteError, match="in_features=80"):
        torch.ops.torchlite.qlinear(torch.randn(3, 81), qw.qdata, qw.scale, None, None, 4, 16, 80)


def test_metadata_that_disagrees_with_storage_is_refused():
    qw = _q(bits=8, gs=None)
    with pytest.raises(TorchliteError, match="storage and metadata disagree"):
        torch.ops.torchlite.qlinear(torch.randn(3, 80), qw.qdata, qw.scale, None, None, 4, 0, 80)
