"""Inductor lowering of `torchlite::nm_linear` (storage: `torchlite.numerics.nm`).

Decode-shaped calls (at most FUSED_MAX_ROWS rows, known at compile time) lower to one reduction
over the groups of m inputs that reads only the kept values and their position codes. The
activations are first regrouped (one small kernel) into xt[row, r, g] = x[row, g * m + r], so the
candidates at position r of consecutive groups are contiguous. For every kept slot the reduction
picks its activation among the m - n + 1 candidates of its group by `where` blends driven by bits
of the code (a bit becomes a lane mask with one shift to the sign bit and one compare; the blend is
one masked move); at 2:4 three masks decide both slots. (Blends written as and/or on the floats'
bit patterns needed bitcasts, which Inductor's C++ backend emits as per-lane copies through
memory: 12 ms per 4096x4096 2:4 layer against 1.0 ms with `where`, ad hoc 2026-11-30 15:35.) There is no gather and every
load is contiguous along the groups, so the inner loop (one block of 16 groups) is a single
AVX-512 vector. The iteration is [out, rows] (weight row outer): each weight row is read once for
all rows. Larger calls rebuild the dense weight into a temporary and use Inductor's GEMM
(`decode.weight_only_linear`). Decode calls of 2:4 with int8 values on CPUs with AVX512-VNNI run the
hand-written `csrc/nm_gemv.cpp` instead (`nm_gemv_usable`, `nm_gemv_sums`).
"""
from __future__ import annotations

import torch
from torch._inductor import ir
from torch._inductor.lowering import register_lowering
from torch._inductor.virtualized import ops
from torch.utils._sympy.functions import FloorDiv, ModularIndexing

from ..ops import sparse as _ops  # noqa: F401  (the op must exist before we register its lowering)
from ..numerics.nm import group_block, index_columns, index_layout, offset_bits, pair_code_column
from . import gemv
from .cpp_kernel import call, kernel_source, static_int, takes_decode_call
from .decode import row_sums, weight_only_linear

f32, i32 = torch.float32, torch.int32


class _NMWeight:
    """Loads of one N:M weight (its kept values, their position codes, the row scale of int8 values)
    inside Inductor inner functions."""

    def __init__(self, values, indices, scale, n: int, m: int, groups: int):
        self.v, self.idx = values.make_loader(), indices.make_loader()
        self.s = scale.make_loader() if scale is not None else None
        self.n, self.m = n, m
        self.bits = offset_bits(n, m)
        self.per_byte, self.planes = index_layout(n, m)
        self.block = group_block(groups)
        self.pair_code = (n, m) == (2, 4)

    def _column(self, entry, entries, g):
        # Inductor's FloorDiv / ModularIndexing, not sympy's // and %: only these simplify against the
        # loop ranges (g = 16 * block + lane -> block, lane), which keeps the loads contiguous vectors
        b = self.block
        return FloorDiv(g, b) * (entries * b) + entry * b + ModularIndexing(g, 1, b)

    def scale(self, o):
        """The row scale of int8 values (float values have none: `s` is None)."""
        return self.s([o, 0])

    def kept(self, o, j, g):
        """Kept value j of group g of row o, float32 (scale not applied)."""
        return ops.to_dtype(self.v([o, self._column(j, self.n, g)]), f32)

    def code(self, o, j, g):
        """The index byte holding slot j's position, as int32 (2:4: shifted so that the group's code
        is its low nibble; the other group's bits above it are never read)."""
        if self.pair_code:
            column, nibble = pair_code_column(g, FloorDiv, lambda a, b: ModularIndexing(a, 1, b))
            byte = ops.to_dtype(self.idx([o, column]), i32)
            return ops.bitwise_right_shift(byte, ops.index_expr(4 * nibble, i32))
        return ops.to_dtype(self.idx([o, self._column(j // self.per_byte, self.planes, g)]), i32)

    def _low_bit(self, j):
        """Bit of the index byte where slot j's offset starts (generic layout)."""
        return 8 - self.bits * (j % self.per_byte + 1)

    @staticmethod
    def mask(code, bit):
        """True where `bit` of the code is set: moved to the sign bit, one shift and one compare."""
        return ops.lt(ops.bitwise_left_shift(code, ops.constant(31 - bit, i32)), ops.constant(0, i32))

    def select(self, o, j, g, candidates):
        """candidates[offset of slot j in group g], by blends on the bits of the group's code."""
        code = self.code(o, j, g)
        if self.pair_code:  # 2:4: slot 0 from x0, x1, x2 and slot 1 from x1, x2, x3 with three masks
            near, middle, far = (0, 1, 2) if j == 0 else (2, 1, 0)
            inner = ops.where(self.mask(code, 2), candidates[middle], candidates[far])
            return ops.where(self.mask(code, 3 if j == 0 else 1), candidates[near], inner)
        level = candidates + [candidates[-1]] * ((1 << self.bits) - len(candidates))
        for b in range(self.bits):
            mask = self.mask(code, self._low_bit(j) + b)
            level = [
                level[i] if level[i] is level[i + 1] else ops.where(mask, level[i + 1], level[i])
                for i in range(0, len(level), 2)
            ]
        return level[0]

    def position(self, o, j, g):
        """Slot j's position in group g, int32."""
        code = self.code(o, j, g)
        one = ops.constant(1, i32)
        if self.pair_code:  # p0 = (1 - bit3) (2 - bit2), p1 = 3 - (1 - bit1) (2 - bit2)
            bit = {b: ops.bitwise_and(ops.bitwise_right_shift(code, ops.constant(b, i32)), one) for b in (1, 2, 3)}
            spread = ops.sub(ops.constant(2, i32), bit[2])
            if j == 0:
                return ops.mul(ops.sub(one, bit[3]), spread)
            return ops.sub(ops.constant(3, i32), ops.mul(ops.sub(one, bit[1]), spread))
        offset = ops.bitwise_and(
            ops.bitwise_right_shift(code, ops.constant(self._low_bit(j), i32)), ops.constant((1 << self.bits) - 1, i32)
        )
        return ops.add(offset, ops.constant(j, i32))

    def dequantized(self, o, k):
        """Ŵ[o, k] (float32, scale applied) for an arbitrary k: the slot whose position is k's, or 0."""
        g, r = FloorDiv(k, self.m), ModularIndexing(k, 1, self.m)
        zero = ops.constant(0.0, f32)
        total = zero
        for j in range(self.n):
            hit = ops.eq(self.position(o, j, g), ops.index_expr(r, i32))
            total = ops.add(total, ops.where(hit, self.kept(o, j, g), zero))
        return ops.mul(total, self.scale(o)) if self.s is not None else total


def nm_gemv_usable(x2, m_rows, values, n: int, m: int, in_features: int) -> bool:
    """Whether `nm_gemv_sums` can take this call: 2:4 int8 values in whole blocks of 16 groups on a CPU
    with AVX512-VNNI (otherwise the generated reduction takes it)."""
    n_out, groups = values.get_size()[0], in_features // m
    if (n, m) != (2, 4) or values.get_dtype() != torch.int8 or groups % 16:
        return False
    return takes_decode_call(x2, m_rows) and static_int(n_out)


def nm_gemv_sums(x2, m_rows, values, indices, n: int, m: int, in_features: int):
    """Σ x·v [N, M] (row scale not applied) from `csrc/nm_gemv.cpp`. The generated reduction converts
    every int8 value to float and blends float activations: this kernel reads 3x fewer bytes per
    instruction than with float values, 0.62-0.74x of the dense int8 VNNI kernel (ad hoc, 2026-11-30)."""
    n_out, groups = values.get_size()[0], in_features // m
    defines = {"M_ROWS": int(m_rows), "N_OUT": int(n_out), "GROUPS": groups, "CODE_BYTES": index_columns(n, m, groups)}
    defines = gemv.with_activation_parts(
        defines, in_features=in_features, kp=-(-groups // 32) * 128, parts=gemv.weight_only_parts(narrow_codes=False)
    )
    src = kernel_source("nm_gemv.cpp", "activation_parts.h")
    return call([x2, values, indices], [n_out, m_rows], src, defines, ["const float*", "const int8_t*", "const uint8_t*", "float*"], "nm_gemv")


def _regrouped(x2, m_rows, m: int, groups: int):
    """xt[row, r, g] = x[row, g * m + r] in float32, realized with a fixed contiguous layout
    (left flexible, Inductor lays it out like x and the reduction's loads become strided)."""
    x = x2.make_loader()

    def inner(index):
        row, r, g = index
        return ops.to_dtype(x([row, g * m + r]), f32)

    xt = ir.Pointwise.create(device=x2.get_device(), dtype=f32, inner_fn=inner, ranges=[m_rows, m, groups])
    xt.realize()
    return ir.ExternKernel.require_contiguous(xt).make_loader()


@register_lowering(torch.ops.torchlite.nm_linear.default, type_promotion_kind=None)
def _nm_linear_lowering(x, values, indices, scale, bias, n, m, in_features):
    n_out = values.get_size()[0]
    groups = in_features // m
    w = _NMWeight(values, indices, scale, n, m, groups)

    def dense(dtype):
        return ir.Pointwise.create(
            device=x.get_device(), dtype=dtype, ranges=[n_out, in_features],
            inner_fn=lambda idx: ops.to_dtype(w.dequantized(*idx), dtype),
        )

    def sums(x2, m_rows):
        if nm_gemv_usable(x2, m_rows, values, n, m, in_features):
            return nm_gemv_sums(x2, m_rows, values, indices, n, m, in_features)
        return _nm_sums(x2, m_rows, w, n, m, groups, n_out)

    # the regrouping reads x in a kernel of its own (x is not materialized first); bare sums still get
    # the epilogue's copy
    return weight_only_linear(
        x, bias, n_out, dense, sums, w.scale if scale is not None else None, realize_x=False, view_bare_sums=False
    )


def _nm_sums(x2, m_rows, w: _NMWeight, n: int, m: int, groups: int, n_out):
    """Σ x·v [N, M] (row scale not applied) as one generated reduction over the kept values."""
    xt = _regrouped(x2, m_rows, m, groups)
    blocks = groups // w.block

    def inner(index, rindex):
        o, row = index
        g = rindex[0] * w.block + rindex[1] if blocks > 1 else rindex[0]
        xs = [xt([row, r, g]) for r in range(m)]
        total = None
        for j in range(n):
            term = ops.mul(w.kept(o, j, g), w.select(o, j, g, xs[j : j + m - n + 1]))
            total = term if total is None else ops.add(total, term)
        return total

    # [blocks, 16]: the vectorized inner loop is one block (a single range of all groups vectorizes too,
    # but [1, groups] does not); rows read as parallel streams (decode.row_sums)
    return row_sums(x2, inner, n_out, m_rows, [blocks, w.block] if blocks > 1 else [groups])
