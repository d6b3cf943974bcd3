import pytest
import torch

from torchlite.numerics.linear import (
    pack_nibbles, padded_in_features, quantize_weight, unpack_nibbles,
)
from torchlite.errors import TorchliteError

CASES = [
    (8, None, True, "channel"), (8, None, False, "channel"), (8, None, True, "tensor"),
    (8, 32, True, "group"), (8, 16, False, "group"), (4, 32, True, "group"), (4, 64, False, "group"),
    (4, None, True, "channel"), (4, None, False, "tensor"), (3, 16, True, "group"), (2, None, False, "channel"),
]


def _roundtrip(w, bits, gs, sym, gran):
    qw = quantize_weight(w, bits, gs, sym, gran)
    return qw, qw.dequantize()


@pytest.mark.parametrize("bits, gs, sym, gran", CASES)
def test_error_at_most_half_a_step(bits, gs, sym, gran):
    w = torch.randn(37, 83) * 3
    qw, wd = _roundtrip(w, bits, gs, sym, gran)
    reps = padded_in_features(83, bits, qw.group_size) // qw.scale.shape[1]
    step = qw.scale.repeat_interleave(reps, 1)[:, :83].expand_as(w)
    assert ((w - wd).abs() <= step / 2 + 1e-6 * w.abs().max()).all()


@pytest.mark.parametrize("bits, gs, sym, gran", CASES)
def test_requantizing_is_exact(bits, gs, sym, gran):
    w = torch.randn(16, 70)
    qw, wd = _roundtrip(w, bits, gs, sym, gran)
    qw2, wd2 = _roundtrip(wd, bits, gs, sym, gran)
    torch.testing.assert_close(wd2, wd, rtol=0, atol=1e-6 * wd.abs().max().item())


def test_symmetric_formula_matches_the_spec():
    w = torch.tensor([[0.5, -1.27, 0.01, 1.0]])
    qw = quantize_weight(w, 8, None, True, "channel")
    delta = 1.27 / 127
    assert qw.scale.item() == pytest.approx(delta)
    assert qw.qdata[:, :4].tolist() == [[round(0.5 / delta), -127, round(0.01 / delta), round(1.0 / delta)]]
    assert not qw.qdata[:, 4:].any(), "K is zero-padded to a multiple of 64"


def test_storage_sizes():
    w = torch.randn(64, 256)
    assert quantize_weight(w, 8, None, True, "channel").qdata.dtype == torch.int8
    q4 = quantize_weight(w, 4, 128, True, "group")
    assert q4.qdata.shape == (64, 128) and q4.qdata.dtype == torch.uint8 and q4.scale.shape == (64, 2)
    assert quantize_weight(w, 8, None, False, "channel").zero.dtype == torch.uint8


def test_nibble_layout_puts_half_blocks_in_low_and_high_nibbles():
    v = torch.arange(16, dtype=torch.uint8).repeat(2, 2)  # [2, 32]
    packed = pack_nibbles(v, 16)
    assert packed[0, 0].item() == (0 | (8 << 4))
    assert torch.equal(unpack_nibbles(packed, 16), v)


def test_zero_weights_and_padding():
    w = torch.zeros(4, 20)
    for case in CASES:
        assert torch.equal(_roundtrip(w, *case)[1], w)


def test_bad_shape():
    with pytest.raises(TorchliteError, match="2-D"):
        quantize_weight(torch.randn(4), 8, None, True, "channel")
