"""Inductor lowerings of `torchlite::qlinear`, `::qlinear_log` and their `dequantize` ops.

Decode-shaped calls (at most FUSED_MAX_ROWS rows, known at compile time) lower to one reduction over
K that reads the packed weight, converts and scales it in registers and accumulates in float32: no
dequantized weight is ever written to memory, so the kernel is bound by the bytes of the quantized
weight. The reduction iterates [N, M] (weight row outer, activation row inner) so each weight row is
read from memory once for all M activation rows. Larger (prefill-shaped or symbolic) calls are
compute-bound: they dequantize into a temporary and use Inductor's GEMM.

The reduction's loop nest is shaped by the storage layout (torchlite.numerics.linear): an outer loop
over steps of 64 weights and an inner loop of one vector, in which every load is contiguous and the
group scale is invariant. 8-bit: four runs of 16 weights per step. 2-4 bit: each byte is loaded once
and both of its nibbles are multiplied with their two runs of contiguous activations. Per-channel
scales multiply the finished sum. Log codes (`qlinear_log`) take the same loops; a code becomes its
float ±2^-e by writing the exponent bits directly (integer ops and a bitcast, exact), times the scale.
"""
from __future__ import annotations

import math

import torch
from torch._inductor import ir
from torch._inductor.lowering import lowerings, register_lowering, to_dtype
from torch._inductor.virtualized import V, ops

from ..ops import quant as _ops  # noqa: F401  (the ops must exist before we register lowerings)
from ..numerics.linear import block_size, padded_in_features
from ..numerics.log import code_values
from . import vnni
from .cpp_kernel import static_int

aten = torch.ops.aten
FUSED_MAX_ROWS = 16


class _Weight:
    """Loads of one quantized weight inside Inductor inner functions (all results float32)."""

    def __init__(self, qdata, scale, zero, bits: int, group_size: int, log: bool = False):
        self.q = qdata.make_loader()
        self.s = scale.make_loader()
        self.z = zero.make_loader() if zero is not None else None
        one = V.graph.sizevars.statically_known_equals  # sizes 0/1 are always specialized
        self.per_row = not one(scale.get_size()[0], 1)
        self.per_col = not one(scale.get_size()[1], 1)
        self.packed = bits <= 4
        self.block = block_size(bits, group_size)
        self.bits, self.log = bits, log

    def _sidx(self, n, g):
        return [n if self.per_row else 0, g if self.per_col else 0]

    def scale(self, n, g):
        return self.s(self._sidx(n, g))

    def offset(self, n, g):
        """What is subtracted from the stored integer: the zero point, or 8 for symmetric nibbles."""
        if self.z is not None:
            return ops.to_dtype(self.z(self._sidx(n, g)), torch.float32)
        return ops.constant(8.0, torch.float32) if self.packed else None

    def _centered(self, stored, n, g):
        if self.log:
            return _log_value(ops.to_dtype(stored, torch.int32), self.bits)
        v = ops.to_dtype(stored, torch.float32)
        off = self.offset(n, g)
        return v if off is None else ops.sub(v, off)

    def byte(self, n, byte_idx):
        return self.q([n, byte_idx])

    def nibbles(self, n, byte_idx, g):
        """(low, high) nibble of one byte, centered, float32."""
        b = ops.to_dtype(self.byte(n, byte_idx), torch.int32)
        lo = ops.bitwise_and(b, ops.constant(15, torch.int32))
        hi = ops.bitwise_right_shift(b, ops.constant(4, torch.int32))
        return self._centered(lo, n, g), self._centered(hi, n, g)

    def value(self, n, k):
        """Dequantized W[n, k] for an arbitrary index k (used by the dequantize lowering)."""
        g = k // self.block if self.per_col else 0
        if not self.packed:
            v = self._centered(self.q([n, k]), n, g)
        else:
            p = self.block
            r = k % p
            byte = ops.to_dtype(self.byte(n, (k // p) * (p // 2) + r % (p // 2)), torch.int32)
            shift = ops.index_expr(4 * (r // (p // 2)), torch.int32)
            nib = ops.bitwise_and(ops.bitwise_right_shift(byte, shift), ops.constant(15, torch.int32))
            v = self._centered(nib, n, g)
        return ops.mul(v, self.scale(n, g))


def _log_value(code, bits: int):
    """A log code (int32) as float32 ±2^-(c-1) (0 for magnitude c = 0), built from its exponent bits."""
    i32 = torch.int32
    mag = ops.bitwise_and(code, ops.constant(2 ** (bits - 1) - 1, i32))
    exponent = ops.bitwise_left_shift(ops.sub(ops.constant(128, i32), mag), ops.constant(23, i32))
    v = ops.to_dtype_bitcast(exponent, torch.float32, i32)  # 2^(128 - mag - 127)
    v = ops.where(ops.eq(mag, ops.constant(0, i32)), ops.constant(0.0, torch.float32), v)
    negative = ops.ne(ops.bitwise_right_shift(code, ops.constant(bits - 1, i32)), ops.constant(0, i32))
    return ops.where(negative, ops.neg(v), v)


def _pointwise(w: _Weight, qdata, in_features, dtype):
    """Pointwise W[n, k]: the dequantize lowerings, and the prefill path's temporary."""

    def inner(index):
        n, k = index
        return ops.to_dtype(w.value(n, k), dtype)

    ranges = [qdata.get_size()[0], in_features]
    return ir.Pointwise.create(device=qdata.get_device(), dtype=dtype, inner_fn=inner, ranges=ranges)


@register_lowering(torch.ops.torchlite.dequantize.default, type_promotion_kind=None)
def _dequantized(qdata, scale, zero, bits, group_size, in_features, dtype):
    return _pointwise(_Weight(qdata, scale, zero, bits, group_size), qdata, in_features, dtype)


@register_lowering(torch.ops.torchlite.dequantize_log.default, type_promotion_kind=None)
def _dequantized_log(qdata, scale, bits, group_size, in_features, dtype):
    return _pointwise(_Weight(qdata, scale, None, bits, group_size, log=True), qdata, in_features, dtype)


VEC = 16  # float32 lanes of an AVX-512 register: the innermost (vectorized) loop length


def _fused_sum(x2, w: _Weight, n_out, m_rows, kp, grouped: bool):
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
            dot = total([ops.mul(xv(m, k), w._centered(w.byte(n, k), n, g)) for k in ks])
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


ROW_STREAMS = 4  # weight rows a thread reads side by side in the generated decode reduction


def row_sums(x2, inner, n_out, m_rows, rranges):
    """The realized float32 [N, M] reduction `sum over rranges of inner((n, m), r)`.

    With a static N it is built as ROW_STREAMS reductions over equal runs of rows (2, or 1, where N
    does not split evenly or a run would be shorter than VEC rows), which Inductor fuses into one
    loop: each thread reads several weight streams side by side (rows i, N/4 + i, ...) instead of
    one, which this CPU serves faster (a stack of the Llama MLPs: 22.0 -> 25.8-26.3 GB/s,
    docs/design.md). The runs are written into one [N, M] buffer (a concat realized in place)."""

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


def weight_only_linear(x, bias, n_out, dequantized, fused_sum, row_scale=None):
    """x [..., K] @ Ŵᵀ + b in x's dtype. Decode shapes: `fused_sum(x2, m_rows)` gives the realized
    float32 sums [N, M] (x2 = x as [M, K], realized), then `row_scale(n)` (if any) and the bias are
    applied; other shapes: Inductor's GEMM on the temporary `dequantized(dtype)`."""
    *batch, k = x.get_size()
    m_rows = matrix_rows(x)
    x2 = lowerings[aten.reshape](x, [m_rows, k])
    out_dtype = x.get_dtype()
    if not V.graph.sizevars.statically_known_leq(m_rows, FUSED_MAX_ROWS):
        out = lowerings[aten.mm](x2, lowerings[aten.permute](dequantized(out_dtype), [1, 0]))
        if bias is not None:
            out = lowerings[aten.add](out, to_dtype(bias, out_dtype))
        return lowerings[aten.reshape](out, [*batch, n_out])

    # Materialize the activations once: left unrealized, Inductor would inline their producers
    # (RMSNorm, SiLU * up, ...) into the reduction and recompute them for every output row.
    x2.realize()
    sums = fused_sum(x2, m_rows)
    if row_scale is None and bias is None and out_dtype == torch.float32 and m_rows == 1:
        # [N, 1] sums are already the [1, N] output: a view, not an epilogue copy (which a consumer
        # that realizes its input, e.g. a low-rank pair's second factor, would run as its own loop).
        return lowerings[aten.reshape](sums, [*batch, n_out])
    acc = sums.make_loader()
    bias_loader = bias.make_loader() if bias is not None else None

    def epilogue(index):
        m, n = index
        v = acc([n, m])
        if row_scale is not None:
            v = ops.mul(v, row_scale(n))
        if bias_loader is not None:
            v = ops.add(v, ops.to_dtype(bias_loader([n]), torch.float32))
        return ops.to_dtype(v, out_dtype)

    out = ir.Pointwise.create(device=x.get_device(), dtype=out_dtype, inner_fn=epilogue, ranges=[m_rows, n_out])
    return lowerings[aten.reshape](out, [*batch, n_out])


def _qlinear(x, w: _Weight, qdata, scale, zero, bias, group_size, in_features, table: torch.Tensor | None):
    """`table`: the value of each 4-bit code before scaling and offset (for the VNNI kernel)."""
    n_out = qdata.get_size()[0]
    grouped = group_size > 0
    kp = padded_in_features(in_features, w.bits, group_size)
    # the hand-written kernel applies every scale itself; the generated reduction leaves a per-channel
    # scale to the epilogue
    in_kernel = vnni.usable(x, matrix_rows(x), kp, w.block if w.packed else vnni.STEP, group_size)

    def fused_sum(x2, m_rows):
        if in_kernel:
            return vnni.vnni_sums(
                x2, qdata, scale, zero, in_features=in_features, kp=kp, nibbles=w.packed, block=w.block,
                group=group_size, table=table, flip_sign=qdata.get_dtype() == torch.int8,
            )
        if kp != in_features:
            x2 = lowerings[aten.constant_pad_nd](x2, [0, kp - in_features], 0.0)
            x2.realize()
        return _fused_sum(x2, w, n_out, m_rows, kp, grouped)

    return weight_only_linear(
        x, bias, n_out, lambda dtype: _pointwise(w, qdata, in_features, dtype), fused_sum,
        None if grouped or in_kernel else (lambda n: w.scale(n, 0)),
    )



@register_lowering(torch.ops.torchlite.qlinear.default, type_promotion_kind=None)
def _qlinear_lowering(x, qdata, scale, zero, bias, bits, group_size, in_features):
    w = _Weight(qdata, scale, zero, bits, group_size)
    table = torch.arange(16, dtype=torch.float32) - (8 if zero is None else 0) if w.packed else None
    return _qlinear(x, w, qdata, scale, zero, bias, group_size, in_features, table)


@register_lowering(torch.ops.torchlite.qlinear_log.default, type_promotion_kind=None)
def _qlinear_log_lowering(x, qdata, scale, bias, bits, group_size, in_features):
    w = _Weight(qdata, scale, None, bits, group_size, log=True)
    return _qlinear(x, w, qdata, scale, None, bias, group_size, in_features, code_values(bits))


@register_lowering(torch.ops.torchlite.qlinear_a8.default, type_promotion_kind=None)
def _qlinear_a8_lowering(x, qdata, scale, bias, in_features, x_scale):
    """Decode shapes on a VNNI CPU: the hand-written kernel with one activation part (it quantizes the
    activations exactly as the op does, then int8 x int8 dot products). Otherwise one fused kernel
    quantizes the activations (per-token amax, scale, round, clamp, int8 store), `aten._int_mm`
    multiplies int8 x int8 -> int32 (oneDNN), one epilogue applies both scales and the bias."""
    k, (n_out, kp), m_rows = x.get_size()[-1], qdata.get_size(), matrix_rows(x)
    x2 = lowerings[aten.reshape](x, [m_rows, k])
    x2.realize()
    w_scale = scale.make_loader()
    if V.graph.sizevars.statically_known_leq(m_rows, FUSED_MAX_ROWS) and vnni.usable(x2, m_rows, kp, vnni.STEP, 0):
        def fused_sum(x2, m_rows):
            return vnni.vnni_sums(
                x2, qdata, scale, None, in_features=in_features, kp=kp, nibbles=False, block=vnni.STEP, group=0,
                table=None, flip_sign=True, parts=1, x_scale=x_scale,
            )

        # decode rows only (checked above): weight_only_linear never asks for a dequantized weight; the
        # kernel applies the weights' per-channel scale
        return weight_only_linear(x, bias, n_out, None, fused_sum)
    return _a8_int_mm(x, x2, qdata, w_scale, bias, x_scale)


def _a8_int_mm(x, x2, qdata, w_scale, bias, x_scale):
    """The general W8A8 lowering (x2: x as a realized [M, K])."""
    *batch, _ = x.get_size()
    (m_rows, k), (n_out, kp) = x2.get_size(), qdata.get_size()
    xl, f32, device = x2.make_loader(), torch.float32, x.get_device()
    if x_scale is None:
        amax = ir.Reduction.create(
            device=device, dst_dtype=f32, src_dtype=f32, reduction_type="max", ranges=[m_rows],
            inner_fn=lambda idx, ridx: ops.abs(ops.to_dtype(xl([idx[0], ridx[0]]), f32)), reduction_ranges=[k],
        )
        amax.realize()
        amax_l = amax.make_loader()

        def sx(m):
            return ops.maximum(ops.truediv(amax_l([m]), ops.constant(127.0, f32)), ops.constant(1e-12, f32))
    else:
        static = x_scale.make_loader()

        def sx(m):
            return static([0, 0])

    def quantized(index):
        m, kk = index
        v = ops.round(ops.truediv(ops.to_dtype(xl([m, kk]), f32), sx(m)))
        v = ops.minimum(ops.maximum(v, ops.constant(-127.0, f32)), ops.constant(127.0, f32))
        return ops.to_dtype(v, torch.int8)

    codes = ir.Pointwise.create(device=device, dtype=torch.int8, inner_fn=quantized, ranges=[m_rows, k])
    if kp != k:
        codes = lowerings[aten.constant_pad_nd](codes, [0, kp - k], 0)
    codes.realize()
    acc = lowerings[aten._int_mm](codes, lowerings[aten.permute](qdata, [1, 0])).make_loader()
    bias_l = bias.make_loader() if bias is not None else None

    def epilogue(index):
        m, n = index
        v = ops.mul(ops.mul(ops.to_dtype(acc([m, n]), f32), sx(m)), w_scale([n, 0]))
        if bias_l is not None:
            v = ops.add(v, ops.to_dtype(bias_l([n]), f32))
        return ops.to_dtype(v, x.get_dtype())

    out = ir.Pointwise.create(device=device, dtype=x.get_dtype(), inner_fn=epilogue, ranges=[m_rows, n_out])
    return lowerings[aten.reshape](out, [*batch, n_out])
