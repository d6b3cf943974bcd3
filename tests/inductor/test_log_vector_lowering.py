"""The log and vector lowerings against their eager reference (the custom ops themselves)."""
import re

import pytest
import torch
from torch._inductor.utils import run_and_get_code

import torchlite  # noqa: F401  (registers ops and lowerings)
from torchlite.inductor import tiers
from torchlite.inductor.vector import TILE_KERNEL_FLAGS
from torchlite.numerics.log import quantize_log
from torchlite.numerics.vector import quantize_vector
from parts_bound import lut_error_bound, parts_error_bound

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
LOG_CASES = [
    # bits, group, granularity, n_out, k_in, batch shape, x dtype
    (4, None, "channel", 96, 128, (1,), F32),
    (3, 32, "group", 40, 100, (2, 3), BF16),  # K not a multiple of the group: padded
    (8, None, "tensor", 17, 70, (5,), F16),
    (5, 64, "group", 48, 256, (40,), BF16),  # prefill-shaped: dequantize + GEMM path
]
VECTOR_CASES = [
    # vector_dim, codebook_size, group (rows), n_out, k_in, batch shape, x dtype
    (4, 256, None, 96, 128, (1,), BF16),
    (2, 16, 32, 40, 98, (2, 3), F32),  # packed codes, odd number of sub-vectors per row
    (3, 7, None, 17, 69, (5,), F16),
    (8, 64, 16, 48, 256, (40,), F32),  # prefill-shaped
]


def _log_fn(qw, bias):
    def f(x):
        return torch.ops.torchlite.qlinear_log(x, qw.qdata, qw.scale, bias, qw.bits, qw.group_size, qw.in_features)
    return f


def _vector_fn(qw, bias):
    def f(x):
        return torch.ops.torchlite.qlinear_vector(x, qw.qdata, qw.scale, qw.codebook, bias, qw.group_size, qw.in_features)
    return f


def _check(f, x):
    out = torch.compile(f, fullgraph=True)(x)
    ref = f(x)
    assert out.shape == ref.shape and out.dtype == x.dtype
    tol = 1e-4 if x.dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol * ref.float().abs().max().item())


@pytest.mark.parametrize("bits, gs, gran, n, k, batch, dtype", LOG_CASES)
def test_log_compiled_matches_eager(bits, gs, gran, n, k, batch, dtype):
    w = torch.randn(n, k)
    w[0, :7] = 0.0
    qw = quantize_log(w, bits, gs, gran)
    _check(_log_fn(qw, torch.randn(n)), torch.randn(*batch, k).to(dtype))


@pytest.mark.parametrize("d, size, gs, n, k, batch, dtype", VECTOR_CASES)
def test_vector_compiled_matches_eager(d, size, gs, n, k, batch, dtype):
    qw = quantize_vector(torch.randn(n, k), d, size, gs)
    _check(_vector_fn(qw, torch.randn(n)), torch.randn(*batch, k).to(dtype))


def test_dequantize_lowerings_are_bit_exact():
    lq = quantize_log(torch.randn(24, 80), 4, 16, "group")
    vq = quantize_vector(torch.randn(24, 80), 4, 16, 16)
    ops = torch.ops.torchlite
    for f in (
        lambda: ops.dequantize_log(lq.qdata, lq.scale, 4, 16, 80, torch.float32),
        lambda: ops.dequantize_vector(vq.qdata, vq.scale, vq.codebook, 16, 80, torch.float32),
    ):
        torch._dynamo.reset()
        assert torch.equal(torch.compile(f)(), f())


@pytest.mark.parametrize("scheme", ["log4", "log8", "vector256", "vector16"])
def test_decode_kernel_is_fused_and_reads_codes(scheme):
    n, k = 256, 512
    w = torch.randn(n, k)
    qw = {
        "log4": lambda: quantize_log(w, 4, 128, "group"), "log8": lambda: quantize_log(w, 8, None, "channel"),
        "vector256": lambda: quantize_vector(w, 4, 256), "vector16": lambda: quantize_vector(w, 2, 16, 64),
    }[scheme]()
    f = (_log_fn if scheme.startswith("log") else _vector_fn)(qw, None)
    _, (code,) = run_and_get_code(torch.compile(f), torch.randn(1, k))
    assert "torch.ops.torchlite" not in code, "the op must be lowered, not called as a fallback"
    assert "extern_kernels" not in code.split("def call")[1], "no GEMM/extern call on the decode path"
    assert re.search(r"const uint8_t\* (in_ptr|codes)", code), "the kernel reads 8-bit storage"
    sizes = [int(a) * int(b) for a, b in re.findall(r"empty_strided_cpu\(\((\d+), (\d+)\)", code)]
    assert all(s < n * k for s in sizes), "no buffer as large as a dequantized weight"


@pytest.mark.parametrize("kind", ["log", "vector"])
def test_opcheck(kind):
    """Schema, fake (meta) implementation and autograd registration agree with the eager ops."""
    w, x, bias = torch.randn(24, 80), torch.randn(2, 3, 80, requires_grad=True), torch.randn(24)
    ops = torch.ops.torchlite
    if kind == "log":
        q = quantize_log(w, 4, 16, "group")
        torch.library.opcheck(ops.qlinear_log.default, (x, q.qdata, q.scale, bias, 4, 16, 80))
        torch.library.opcheck(ops.dequantize_log.default, (q.qdata, q.scale, 4, 16, 80, torch.float32))
    else:
        q = quantize_vector(w, 4, 16, 16)
        torch.library.opcheck(ops.qlinear_vector.default, (x, q.qdata, q.scale, q.codebook, bias, 16, 80))
        torch.library.opcheck(ops.dequantize_vector.default, (q.qdata, q.scale, q.codebook, 16, 80, torch.float32))


def test_gradients_reach_the_input_and_bias():
    q = quantize_vector(torch.randn(24, 80), 4, 32)
    x = torch.randn(5, 80, requires_grad=True)
    bias = torch.randn(24, requires_grad=True)
    torch.ops.torchlite.qlinear_vector(x, q.qdata, q.scale, q.codebook, bias, 0, 80).square().sum().backward()
    x2, b2 = x.detach().requires_grad_(), bias.detach().requires_grad_()
    torch.nn.functional.linear(x2, q.dequantize(), b2).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(bias.grad, b2.grad)


def test_storage_that_disagrees_with_metadata_is_refused():
    q = quantize_log(torch.randn(8, 64), 4, None, "channel")
    with pytest.raises(torchlite.TorchliteError, match="storage and metadata disagree"):
        torch.ops.torchlite.qlinear_log(torch.randn(2, 64), q.qdata, q.scale, None, 6, 0, 64)
    v = quantize_vector(torch.randn(8, 64), 4, 16)
    with pytest.raises(torchlite.TorchliteError, match="storage and metadata disagree"):
        torch.ops.torchlite.qlinear_vector(torch.randn(2, 64), v.qdata, v.scale, v.codebook, None, 4, 64)


NIBBLE_CASES = [
    # vector_dim, codebook_size, group (rows), n_out, k_in, activation rows
    (2, 16, None, 33, 98, 3),  # odd number of sub-vectors per row
    (2, 16, None, 20, 520, 4),  # several 128-code steps
    (8, 7, None, 17, 40, 1),  # a codebook size that is not a power of two
    (4, 16, 16, 40, 128, 2),  # codebook groups, the last one smaller
]
TILE_CASES = [
    # vector_dim, codebook_size, group (rows), n_out, k_in, activation rows
    (4, 256, None, 40, 128, 1),  # one partial tile
    (4, 256, None, 300, 1200, 2),  # five tiles (one block of four and one), 300 positions (two 16-bit chunks)
    (2, 128, None, 64, 300, 1),  # 128 centroids: one two-table lookup
    (3, 64, 64, 150, 69, 2),  # codebook groups of one tile, the last one smaller
    (8, 20, None, 70, 40, 3),  # a codebook size that is not a power of two
]
needs_nibble_kernel = pytest.mark.skipif(tiers.selected() is None, reason=f"{tiers.ENV}=none: no hand-written kernels")
needs_tile_kernel = pytest.mark.skipif(
    tiers.name() != "avx512_vnni" or not TILE_KERNEL_FLAGS <= tiers.cpu_flags(),
    reason="the tiled VQ kernel needs the avx512_vnni tier and AVX512-VBMI",
)


def _compiled(qw, rows, bias=True):
    f = _vector_fn(qw, torch.randn(qw.out_features) if bias else None)
    x = torch.randn(rows, qw.in_features)
    out, (code,) = run_and_get_code(torch.compile(f, fullgraph=True), x)
    return out, f(x), x, code


@needs_nibble_kernel
@pytest.mark.parametrize("d, size, gs, n, k, rows", NIBBLE_CASES)
def test_vector_nibble_kernel_matches_eager(d, size, gs, n, k, rows):
    qw = quantize_vector(torch.randn(n, k) * torch.logspace(-1, 1, n).unsqueeze(1), d, size, gs)
    out, ref, x, code = _compiled(qw, rows)
    assert "cpp_torchlite_vq_gemv" in code, "decode calls with float32 activations run the VQ kernel"
    assert ((out - ref).abs() <= parts_error_bound(qw.dequantize(), x, 2)).all()


@pytest.mark.parametrize("d, size, gs, n, k, rows", [NIBBLE_CASES[0], NIBBLE_CASES[-1]])
def test_vector_nibble_kernel_matches_eager_on_every_tier(kernel_tier, d, size, gs, n, k, rows):
    qw = quantize_vector(torch.randn(n, k) * torch.logspace(-1, 1, n).unsqueeze(1), d, size, gs)
    out, ref, x, code = _compiled(qw, rows)
    assert "cpp_torchlite_vq_gemv" in code and f"#define TIER {kernel_tier.number}" in code
    assert ((out - ref).abs() <= parts_error_bound(qw.dequantize(), x, 2)).all()


def test_byte_codes_leave_other_tiers_to_the_generated_reduction(kernel_tier):
    qw = quantize_vector(torch.randn(40, 128), 4, 256)
    out, ref, _, code = _compiled(qw, 1)
    assert ("cpp_torchlite_vq_lut" in code) == (kernel_tier.name == "avx512_vnni" and TILE_KERNEL_FLAGS <= tiers.cpu_flags())
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3 * ref.abs().max().item())


@needs_nibble_kernel
def test_vector_nibble_kernel_is_exact_for_codebooks_off_the_grid():
    """A codebook torchlite did not snap to the int8 grid takes the kernel's float loop, not a rounded table."""
    qw = quantize_vector(torch.randn(48, 256), 4, 16)
    qw.codebook = qw.codebook + 1e-3 * torch.randn(qw.codebook.shape)
    out, ref, _, code = _compiled(qw, 2)
    assert "cpp_torchlite_vq_gemv" in code
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@needs_tile_kernel
@pytest.mark.parametrize("d, size, gs, n, k, rows", TILE_CASES)
def test_vector_tile_kernel_matches_eager(d, size, gs, n, k, rows):
    qw = quantize_vector(torch.randn(n, k) * torch.logspace(-1, 1, n).unsqueeze(1), d, size, gs)
    qw.codebook = qw.codebook + 1e-3 * torch.randn(qw.codebook.shape)  # any codebook: no grid needed
    out, ref, x, code = _compiled(qw, rows)
    assert "cpp_torchlite_vq_lut" in code, "decode calls with float32 activations run the tiled VQ kernel"
    bound = lut_error_bound(qw, x)
    assert ((out - ref).abs() <= bound).all()
    assert bound.max() < 1e-3 * ref.abs().max(), "the tables keep ~15 bits"


def test_vector_tile_kernel_leaves_groups_that_split_a_tile_to_the_generated_reduction():
    qw = quantize_vector(torch.randn(96, 64), 4, 32, 48)
    out, ref, _, code = _compiled(qw, 1)
    assert "cpp_torchlite_vq_lut" not in code
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize(
    "size, d, gs", [pytest.param(16, 2, 64, marks=needs_nibble_kernel), pytest.param(256, 4, None, marks=needs_tile_kernel)]
)
def test_vector_kernels_apply_the_row_scales(size, d, gs):
    """A decode call without bias is the kernel call alone: no epilogue loop scales its output."""
    qw = quantize_vector(torch.randn(128, 256) * torch.logspace(-2, 2, 128).unsqueeze(1), d, size, gs)
    out, ref, x, code = _compiled(qw, 1, bias=False)
    assert re.findall(r"(cpp_\w+)\(", code.split("def call")[1]) == [f"cpp_torchlite_{'vq_gemv' if size <= 16 else 'vq_lut'}_0"]
    bound = parts_error_bound(qw.dequantize(), x, 2) if size <= 16 else lut_error_bound(qw, x)
    assert ((out - ref).abs() <= bound).all()
