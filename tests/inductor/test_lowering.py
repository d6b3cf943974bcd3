"""The Inductor lowerings against their eager reference (the custom op itself)."""
import re

import pytest
import torch
from torch._inductor.utils import run_and_get_code

import torchlite  # noqa: F401  (registers ops and lowerings)
from torchlite.numerics.linear import quantize_weight

CASES = [
    # bits, group, symmetric, granularity, n_out, k_in, batch shape
    (8, None, True, "channel", 96, 128, (1,)),
    (8, None, False, "channel", 33, 70, (2, 3)),
    (8, 32, True, "group", 64, 100, (1, 1)),
    (8, None, True, "tensor", 17, 64, (5,)),
    (4, 128, True, "group", 80, 576, (1,)),  # K not a multiple of the group: padded
    (4, 32, False, "group", 40, 96, (2, 1, 3)),
    (4, None, True, "channel", 31, 130, (1,)),
    (3, 16, True, "group", 24, 48, (4,)),
    (4, 64, True, "group", 48, 256, (40,)),  # prefill-shaped: dequantize + GEMM path
]


def _fn(qw, bias):
    def f(x):
        return torch.ops.torchlite.qlinear(x, qw.qdata, qw.scale, qw.zero, bias, qw.bits, qw.group_size, qw.in_features)
    return f


@pytest.mark.parametrize("bits, gs, sym, gran, n, k, batch", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_matches_eager(bits, gs, sym, gran, n, k, batch, dtype):
    qw = quantize_weight(torch.randn(n, k), bits, gs, sym, gran)
    f = _fn(qw, torch.randn(n))
    x = torch.randn(*batch, k).to(dtype)
    out = torch.compile(f, fullgraph=True)(x)
    ref = f(x)
    assert out.shape == ref.shape == (*batch, n) and out.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol * ref.float().abs().max().item())


@pytest.mark.parametrize("bits, gs", [(8, None), (4, 128)])
def test_decode_kernel_is_fused_and_reads_packed_weights(bits, gs):
    n, k = 256, 512
    qw = quantize_weight(torch.randn(n, k), bits, gs, True, "group" if gs else "channel")
    f = _fn(qw, None)
    _, (code,) = run_and_get_code(torch.compile(f), torch.randn(1, k))
    assert "torch.ops.torchlite" not in code, "the op must be lowered, not called as a fallback"
    assert "extern_kernels" not in code.split("def call")[1], "no GEMM/extern call on the decode path"
    assert re.search(r"const u?int8_t\* (in_ptr|codes)", code), "the kernel reads 8-bit storage"
    # no buffer as large as a dequantized weight is allocated
    sizes = [int(a) * int(b) for a, b in re.findall(r"empty_strided_cpu\(\((\d+), (\d+)\)", code)]
    assert all(s < n * k for s in sizes)
