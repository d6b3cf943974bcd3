"""The hand-written decode kernel (torchlite/inductor/gemv.py, csrc/gemv.cpp) against the eager ops, on
the selected kernel tier for every case and on every tier this CPU runs for each scheme."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._inductor.utils import run_and_get_code

import torchlite  # noqa: F401  (registers ops and lowerings)
from torchlite.inductor import tiers
from torchlite.inductor.gemv import byte_table
from torchlite.numerics.linear import quantize_weight
from torchlite.numerics.log import code_values, quantize_log
from parts_bound import parts_error_bound, parts_for

needs_kernels = pytest.mark.skipif(tiers.selected() is None, reason=f"{tiers.ENV}=none: the generated reduction is used")


def _linear(qw, bias=None):
    return lambda x: torch.ops.torchlite.qlinear(x, qw.qdata, qw.scale, qw.zero, bias, qw.bits, qw.group_size, qw.in_features)


def _log(qw, bias=None):
    return lambda x: torch.ops.torchlite.qlinear_log(x, qw.qdata, qw.scale, bias, qw.bits, qw.group_size, qw.in_features)


def _compiled_and_code(f, x):
    out, (code,) = run_and_get_code(torch.compile(f, fullgraph=True), x)
    return out, code


def _close(out, ref, bound):
    assert out.shape == ref.shape
    excess = ((out - ref).abs() - bound).max().item()
    assert excess <= 0, f"kernel output off the eager op's by {excess:.3g} more than its activation parts allow"


CASES = [
    # name, quantized weight, n_out, k_in
    ("int8 symmetric per channel", lambda w: quantize_weight(w, 8, None, True, "channel")),
    ("int8 asymmetric per channel", lambda w: quantize_weight(w, 8, None, False, "channel")),
    ("int8 per tensor", lambda w: quantize_weight(w, 8, None, True, "tensor")),
    ("int8 g64", lambda w: quantize_weight(w, 8, 64, True, "group")),
    ("int4 g128", lambda w: quantize_weight(w, 4, 128, True, "group")),
    ("int4 asymmetric g64", lambda w: quantize_weight(w, 4, 64, False, "group")),
    ("int4 per channel", lambda w: quantize_weight(w, 4, None, True, "channel")),
    ("int4 g32", lambda w: quantize_weight(w, 4, 32, True, "group")),  # two scale groups per 64-weight step
    ("int4 asymmetric g32", lambda w: quantize_weight(w, 4, 32, False, "group")),
    ("int8 g32", lambda w: quantize_weight(w, 8, 32, True, "group")),
    ("int2 g128", lambda w: quantize_weight(w, 2, 128, False, "group")),
    ("log4 g128", lambda w: quantize_log(w, 4, 128, "group")),
    ("log3 per channel", lambda w: quantize_log(w, 3, None, "channel")),
]


@needs_kernels
@pytest.mark.parametrize("name, make", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("k", [576, 300])  # 576: an odd number of 64-weight steps; 300: padded
@pytest.mark.parametrize("rows", [1, 3])
def test_kernel_matches_eager(name, make, k, rows):
    qw = make(torch.randn(40, k))
    f = (_log if name.startswith("log") else _linear)(qw, torch.randn(40))
    x = torch.randn(rows, k)
    out, code = _compiled_and_code(f, x)
    assert "cpp_torchlite_gemv" in code, "the decode call must run the hand-written kernel"
    _close(out, f(x), parts_error_bound(qw.dequantize(), x, parts_for(qw.bits)))


@pytest.mark.parametrize("group", [None, 32])
def test_log_codes_wider_than_a_nibble_keep_the_generated_reduction(group):
    qw = quantize_log(torch.randn(24, 256), 6, group, "group" if group else "channel")
    f = _log(qw)
    x = torch.randn(1, 256)
    out, code = _compiled_and_code(f, x)
    assert "cpp_torchlite_gemv" not in code
    torch.testing.assert_close(out, f(x), rtol=1e-4, atol=1e-4 * f(x).abs().max().item())


@pytest.mark.parametrize("name, make", CASES, ids=[c[0] for c in CASES])
def test_every_tier_matches_eager(kernel_tier, name, make):
    """Each scheme on each tier (forced): 2 activation rows (a pass of two), K padded, groups of one
    and of two steps, per-channel scales."""
    qw = make(torch.randn(24, 300))
    f = (_log if name.startswith("log") else _linear)(qw, torch.randn(24))
    x = torch.randn(2, 300)
    out, code = _compiled_and_code(f, x)
    assert "cpp_torchlite_gemv" in code and f"#define TIER {kernel_tier.number}" in code
    _close(out, f(x), parts_error_bound(qw.dequantize(), x, parts_for(qw.bits)))


@needs_kernels
def test_outlier_activations_keep_precision():
    """LLM activations have a few channels 100x the rest; the second int8 part keeps the error small
    (one part, as in W8A8, would leave ~1e-2 of Σ|w||x|)."""
    qw = quantize_weight(torch.randn(64, 1024), 4, 128, True, "group")
    f = _linear(qw)
    x = torch.randn(1, 1024)
    x[0, :4] *= 200.0
    out, _ = _compiled_and_code(f, x)
    ref = f(x)
    _close(out, ref, parts_error_bound(qw.dequantize(), x, 2))
    scale = (qw.dequantize().abs() @ x.abs().T).T  # Σ|w||x| per output
    assert ((out - ref).abs() <= 1e-3 * scale).all()


@needs_kernels
@settings(max_examples=6, deadline=None)
@given(
    st.integers(1, 33), st.integers(1, 200), st.integers(1, 4), st.sampled_from([2, 3, 4, 8]), st.booleans(),
    st.sampled_from([None, 32, 64, 128]), st.integers(0, 2**16),
)
def test_kernel_property(n, k, rows, bits, symmetric, group, seed):
    g = torch.Generator().manual_seed(seed)
    qw = quantize_weight(torch.randn(n, k, generator=g), bits, group, symmetric, "group" if group else "channel")
    f = _linear(qw)
    x = torch.randn(rows, k, generator=g)
    out, code = _compiled_and_code(f, x)
    # groups of 32 pad K to 32 only: the kernel takes whole 64-weight steps, else the generated reduction runs
    assert ("cpp_torchlite_gemv" in code) == (group != 32 or -(-k // 32) % 2 == 0)
    _close(out, f(x), parts_error_bound(qw.dequantize(), x, parts_for(bits)))


def test_byte_table_represents_every_code_value():
    for values in (torch.arange(16.0) - 8, torch.arange(16.0), code_values(4), code_values(3)):
        u, offset, value_scale = byte_table(values)
        assert all(0 <= b <= 255 for b in u)
        assert torch.equal((torch.tensor(u[: len(values)], dtype=torch.float32) - offset) * value_scale, values)
    with pytest.raises(ValueError, match="one byte"):
        byte_table(torch.tensor([0.0, 1.0, 2.0**-9]))
    with pytest.raises(ValueError, match="power of two"):
        byte_table(torch.tensor([0.0, 0.1]))



@needs_kernels
def test_kernel_applies_the_channel_scale_so_a_chain_needs_no_epilogue_loop():
    """y = W2 (W1 x) at batch 1 with per-channel int8 weights and no bias (a low-rank pair quantized):
    two kernel calls and no generated loop between or after them."""
    torch.manual_seed(0)
    q1 = quantize_weight(torch.randn(256, 576), 8, None, True, "channel")
    q2 = quantize_weight(torch.randn(1536, 256), 8, None, False, "channel")
    f1, f2 = _linear(q1), _linear(q2)
    x = torch.randn(1, 576)
    out, code = _compiled_and_code(lambda x: f2(f1(x)), x)
    y1 = f1(x)  # the first call's error reaches the output through |Ŵ2|; the second adds its own
    w2 = q2.dequantize()
    _close(out, f2(y1), parts_error_bound(q1.dequantize(), x, 3) @ w2.abs().T + parts_error_bound(w2, y1, 3))
    call = code.split("def call")[1]
    assert call.count("cpp_torchlite_gemv") == 2 and "cpp_fused" not in call
