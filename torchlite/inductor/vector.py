"""Inductor lowerings of `torchlite::qlinear_vector` and `torchlite::dequantize_vector`.

Decode shapes: one reduction per (output row n, activation row m) over (sub-vector j, element t)
that loads the code of sub-vector j (unpacking the nibble when C <= 16, reading the tile when not),
gathers element t of its centroid from the small codebook (indirect indexing; it stays in cache) and
multiplies it with the activation: the sum over sub-vectors of dot(codebook[code], x_sub); the row
scale multiplies the finished sum. No dequantized weight is written.
(Flattening the reduction to one loop over K was 4x slower.) Decode calls run hand-written kernels
instead where they can. Nibble codes (C <= 16), on every kernel tier: `csrc/vq_gemv.cpp` turns codes
into weight bytes by in-register table lookups (the codebooks are on an int8 grid,
`numerics.vector.snap_to_grid`) that meet the activations in int8 dot products, as in `gemv.py`. Byte
codes (64-row tiles), on the avx512_vnni tier with VBMI: `csrc/vq_lut.cpp` looks up per-call tables of the activations' dot products with
every centroid, 64 rows per lookup. Both kernels apply the row scales, so a decode call without bias is
the kernel call alone (`vq_usable`, `vq_sums`). Other shapes gather Ŵ into a temporary and use
Inductor's GEMM (`decode.weight_only_linear`).
"""
from __future__ import annotations

import torch
from torch._inductor import ir
from torch._inductor.lowering import register_lowering
from torch._inductor.virtualized import ops

from ..ops import vector as _ops  # noqa: F401  (the ops must exist before we register lowerings)
from ..numerics.vector import TILE_ROWS
from . import gemv
from .cpp_kernel import call, kernel_source, static_int, takes_decode_call
from .decode import matrix_rows, weight_only_linear
from .tiers import cpu_flags

TILE_KERNEL_FLAGS = {"avx512bw", "avx512vbmi"}  # vq_lut.cpp: the avx512_vnni tier with VBMI


class _VectorWeight:
    """Ŵ[n, k] = scale[n] · codebook[n // group_size, code[n, k // d], k % d] inside Inductor inner functions
    (`packed`: two codes per byte, C <= 16; else byte codes in tiles of TILE_ROWS rows)."""

    def __init__(self, qdata, scale, codebook, group_size: int):
        self.q, self.s, self.cb = qdata.make_loader(), scale.make_loader(), codebook.make_loader()
        _, self.size, self.d = (int(s) for s in codebook.get_size())
        self.group_size = group_size
        self.packed = self.size <= 16

    def code(self, n, j):
        """The code of sub-vector j of row n, int32."""
        if not self.packed:
            return ops.to_dtype(self.q([n // TILE_ROWS, j, n % TILE_ROWS]), torch.int32)
        byte = ops.to_dtype(self.q([n, j // 2]), torch.int32)
        shift = ops.index_expr(4 * (j % 2), torch.int32)
        return ops.bitwise_and(ops.bitwise_right_shift(byte, shift), ops.constant(15, torch.int32))

    def centroid(self, n, j, t):
        """Element t of the centroid that codes sub-vector j of row n."""
        idx = ops.indirect_indexing(self.code(n, j), self.size, check=False)
        return self.cb([n // self.group_size if self.group_size else 0, idx, t])

    def scale(self, n):
        """The row scale of row n."""
        return self.s([n, 0])

    def dequantized(self, n, k):
        """Ŵ[n, k] (scale applied) for an arbitrary k."""
        return ops.mul(self.centroid(n, k // self.d, k % self.d), self.scale(n))


@register_lowering(torch.ops.torchlite.dequantize_vector.default, type_promotion_kind=None)
def _dequantized(qdata, scale, codebook, group_size, in_features, dtype):
    w = _VectorWeight(qdata, scale, codebook, group_size)

    def inner(index):
        n, k = index
        return ops.to_dtype(w.dequantized(n, k), dtype)

    ranges = [scale.get_size()[0], in_features]
    return ir.Pointwise.create(device=qdata.get_device(), dtype=dtype, inner_fn=inner, ranges=ranges)


def vq_usable(x, m_rows, w: _VectorWeight, codebook, n_out) -> bool:
    """Whether `vq_sums` can take this call: a kernel tier (packed codes: "vq_gemv", any tier; byte
    codes: "vq_lut", the avx512_vnni tier with VBMI), float32 activations, static shapes, codebook
    groups that are whole tiles (byte codes)."""
    tier = takes_decode_call(x, m_rows)
    if not (tier and static_int(n_out)):
        return False
    if w.packed:
        return True
    tiles = tier.name == "avx512_vnni" and TILE_KERNEL_FLAGS <= cpu_flags()
    return tiles and not (int(codebook.get_size()[0]) > 1 and w.group_size % TILE_ROWS)


def vq_sums(x2, m_rows, w: _VectorWeight, qdata, scale, codebook, n_out, in_features: int):
    """out [N, M], row scales applied, from `csrc/vq_gemv.cpp` (packed codes) or `csrc/vq_lut.cpp`."""
    j = in_features // w.d
    defines = {
        "M_ROWS": int(m_rows), "N_OUT": int(n_out), "J": j, "D": w.d, "C": w.size, "G": int(codebook.get_size()[0]),
        "GROUP_ROWS": w.group_size or int(n_out),
    }
    arg_types = ["const float*", "const uint8_t*", "const float*", "const float*", "float*"]
    if w.packed:
        name, src = "vq_gemv", kernel_source("vq_gemv.cpp", "activation_parts.h")
        kp, parts = -(-j // 128) * 128 * w.d, gemv.weight_only_parts(narrow_codes=True)
        defines = gemv.with_activation_parts(defines, in_features=in_features, kp=kp, parts=parts, k_after=None)
    else:
        name, src = "vq_lut", kernel_source("vq_lut.cpp")
    return call([x2, qdata, codebook, scale], [n_out, m_rows], src, defines, arg_types, name)


@register_lowering(torch.ops.torchlite.qlinear_vector.default, type_promotion_kind=None)
def _qlinear_vector(x, qdata, scale, codebook, bias, group_size, in_features):
    w = _VectorWeight(qdata, scale, codebook, group_size)
    n_out = scale.get_size()[0]
    in_kernel = vq_usable(x, matrix_rows(x), w, codebook, n_out)

    def sums(x2, m_rows):
        if in_kernel:
            return vq_sums(x2, m_rows, w, qdata, scale, codebook, n_out, in_features)
        xl = x2.make_loader()

        def inner(index, rindex):
            n, m = index
            j, t = rindex
            return ops.mul(ops.to_dtype(xl([m, j * w.d + t]), torch.float32), w.centroid(n, j, t))

        acc = ir.Reduction.create(
            device=x2.get_device(), dst_dtype=torch.float32, src_dtype=torch.float32, inner_fn=inner,
            ranges=[n_out, m_rows], reduction_ranges=[in_features // w.d, w.d], reduction_type="sum",
        )
        acc.realize()
        return acc

    # the kernels apply the row scales themselves; the generated reduction leaves them to the epilogue
    return weight_only_linear(
        x, bias, n_out, lambda dtype: _dequantized(qdata, scale, codebook, group_size, in_features, dtype), sums,
        None if in_kernel else w.scale,
    )
