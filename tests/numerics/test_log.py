import math

import pytest
import torch

from torchlite import TorchliteError
from torchlite.numerics.log import code_values, levels, quantize_log

BOUND = math.sqrt(2) - 1  # |Ŵ - w| <= (√2 - 1)|w| inside the levels: the threshold is the geometric mean


def _representable(n, k, bits, rows_share_scale=False):
    """Weights sign · s_row · 2^-e (every e of the grid), with the row's maximum s_row present and exact zeros."""
    g = torch.Generator().manual_seed(0)
    e = torch.randint(0, levels(bits), (n, k), generator=g)
    sign = torch.where(torch.rand(n, k, generator=g) < 0.5, -1.0, 1.0)
    scale = (torch.rand(1 if rows_share_scale else n, 1, generator=g) * 3 + 0.1).expand(n, 1)
    w = sign * scale * torch.ldexp(torch.ones(n, k), -e)
    w[:, 0] = scale[:, 0]
    w[:, 1] = 0.0
    return w


def test_code_values_are_sign_and_power_of_two():
    assert code_values(3).tolist() == [0, 1, 0.5, 0.25, 0, -1, -0.5, -0.25]
    assert code_values(8)[127].item() == 2.0**-126 and code_values(8)[128 + 1].item() == -1.0


@pytest.mark.parametrize("bits", [3, 4, 5, 8])
@pytest.mark.parametrize("gs, gran", [(None, "channel"), (32, "group"), (None, "tensor")])
def test_representable_weights_and_zeros_are_exact(bits, gs, gran):
    w = _representable(9, 70, bits, rows_share_scale=gran == "tensor")
    if gran == "group":  # every group holds its maximum
        w[:, 32], w[:, 64] = w[:, 0], w[:, 0]
    assert torch.equal(quantize_log(w, bits, gs, gran).dequantize(), w)


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_relative_error_bound_inside_the_levels_and_nearest_in_the_tails(bits):
    w = torch.randn(16, 130) * torch.logspace(-3, 1, 16).unsqueeze(1)
    w[0, :8] = 0.0
    qw = quantize_log(w, bits, 64, "group")
    dq = qw.dequantize()
    scale = qw.scale.repeat_interleave(64, 1)[:, :130]
    smallest = scale * 2.0 ** -(levels(bits) - 1)
    inside = w.abs() >= smallest
    assert inside.any() and (~inside).any()
    err = (dq - w).abs()
    assert (err[inside] <= BOUND * w.abs()[inside] * (1 + 1e-6)).all()
    tail = ~inside  # 0 or the smallest level, whichever is nearer
    assert (dq[tail].abs() == 0).logical_or(dq[tail].abs() == smallest[tail]).all()
    nearer = torch.minimum(w.abs(), smallest - w.abs())[tail]
    assert (err[tail] <= nearer * (1 + 1e-6)).all()
    assert (dq[0, :8] == 0).all()


def test_rounding_is_in_the_log_domain():
    w = torch.tensor([[1.0, 0.70, 0.72, 0.36, 0.35, 0.0443, 0.0441, 0.0]])  # 4 bits: levels 1 .. 1/64
    expected = [1.0, 0.5, 1.0, 0.5, 0.25, 0.0625, 0.03125, 0.0]
    assert quantize_log(w, 4, None, "channel").dequantize()[0].tolist() == expected
    # below the smallest level 1/64: zero or 1/64, whichever is nearer
    tail = torch.tensor([[1.0, 0.0079, 0.0078, 0.012]])
    assert quantize_log(tail, 4, None, "channel").dequantize()[0].tolist() == [1.0, 2**-6, 0.0, 2**-6]


def test_log_offset_shifts_the_grid_and_saturates_the_top():
    w = torch.tensor([[1.0, 0.8, 0.3, -0.5]])
    qw = quantize_log(w, 4, None, "channel", log_offset=0.5)
    assert qw.scale.item() == pytest.approx(2**-0.5)
    levels_ = [2**-0.5 * 2.0**-e for e in range(7)]
    for v in qw.dequantize()[0].abs().tolist():
        assert min(abs(v - level) for level in levels_) < 1e-7
    assert qw.dequantize()[0, 0].item() == pytest.approx(2**-0.5)  # saturated


def test_storage_is_packed_like_the_linear_scheme():
    w = torch.randn(8, 100)
    q4 = quantize_log(w, 4, None, "channel")
    assert q4.qdata.shape == (8, 64) and q4.qdata.dtype == torch.uint8 and q4.scale.shape == (8, 1)
    q6 = quantize_log(w, 6, 32, "group")
    assert q6.qdata.shape == (8, 128) and q6.scale.shape == (8, 4)
    assert q4.nbytes == 8 * 64 + 8 * 4


def test_bad_bits_and_shape():
    with pytest.raises(TorchliteError, match="3..8"):
        quantize_log(torch.randn(4, 4), 2, None, "channel")
    with pytest.raises(TorchliteError, match="2-D"):
        quantize_log(torch.randn(4), 4, None, "channel")
