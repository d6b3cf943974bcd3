"""Vector quantization of a weight matrix W[N, K]: each run of `vector_dim` (d) consecutive input
features of a row (a sub-vector) is replaced by the nearest of `codebook_size` (C) centroids, times
the row's scale: Ŵ[n] = scale[n] · centroids. The scale is the power of two nearest the row's RMS,
so rows of different magnitude share one codebook (without it the large rows take all centroids and
the small ones round to noise), and dividing by it is exact.

Codebooks: one per layer, or one per group of `group_size` consecutive output rows (the last group
may be smaller). Each is learned by k-means on the group's scaled sub-vectors (W[n] / scale[n]): k-means++ seeding from a
seeded generator, then KMEANS_ITERS Lloyd steps (distances and means in float64; an empty cluster
keeps its centroid). Training uses at most TRAIN_PER_CENTROID * C sub-vectors, drawn with the same
generator, then snapped to an int8 grid (`snap_to_grid`: each element an integer in ±127 times a
power of two per codebook, which the VNNI kernel looks up as bytes); every sub-vector is then coded
with its nearest centroid in the stored float32 codebook. When a group has at most C distinct scaled
sub-vectors, they are the codebook (padded with copies of the first, not snapped) and the
reconstruction is exact. The result is a pure function of (W, d, C, group_size, seed).

Storage (what the kernels read): `qdata` holds the codes of W's J = K/d sub-vectors per row. When
C <= 16, two per byte, row-major [N, ceil(J/2)] (code 2i in the low nibble of byte i, code 2i+1 in the
high one; an odd J leaves a zero high nibble). Otherwise one byte each, in 64-row tiles
[ceil(N/64), J, 64]: tile t, position j holds the codes of sub-vector j of rows 64t..64t+63 (rows past
N are zero), so the decode kernel looks up 64 rows' dot-product table entries at once
(csrc/vq_lut.cpp). `scale` float32 [N, 1]; `codebook` float32 [G, C, d]. Bits per weight: log2(C)/d
for the codes plus 32·(G·C·d + N) / (N·K) for the codebooks and scales.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import TorchliteError

KMEANS_ITERS = 16
TRAIN_PER_CENTROID = 256
CHUNK = 16384  # sub-vectors per distance computation


@dataclass
class VectorQuantizedWeight:
    qdata: torch.Tensor
    scale: torch.Tensor
    codebook: torch.Tensor
    group_size: int  # output rows per codebook; 0: one codebook per layer
    in_features: int

    scheme = "vector"
    zero = input_scale = None

    @property
    def out_features(self) -> int:
        return self.scale.shape[0]

    @property
    def vector_dim(self) -> int:
        return self.codebook.shape[2]

    @property
    def bits(self) -> int:
        """Bits of one code."""
        return code_bits(self.codebook.shape[1])

    def codes(self) -> torch.Tensor:
        """The codes as uint8 [N, J]."""
        return stored_codes_to_rows(self.qdata, self.codebook.shape[1], self.out_features, self.in_features // self.vector_dim)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_vector(self.qdata, self.scale, self.codebook, self.group_size, self.in_features, dtype)

    effective_weight = dequantize

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.qdata, self.scale, self.codebook))


def code_bits(codebook_size: int) -> int:
    return max(1, (codebook_size - 1).bit_length())


def check_shape(name: str, shape, vector_dim: int, codebook_size: int, group_size: int | None) -> None:
    """Raise unless a layer of weight `shape` [N, K] can be vector-quantized with these settings."""
    n, k = shape
    if k % vector_dim:
        divisors = [d for d in range(2, 9) if k % d == 0]
        raise TorchliteError(
            f"layer {name!r} has in_features={k}, not a multiple of vector_dim={vector_dim}; use a vector_dim "
            f"that divides it ({', '.join(map(str, divisors)) or 'none in 2..8'}) or exclude the layer"
        )
    rows = n - group_size * ((n - 1) // group_size) if group_size else n  # the smallest group
    if rows * (k // vector_dim) < codebook_size:
        raise TorchliteError(
            f"layer {name!r} has only {rows * (k // vector_dim)} sub-vectors per codebook, fewer than "
            f"codebook_size={codebook_size}; use a smaller codebook_size"
            + (", a larger group_size" if group_size else "") + " or exclude the layer"
        )


def nearest(v: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (Euclidean, float64, differences not expanded) of each row of v."""
    c = centroids.double()
    return torch.cat([
        torch.cdist(v[i : i + CHUNK].double(), c, compute_mode="donot_use_mm_for_euclid_dist").argmin(1)
        for i in range(0, len(v), CHUNK)
    ])


def kmeans(v: torch.Tensor, k: int, generator: torch.Generator, iters: int = KMEANS_ITERS) -> torch.Tensor:
    """k centroids [k, d] (float64) of the rows of v (float64): k-means++ seeding, then Lloyd steps."""
    first = v[torch.randint(len(v), (1,), generator=generator)]
    centroids, d2 = [first], ((v - first) ** 2).sum(1)
    for _ in range(1, k):
        if d2.sum() == 0:  # every point coincides with a centroid already
            centroids.append(first)
            continue
        c = v[torch.multinomial(d2, 1, generator=generator)]
        centroids.append(c)
        d2 = torch.minimum(d2, ((v - c) ** 2).sum(1))
    cb = torch.cat(centroids)
    for _ in range(iters):
        codes = nearest(v, cb)
        counts = torch.bincount(codes, minlength=k).unsqueeze(1)
        sums = torch.zeros_like(cb).index_add_(0, codes, v)
        cb = torch.where(counts > 0, sums / counts.clamp_min(1), cb)
    return cb


def codebook_for(v: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """The float32 codebook [k, d] of sub-vectors v [P, d] (float32)."""
    distinct = torch.unique(v, dim=0)
    if len(distinct) <= k:
        return torch.cat([distinct, distinct[:1].expand(k - len(distinct), -1)])
    train = v
    if len(v) > TRAIN_PER_CENTROID * k:
        train = v[torch.randperm(len(v), generator=generator)[: TRAIN_PER_CENTROID * k]]
    return snap_to_grid(kmeans(train.double(), k, generator).float())


def snap_to_grid(codebook: torch.Tensor) -> torch.Tensor:
    """The codebook rounded to b·s: b integers in ±127, s the smallest power of two with max|c| <= 127·s
    (the rule csrc/vq_gemv.cpp applies per call)."""
    top = codebook.abs().max().item()
    if top == 0:
        return codebook
    mantissa, exponent = math.frexp(top)  # top = mantissa · 2^exponent, mantissa in [0.5, 1)
    step = math.ldexp(1.0, exponent - 7)
    if top > 127 * step:
        step *= 2
    return torch.round(codebook / step) * step


def quantize_vector(
    weight: torch.Tensor, vector_dim: int, codebook_size: int, group_size: int | None = None, seed: int = 0,
) -> VectorQuantizedWeight:
    """Vector-quantize W[N, K] (K a multiple of vector_dim) with one codebook per `group_size` rows."""
    if weight.dim() != 2:
        raise TorchliteError(f"quantize_vector expects a 2-D weight [out, in], got shape {tuple(weight.shape)}")
    check_shape("weight", weight.shape, vector_dim, codebook_size, group_size)
    n, k = weight.shape
    rows = group_size or n
    scale = row_scales(weight)
    w = weight.detach().float() / scale
    generator = torch.Generator().manual_seed(seed)
    books = [codebook_for(w[start : start + rows].reshape(-1, vector_dim), codebook_size, generator)
             for start in range(0, n, rows)]
    return encode_vector(weight, scale, torch.stack(books).contiguous(), group_size or 0)


def encode_vector(weight: torch.Tensor, scale: torch.Tensor, codebook: torch.Tensor, group_size: int) -> VectorQuantizedWeight:
    """W[N, K] coded with the nearest centroid of each scaled sub-vector (given scales [N, 1] and codebooks)."""
    n, k = weight.shape
    codes = nearest_codes(weight.detach().float(), scale, codebook, group_size).to(torch.uint8)
    return VectorQuantizedWeight(store_codes(codes, codebook.shape[1]), scale, codebook, group_size, k)


def nearest_codes(w: torch.Tensor, scale: torch.Tensor, codebook: torch.Tensor, group_size: int) -> torch.Tensor:
    """Codes [N, J] of the nearest centroid to each sub-vector of W[N, J·d] / scale (one codebook per group)."""
    n, d = w.shape[0], codebook.shape[2]
    rows = group_size or n
    return torch.cat([
        nearest((w[start : start + rows] / scale[start : start + rows]).reshape(-1, d), codebook[start // rows])
        .reshape(-1, w.shape[1] // d)
        for start in range(0, n, rows)
    ])


def row_scales(weight: torch.Tensor) -> torch.Tensor:
    """float32 [N, 1]: per row, the power of two nearest its RMS (1 for an all-zero row)."""
    rms = weight.detach().float().pow(2).mean(dim=1, keepdim=True).sqrt()
    return torch.where(rms > 0, torch.exp2(torch.round(torch.log2(rms))), torch.ones_like(rms)).contiguous()


TILE_ROWS = 64


def store_codes(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """uint8 codes [N, J] in their storage layout: two per byte (C <= 16) or 64-row tiles."""
    return pack_codes(codes) if codebook_size <= 16 else tile_codes(codes)


def stored_codes_to_rows(qdata: torch.Tensor, codebook_size: int, rows: int, count: int) -> torch.Tensor:
    """Inverse of store_codes: codes [rows, count]."""
    return unpack_codes(qdata, count) if codebook_size <= 16 else untile_codes(qdata, rows)


def tile_codes(codes: torch.Tensor) -> torch.Tensor:
    """[N, J] -> [ceil(N/64), J, 64]: per tile of 64 rows, position-major (rows past N zero)."""
    n, count = codes.shape
    padded = torch.nn.functional.pad(codes, (0, 0, 0, -n % TILE_ROWS))
    return padded.reshape(-1, TILE_ROWS, count).transpose(1, 2).contiguous()


def untile_codes(qdata: torch.Tensor, rows: int) -> torch.Tensor:
    """Inverse of tile_codes: the first `rows` rows, [rows, J]."""
    return qdata.transpose(1, 2).reshape(-1, qdata.shape[1])[:rows]


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """[N, J] codes < 16 -> [N, ceil(J/2)] bytes: code 2i in the low nibble of byte i, 2i+1 in the high."""
    if codes.shape[1] % 2:
        codes = torch.nn.functional.pad(codes, (0, 1))
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()


def unpack_codes(qdata: torch.Tensor, count: int) -> torch.Tensor:
    """Inverse of pack_codes: the first `count` codes of each row."""
    return torch.stack([qdata & 0xF, qdata >> 4], dim=2).reshape(qdata.shape[0], -1)[:, :count]


def dequantize_vector(
    qdata: torch.Tensor, scale: torch.Tensor, codebook: torch.Tensor, group_size: int, in_features: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The reference dequantization: W[n, j·d + t] = scale[n] · codebook[n // group_size, code[n, j], t]."""
    groups, size, d = codebook.shape
    n = scale.shape[0]
    codes = stored_codes_to_rows(qdata, size, n, in_features // d)
    rows = torch.arange(n, device=qdata.device)
    group = rows // group_size if group_size else torch.zeros_like(rows)
    w = codebook[group.unsqueeze(1), codes.long()]  # [N, J, d]
    return (w.reshape(n, in_features) * scale).to(dtype).contiguous()
