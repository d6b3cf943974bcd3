"""The decode reduction every linear lowering shares, and the frame around it (prefill GEMM, epilogue).

A batch-1 decode step reads every weight once, so a linear at decode shapes (at most FUSED_MAX_ROWS
activation rows, known at compile time) is bound by the bytes of its weight. Such calls lower to one
reduction over K that reads the stored weight, converts and scales it in registers and accumulates in
float32: no dequantized weight is ever written to memory. The reduction iterates [N, M] (weight row
outer, activation row inner) so each weight row is read from memory once for all M activation rows;
`row_sums` builds it. With a static N it is built as ROW_STREAMS reductions over equal runs of rows
(2, or 1, where N does not split evenly or a run would be shorter than VEC rows), which Inductor fuses
into one loop: each thread reads several weight streams side by side (rows i, N/4 + i, ...) instead of
one, which this CPU serves faster (a stack of the Llama MLPs: 22.0 -> 25.8-26.3 GB/s, ad hoc 2026-11-30).

`fused_sum` is that reduction over a weight stored in blocks along K (the layouts of
torchlite.numerics.linear, and float weights), read through a `WeightLoader`: an outer loop over steps
of 64 weights and an inner loop of one vector (VEC lanes), in which every load is contiguous and the
group scale is invariant. Unpacked storage: four runs of 16 weights per step. Packed (2-4 bit): each
byte is loaded once and both of its nibbles are multiplied with their two runs of contiguous
activations.

`weight_only_linear` is the lowering's frame: decode shapes get the sums [N, M] (from `fused_sum`, a
lowering's own reduction or a hand-written kernel), then `epilogue` (row scale, bias, cast to x's
dtype); larger (prefill-shaped or symbolic) calls are compute-bound and use Inductor's GEMM on a
dequantized temporary (`gemm_linear`).
"""
from __future__ import annotations

import abc
import math

import torch
from torch._inductor import ir
from torch._inductor.lowering import lowerings, to_dtype
from torch._inductor.virtualized import V, ops

from .cpp_kernel import static_int

aten = torch.ops.aten
FUSED_MAX_ROWS = 16  # activation rows up to which a call is decode-shaped
VEC = 16  # float32 lanes of an AVX-512 register: the innermost (vectorized) loop length
ROW_STREAMS = 4  # weight rows a thread reads side by side in the generated decode reduction


class WeightLoader(abc.ABC):
    """A weight [N, K] as `fused_sum` reads it inside Inductor inner functions.

    The storage holds blocks of `block` weights along K, one scale group per block. `packed`: two
    4-bit codes per byte, a block's first half in the low nibbles of its block // 2 bytes and its second
    half in the high ones; else one stored element per weight."""

    packed: bool = False
    block: int

    @abc.abstractmethod
    def load(self, n, k):
        """The stored element at [n, k] of the storage (a byte of two codes when packed)."""

    @abc.abstractmethod
    def centered(self, stored, n, g):
        """A stored element (or, packed, one nibble as int32) of group g of row n as the float32 weight
        before its scale: less its offset (zero point), or decoded (log codes)."""

    @abc.abstractmethod
    def scale(self, n, g):
        """The float32 scale of group g of row n (read by grouped sums only)."""

    def nibbles(self, n, byte_idx, g):
        """(low, high) nibble of one stored byte, centered, float32."""
        b = ops.to_dtype(self.load(n, byte_idx), torch.int32)
        lo = ops.bitwise_and(b, ops.constant(15, torch.int32))
        hi = ops.bitwise_right_shift(b, ops.constant(4, torch.int32))
        return self.centered(lo, n, g), self.centered(hi, n, g)


def fused_sum(x2, w: WeightLoader, n_out, m_rows, kp, grouped: bool):
    """acc[n, m] = sum_k x[m, k] * Wc[n, k], with Wc the centered (and, when grouped, scaled) weight.

    The innermost reduction loop is one vector (VEC elements); each step adds the products of
    several VEC-wide runs of K, so one accumulator update covers 64 weights. Without this the loop
    is bound by the latency of its single accumulator, not by memory.
    """
    x = x2.make_loader()
    f32 = torch.float32

    def xv(m, k):
        return ops.to_dtype(x([m, k]), f32)

    def total(terms):
        out = terms[0]
        for t in terms[1:]:
            out = ops.add(out, t)
        return out

    if not w.packed:
        unroll = math.gcd(w.block // VEC, 4)
        step = VEC * unroll

        def inner(index, rindex):
            n, m = index
            b, j = rindex
            ks = [b * step + u * VEC + j for u in range(unroll)]
            g = (b * step) // w.block
            dot = total([ops.mul(xv(m, k), w.centered(w.load(n, k), n, g)) for k in ks])
            return ops.mul(dot, w.scale(n, g)) if grouped else dot

        rranges = [kp // step, VEC]
    else:
        p, half = w.block, w.block // 2
        unroll = math.gcd(half // VEC, 2) if half >= VEC else 1
        width = min(VEC, half)
        step = width * unroll  # bytes per reduction step
        per_block = half // step

        def inner(index, rindex):
            n, m = index
            c, j = rindex
            b = c // per_block  # the block of P elements these bytes belong to
            offsets = [(c % per_block) * step + u * width + j for u in range(unroll)]
            terms = []
            for o in offsets:
                lo, hi = w.nibbles(n, b * half + o, b)
                terms += [ops.mul(xv(m, b * p + o), lo), ops.mul(xv(m, b * p + half + o), hi)]
            dot = total(terms)
            return ops.mul(dot, w.scale(n, b)) if grouped else dot

        rranges = [kp // p * per_block, width]

    return row_sums(x2, inner, n_out, m_rows, rranges)


def row_sums(x2, inner, n_out, m_rows, rranges):
    """The realized float32 [N, M] reduction `sum over rranges of inner((n, m), r)`, as ROW_STREAMS
    reductions over runs of rows where N allows (see the module docstring), written into one [N, M]
    buffer (a concat realized in place)."""

    def reduction(rows, first):
        acc = ir.Reduction.create(
            device=x2.get_device(), dst_dtype=torch.float32, src_dtype=torch.float32,
            inner_fn=lambda index, rindex: inner((index[0] + first, index[1]), rindex),
            ranges=[rows, m_rows], reduction_ranges=rranges, reduction_type="sum",
        )
        acc.realize()
        return acc

    streams = next((s for s in (ROW_STREAMS, 2) if static_int(n_out) and int(n_out) % s == 0 and int(n_out) >= s * VEC), 1)
    if streams == 1:
        return reduction(n_out, 0)
    run = int(n_out) // streams
    out = lowerings[aten.cat]([reduction(run, i * run) for i in range(streams)], 0)
    out.realize()
    return out


def matrix_rows(x):
    """M for x [..., K] seen as a matrix [M, K]."""
    *batch, _ = x.get_size()
    return ir.sympy_product(batch) if batch else 1


def decode_rows(m_rows) -> bool:
    """Whether M activation rows make a decode-shaped call (at most FUSED_MAX_ROWS, known at compile time)."""
    return V.graph.sizevars.statically_known_leq(m_rows, FUSED_MAX_ROWS)


def gemm_linear(x, x2, bias, n_out, dense):
    """The prefill path: x2 [M, K] (x as a matrix) @ denseᵀ with Inductor's GEMM, plus the bias, shaped
    [..., N] like x. `dense`: the weight [N, K] in x's dtype (a dequantized temporary, or the weight)."""
    *batch, _ = x.get_size()
    out = lowerings[aten.mm](x2, lowerings[aten.permute](dense, [1, 0]))
    if bias is not None:
        out = lowerings[aten.add](out, to_dtype(bias, x.get_dtype()))
    return lowerings[aten.reshape](out, [*batch, n_out])


def epilogue(x, m_rows, n_out, value, row_scale, bias):
    """out[m, n] = value(m, n) · row_scale(n) + bias[n] in x's dtype (float32 arithmetic; `row_scale`
    and `bias` may be None), one pointwise kernel over [M, N], shaped [..., N] like x."""
    *batch, _ = x.get_size()
    out_dtype = x.get_dtype()
    bias_loader = bias.make_loader() if bias is not None else None

    def inner(index):
        m, n = index
        v = value(m, n)
        if row_scale is not None:
            v = ops.mul(v, row_scale(n))
        if bias_loader is not None:
            v = ops.add(v, ops.to_dtype(bias_loader([n]), torch.float32))
        return ops.to_dtype(v, out_dtype)

    out = ir.Pointwise.create(device=x.get_device(), dtype=out_dtype, inner_fn=inner, ranges=[m_rows, n_out])
    return lowerings[aten.reshape](out, [*batch, n_out])


def weight_only_linear(x, bias, n_out, dequantized, sums, row_scale=None, *, realize_x=True, view_bare_sums=True):
    """x [..., K] @ Ŵᵀ + b in x's dtype. Decode shapes: `sums(x2, m_rows)` gives the realized float32
    sums [N, M] (x2 = x as [M, K]), then `epilogue` applies `row_scale(n)` (if any) and the bias; other
    shapes: `gemm_linear` on the temporary `dequantized(dtype)`.

    `realize_x`: materialize x2 before the sums (left unrealized, Inductor would inline its producers,
    RMSNorm, SiLU * up, ..., into the reduction and recompute them for every output row); False where the
    sums read x in a pass of their own (N:M regroups it). `view_bare_sums`: with nothing to apply to
    float32 [N, 1] sums, return them as the [1, N] output (a view, not an epilogue copy, which a consumer
    that realizes its input, e.g. a low-rank pair's second factor, would run as its own loop)."""
    *batch, k = x.get_size()
    m_rows = matrix_rows(x)
    x2 = lowerings[aten.reshape](x, [m_rows, k])
    out_dtype = x.get_dtype()
    if not decode_rows(m_rows):
        return gemm_linear(x, x2, bias, n_out, dequantized(out_dtype))
    if realize_x:
        x2.realize()
    acc = sums(x2, m_rows)
    if view_bare_sums and row_scale is None and bias is None and out_dtype == torch.float32 and m_rows == 1:
        return lowerings[aten.reshape](acc, [*batch, n_out])
    acc_l = acc.make_loader()
    return epilogue(x, m_rows, n_out, lambda m, n: acc_l([n, m]), row_scale, bias)
