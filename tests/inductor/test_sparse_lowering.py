"""The N:M sparse linear lowering against its eager reference (the custom op itself)."""
import re

import pytest
import torch
import torch.nn.functional as F
from torch._inductor.utils import run_and_get_code

import torchlite  # noqa: F401  (registers ops and lowerings)
from torchlite import TorchliteError
from torchlite.inductor import tiers
from torchlite.numerics import nm_mask, pack_nm, unpack_nm

CASES = [
    # n, m, in_features, int8 values, bias, x dtype, x batch shape
    (1, 4, 256, False, True, torch.float32, (3,)),
    (2, 4, 256, False, False, torch.bfloat16, (1,)),
    (2, 4, 256, True, True, torch.float32, (1, 1)),
    (2, 4, 40, True, False, torch.bfloat16, (5,)),  # 10 groups: not a multiple of the 16-group block
    (2, 8, 512, False, True, torch.bfloat16, (2, 3)),
    (2, 8, 512, True, False, torch.float32, (1,)),
    (4, 8, 512, False, False, torch.float32, (7,)),
    (4, 8, 512, True, True, torch.bfloat16, (1,)),
    (2, 4, 576, True, False, torch.float32, (1,)),  # 144 groups: the VNNI kernel's half-step tail
    (2, 4, 256, True, False, torch.float32, (3,)),
    (2, 4, 256, True, True, torch.float32, (2, 20)),  # prefill-shaped: dense temporary + GEMM
    (2, 4, 256, False, False, torch.bfloat16, (40,)),
]


def _packed(n, m, k, int8, out=48):
    w = torch.randn(out, k)
    w = w * nm_mask(w.abs(), n, m) * (torch.rand(out, k) > 0.1)  # some groups sparser than n
    return pack_nm(w, n, m, int8=int8)


def _fn(p, bias):
    def f(x):
        return torch.ops.torchlite.nm_linear(x, p.values, p.indices, p.scale, bias, p.n, p.m, p.in_features)
    return f


@pytest.mark.parametrize("n, m, k, int8, with_bias, dtype, batch", CASES)
def test_compiled_matches_eager(n, m, k, int8, with_bias, dtype, batch):
    p = _packed(n, m, k, int8)
    f = _fn(p, torch.randn(48) if with_bias else None)
    x = torch.randn(*batch, k).to(dtype)
    out, ref = torch.compile(f, fullgraph=True)(x), f(x)
    assert out.shape == ref.shape == (*batch, 48) and out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol * ref.float().abs().max().item())


@pytest.mark.parametrize("rows, k", [(1, 512), (3, 192)])  # 192: the last step holds one block of 16 groups
def test_nm_kernel_matches_eager_on_every_tier(kernel_tier, rows, k):
    p = _packed(2, 4, k, True, 40)
    f = _fn(p, torch.randn(40))
    x = torch.randn(rows, k)
    out, (code,) = run_and_get_code(torch.compile(f, fullgraph=True), x)
    assert "cpp_torchlite_nm_gemv" in code and f"#define TIER {kernel_tier.number}" in code
    ref = f(x)
    # three int8 activation parts (~22 bits): float32-like
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("int8", [False, True])
def test_decode_kernel_reads_only_the_compressed_weight(int8):
    out, k = 256, 512
    p = _packed(2, 4, k, int8, out)
    _, (code,) = run_and_get_code(torch.compile(_fn(p, None)), torch.randn(1, k))
    if int8 and tiers.selected():
        assert "cpp_torchlite_nm_gemv" in code, "2:4 int8 decode calls with float32 activations run the hand-written kernel"
        assert "torch.ops.torchlite" not in code and "extern_kernels" not in code.split("def call")[1]
        return
    assert "torchlite" not in code.replace("cpp_fused_nm_linear", ""), "the op must be lowered, not a fallback"
    assert "extern_kernels" not in code.split("def call")[1], "no GEMM/extern call on the decode path"
    assert "const uint8_t* in_ptr" in code and "Vectorized<uint8_t>::loadu" in code, "vector loads of the offsets"
    assert not re.search(r"tmpbuf\[\w+\] = in_ptr", code), "values and offsets load as contiguous vectors, not gathers"
    assert "bit_cast" not in code, "no bitcasts (Inductor copies them lane by lane through memory)"
    sizes = [int(a) * int(b) for a, b in re.findall(r"empty_strided_cpu\(\((\d+), (\d+)\)", code)]
    sizes += [int(a) * int(b) * int(c) for a, b, c in re.findall(r"empty_strided_cpu\(\((\d+), (\d+), (\d+)\)", code)]
    assert sizes and all(s < out * k for s in sizes), "no buffer as large as a dense weight"


def test_eager_op_is_linear_of_unpacked_weight_and_differentiable():
    p = _packed(2, 4, 64, False, 24)
    w = unpack_nm(p)
    x = torch.randn(5, 64, requires_grad=True)
    bias = torch.randn(24, requires_grad=True)
    y = _fn(p, bias)(x)
    torch.testing.assert_close(y, F.linear(x, w, bias))
    y.square().sum().backward()
    x2, b2 = x.detach().requires_grad_(), bias.detach().requires_grad_()
    F.linear(x2, w, b2).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(bias.grad, b2.grad)


@pytest.mark.parametrize("int8", [False, True])
def test_opcheck(int8):
    p = _packed(2, 8, 64, int8, 24)
    x = torch.randn(2, 3, 64, requires_grad=True)
    args = (x, p.values, p.indices, p.scale, torch.randn(24), 2, 8, 64)
    torch.library.opcheck(torch.ops.torchlite.nm_linear.default, args)


def test_storage_that_disagrees_with_metadata_is_refused():
    p = _packed(2, 4, 64, True, 24)
    x = torch.randn(3, 64)
    op = torch.ops.torchlite.nm_linear
    with pytest.raises(TorchliteError, match="in_features=64"):
        op(torch.randn(3, 60), p.values, p.indices, p.scale, None, 2, 4, 64)
    with pytest.raises(TorchliteError, match="storage and metadata disagree"):
        op(x, p.values, p.indices, p.scale, None, 1, 4, 64)
    with pytest.raises(TorchliteError, match="float32 scale"):
        op(x, p.values, p.indices, None, None, 2, 4, 64)
    with pytest.raises(TorchliteError, match="take no scale"):
        op(x, p.values.float(), p.indices, p.scale, None, 2, 4, 64)
    with pytest.raises(TorchliteError, match="expected uint8"):
        op(x, p.values, p.indices.int(), p.scale, None, 2, 4, 64)
    with pytest.raises(TorchliteError, match="bias"):
        op(x, p.values, p.indices, p.scale, torch.randn(23), 2, 4, 64)
    offsets_too_large = torch.full((24, 8), 0xFF, dtype=torch.uint8)  # 2:8 offsets are at most 6, not 7
    with pytest.raises(TorchliteError, match="corrupt"):
        op(x, torch.zeros(24, 16), offsets_too_large, None, None, 2, 8, 64)
