"""Inductor lowering of `torchlite::linear`, and the graph rewrite that routes float linears to it.

A batch-1 decode step reads every weight once, so it is bound by the bytes it reads; BLAS GEMV
(MKL through `aten.mm`) reaches well under the machine's read bandwidth at these shapes. Decode-shaped
calls (at most FUSED_MAX_ROWS rows, known at compile time) therefore lower to the same reduction as
the quantized linears (`torchlite.inductor.quant`): weight row outer, a K loop of 64-element steps
whose inner loop is one contiguous vector, float32 accumulation (K that is not a whole number of
vectors, e.g. a pruned MLP width or the second factor of a low-rank pair: that loop over the largest
multiple of 64, plus one vectorized loop with a tail for the rest). Larger
(prefill-shaped or symbolic) calls are compute-bound and use Inductor's GEMM, as without torchlite.
"""
from __future__ import annotations

import torch
import torch.fx as fx
from torch._inductor import ir
from torch._inductor.lowering import register_lowering, to_dtype
from torch._inductor.virtualized import ops

from ..graph.linear import LINEAR_FUNCTIONS
from ..graph.attrs import clone, get_attr_value
from ..ops import dense as _ops  # noqa: F401  (the op must exist before we register its lowering)
from .quant import VEC, _fused_sum, row_sums, weight_only_linear


class _FloatWeight:
    """A float weight [N, K] seen through the loads `_fused_sum` makes (its first `block` columns as
    one block, unpacked)."""

    packed = False

    def __init__(self, weight, block):
        self.load = weight.make_loader()
        self.block = block

    def byte(self, n, k):
        return self.load([n, k])

    def _centered(self, stored, n, g):
        return ops.to_dtype(stored, torch.float32)


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

    def fused_sum(x2, m_rows):
        if main == 0:
            return _plain_sum(x2, weight, n_out, m_rows, 0, k)
        acc = _fused_sum(x2, _FloatWeight(weight, main), n_out, m_rows, main, grouped=False)
        if main == k:
            return acc
        head, tail = acc.make_loader(), _plain_sum(x2, weight, n_out, m_rows, main, k).make_loader()
        return ir.Pointwise.create(
            device=x2.get_device(), dtype=torch.float32, ranges=[n_out, m_rows],
            inner_fn=lambda idx: ops.add(head(idx), tail(idx)),
        )

    return weight_only_linear(x, bias, n_out, dense, fused_sum)


def _weight(gm: fx.GraphModule, node) -> torch.Tensor | None:
    if not isinstance(node, fx.Node):
        return None
    if node.op == "get_attr":
        value = get_attr_value(gm, str(node.target))
    else:
        value = node.meta.get("val", node.meta.get("example_value"))
    return value if isinstance(value, torch.Tensor) else None


def route_float_linears(gm: fx.GraphModule) -> tuple[fx.GraphModule, int]:
    """A copy of `gm` in which every `F.linear(x, W, b)` with a 2-D floating-point W calls
    `torchlite::linear`; and how many were rewritten."""
    new = clone(gm)
    count = 0
    for node in new.graph.nodes:
        if node.op != "call_function" or node.target not in LINEAR_FUNCTIONS or node.kwargs:
            continue
        x, w, b = (list(node.args) + [None] * 3)[:3]
        wt = _weight(new, w)
        if wt is None or wt.dim() != 2 or not wt.is_floating_point() or not isinstance(wt.shape[1], int):
            continue
        node.target, node.args = torch.ops.torchlite.linear.default, (x, w, b)
        count += 1
    new.recompile()
    return new, count
