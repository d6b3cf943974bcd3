"""Inductor lowerings of `torchlite::qlinear`, `::qlinear_log`, `::qlinear_a8` and the `dequantize` ops.

Decode shapes of the weight-only linears run the shared decode reduction (`decode.fused_sum`) over the
packed weight, read through `_QuantizedWeight`, or the hand-written kernel where it can take the
call (`gemv`); larger shapes dequantize into a temporary and use Inductor's GEMM
(`decode.weight_only_linear`). Per-channel scales multiply the finished sum. Log codes (`qlinear_log`)
take the same loops; a code becomes its float ±2^-e by writing the exponent bits directly (integer ops
and a bitcast, exact), times the scale. W8A8 (`qlinear_a8`): the VNNI kernel at decode shapes, else
int8 activations and `aten._int_mm`.
"""
from __future__ import annotations

import torch
from torch._inductor import ir
from torch._inductor.lowering import lowerings, register_lowering
from torch._inductor.virtualized import V, ops

from ..ops import quant as _ops  # noqa: F401  (the ops must exist before we register lowerings)
from ..numerics.linear import block_size, padded_in_features
from ..numerics.log import code_values
from . import gemv
from .decode import WeightLoader, decode_rows, epilogue, fused_sum, matrix_rows, weight_only_linear

aten = torch.ops.aten


class _QuantizedWeight(WeightLoader):
    """Loads of one quantized weight (integer or log codes, torchlite.numerics.linear's layout) inside
    Inductor inner functions (all results float32)."""

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

    def centered(self, stored, n, g):
        if self.log:
            return _log_value(ops.to_dtype(stored, torch.int32), self.bits)
        v = ops.to_dtype(stored, torch.float32)
        off = self.offset(n, g)
        return v if off is None else ops.sub(v, off)

    def load(self, n, k):
        return self.q([n, k])

    def dequantized(self, n, k):
        """Ŵ[n, k] (scale applied) for an arbitrary index k (the dequantize lowerings)."""
        g = k // self.block if self.per_col else 0
        if not self.packed:
            v = self.centered(self.load(n, k), n, g)
        else:
            p = self.block
            r = k % p
            byte = ops.to_dtype(self.load(n, (k // p) * (p // 2) + r % (p // 2)), torch.int32)
            shift = ops.index_expr(4 * (r // (p // 2)), torch.int32)
            nib = ops.bitwise_and(ops.bitwise_right_shift(byte, shift), ops.constant(15, torch.int32))
            v = self.centered(nib, n, g)
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


def _pointwise(w: _QuantizedWeight, qdata, in_features, dtype):
    """Pointwise W[n, k]: the dequantize lowerings, and the prefill path's temporary."""

    def inner(index):
        n, k = index
        return ops.to_dtype(w.dequantized(n, k), dtype)

    ranges = [qdata.get_size()[0], in_features]
    return ir.Pointwise.create(device=qdata.get_device(), dtype=dtype, inner_fn=inner, ranges=ranges)


@register_lowering(torch.ops.torchlite.dequantize.default, type_promotion_kind=None)
def _dequantized(qdata, scale, zero, bits, group_size, in_features, dtype):
    return _pointwise(_QuantizedWeight(qdata, scale, zero, bits, group_size), qdata, in_features, dtype)


@register_lowering(torch.ops.torchlite.dequantize_log.default, type_promotion_kind=None)
def _dequantized_log(qdata, scale, bits, group_size, in_features, dtype):
    return _pointwise(_QuantizedWeight(qdata, scale, None, bits, group_size, log=True), qdata, in_features, dtype)


def _qlinear(x, w: _QuantizedWeight, qdata, scale, zero, bias, group_size, in_features, table: torch.Tensor | None):
    """`table`: the value of each 4-bit code before scaling and offset (for the hand-written kernel)."""
    n_out = qdata.get_size()[0]
    grouped = group_size > 0
    kp = padded_in_features(in_features, w.bits, group_size)
    # the hand-written kernel applies every scale itself; the generated reduction leaves a per-channel
    # scale to the epilogue
    # log codes wider than a nibble are not integers the kernel can multiply (nibbles go through `table`)
    in_kernel = (w.packed or not w.log) and gemv.gemv_usable(
        x, matrix_rows(x), kp, w.block if w.packed else gemv.STEP, group_size
    )

    def sums(x2, m_rows):
        if in_kernel:
            return gemv.gemv_sums(
                x2, qdata, scale, zero, in_features=in_features, kp=kp, nibbles=w.packed, block=w.block,
                group=group_size, table=table, flip_sign=qdata.get_dtype() == torch.int8,
            )
        if kp != in_features:
            x2 = lowerings[aten.constant_pad_nd](x2, [0, kp - in_features], 0.0)
            x2.realize()
        return fused_sum(x2, w, n_out, m_rows, kp, grouped)

    return weight_only_linear(
        x, bias, n_out, lambda dtype: _pointwise(w, qdata, in_features, dtype), sums,
        None if grouped or in_kernel else (lambda n: w.scale(n, 0)),
    )


@register_lowering(torch.ops.torchlite.qlinear.default, type_promotion_kind=None)
def _qlinear_lowering(x, qdata, scale, zero, bias, bits, group_size, in_features):
    w = _QuantizedWeight(qdata, scale, zero, bits, group_size)
    table = torch.arange(16, dtype=torch.float32) - (8 if zero is None else 0) if w.packed else None
    return _qlinear(x, w, qdata, scale, zero, bias, group_size, in_features, table)


@register_lowering(torch.ops.torchlite.qlinear_log.default, type_promotion_kind=None)
def _qlinear_log_lowering(x, qdata, scale, bias, bits, group_size, in_features):
    w = _QuantizedWeight(qdata, scale, None, bits, group_size, log=True)
    return _qlinear(x, w, qdata, scale, None, bias, group_size, in_features, code_values(bits))


@register_lowering(torch.ops.torchlite.qlinear_a8.default, type_promotion_kind=None)
def _qlinear_a8_lowering(x, qdata, scale, bias, in_features, x_scale):
    """Decode shapes where a kernel tier is selected: the hand-written kernel with one activation part (it quantizes the
    activations exactly as the op does, then int8 x int8 dot products). Otherwise one fused kernel
    quantizes the activations (per-token amax, scale, round, clamp, int8 store), `aten._int_mm`
    multiplies int8 x int8 -> int32 (oneDNN), one epilogue applies both scales and the bias."""
    k, (n_out, kp), m_rows = x.get_size()[-1], qdata.get_size(), matrix_rows(x)
    x2 = lowerings[aten.reshape](x, [m_rows, k])
    x2.realize()
    w_scale = scale.make_loader()
    if decode_rows(m_rows) and gemv.gemv_usable(x2, m_rows, kp, gemv.STEP, 0):
        def sums(x2, m_rows):
            return gemv.gemv_sums(
                x2, qdata, scale, None, in_features=in_features, kp=kp, nibbles=False, block=gemv.STEP, group=0,
                table=None, flip_sign=True, parts=1, x_scale=x_scale,
            )

        # decode rows only (checked above): weight_only_linear never asks for a dequantized weight; the
        # kernel applies the weights' per-channel scale
        return weight_only_linear(x, bias, n_out, None, sums)
    return _a8_int_mm(x, x2, qdata, w_scale, bias, x_scale)


def _a8_int_mm(x, x2, qdata, w_scale, bias, x_scale):
    """The general W8A8 lowering (x2: x as a realized [M, K])."""
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
    return epilogue(
        x, m_rows, n_out, lambda m, n: ops.mul(ops.to_dtype(acc([m, n]), f32), sx(m)), lambda n: w_scale([n, 0]), bias
    )
