"""Inductor lowering of `torchlite::linear` (float linears; `passes.route.route_float_linears` routes them here).

A batch-1 decode step reads every weight once, so it is bound by the bytes it reads; BLAS GEMV
(MKL through `aten.mm`) reaches well under the machine's read bandwidth at these shapes. Decode-shaped
calls therefore lower to the shared decode reduction (`decode.fused_sum`, the float weight read
through `_FloatWeight`): weight row outer, a K loop of 64-element steps whose inner loop is one
contiguous vector, float32 accumulation (K that is not a whole number of vectors, e.g. a pruned MLP
width or the second factor of a low-rank pair: that loop over the largest multiple of 64, plus one
vectorized loop with a tail for the rest). Larger (prefill-shaped or symbolic) calls are compute-bound
and use Inductor's GEMM, as without torchlite.
"""
from __future__ import annotations

import torch
from torch._inductor import ir
from torch._inductor.lowering import register_lowering, to_dtype
from torch._inductor.virtualized import ops

from ..ops import dense as _ops  # noqa: F401  (the op must exist before we register its lowering)
from .decode import VEC, WeightLoader, fused_sum, row_sums, weight_only_linear


class _FloatWeight(WeightLoader):
    """A float weight [N, K] as `fused_sum` reads it: its first `block` columns as one block, unpacked,
    stored as the weights themselves (no offset, no scale)."""

    packed = False

    def __init__(self, weight, block):
        self.w = weight.make_loader()
        self.block = block

    def load(self, n, k):
        return self.w([n, k])

    def centered(self, stored, n, g):
        return ops.to_dtype(stored, torch.float32)

    def scale(self, n, g):
        return ops.constant(1.0, torch.float32)


def _plain_sum(x2, weight, n_out, m_rows, start, stop):
    """acc[n, m] = sum over k in [start, stop) of x[m, k] * W[n, k], one reduction (vectorized, with
    a tail loop when the length is not a whole number of vectors)."""
    x, w, f32 = x2.make_loader(), weight.make_loader(), torch.float32

    def inner(index, rindex):
        (n, m), (j,) = index, rindex
        return ops.mul(ops.to_dtype(x([m, start + j]), f32), ops.to_dtype(w([n, start + j]), f32))

    return row_sums(x2, inner, n_out, m_rows, [stop - start])


def _unrolled_length(k) -> int:
    """How much of K the unrolled reduction covers: all of it when K is a whole number of vectors,
    else the largest multiple of 4 vectors (a plain loop takes the rest; one plain loop over all of K
    is bound by its accumulator's latency); 0 for a symbolic K (the plain loop only)."""
    if not getattr(k, "is_number", True):
        return 0
    k = int(k)
    return k if k % VEC == 0 else k // (4 * VEC) * (4 * VEC)


@register_lowering(torch.ops.torchlite.linear.default, type_promotion_kind=None)
def _linear(x, weight, bias):
    n_out, k = weight.get_size()
    main = _unrolled_length(k)

    def dense(dtype):
        return weight if weight.get_dtype() == dtype else to_dtype(weight, dtype)

    def sums(x2, m_rows):
        if main == 0:
            return _plain_sum(x2, weight, n_out, m_rows, 0, k)
        acc = fused_sum(x2, _FloatWeight(weight, main), n_out, m_rows, main, grouped=False)
        if main == k:
            return acc
        head, tail = acc.make_loader(), _plain_sum(x2, weight, n_out, m_rows, main, k).make_loader()
        return ir.Pointwise.create(
            device=x2.get_device(), dtype=torch.float32, ranges=[n_out, m_rows],
            inner_fn=lambda idx: ops.add(head(idx), tail(idx)),
        )

    return weight_only_linear(x, bias, n_out, dense, sums)
