"""Logarithmic (sign + power-of-two) quantization of a weight matrix W[N, K].

A b-bit code is a sign bit (bit b-1) and a magnitude code c in 0..L, L = 2^(b-1) - 1: c = 0 is an
exact zero, c >= 1 the level 2^-(c-1). Ŵ = ±scale · 2^-(c-1), so the levels of a row (or group) are
scale · 2^-e for e in 0..L-1. The scale is max|w| · 2^-log_offset: with log_offset = 0 the largest
level is max|w| exactly; 0 < log_offset < 1 shifts the whole grid down by that fraction of an octave
(the largest weights saturate at the top level, the bulk gets a finer fit).

Rounding: a magnitude r = |w| / scale within the levels goes to the nearest level in the log domain
(2^-e for e = round(-log2 r), the threshold between 2^-e and 2^-(e+1) is their geometric mean), so
|Ŵ - w| <= (√2 - 1)·|w|. Below the smallest level m = 2^-(L-1) it goes to 0 or m, whichever is nearer
(a tie goes to m); above the top level (log_offset > 0) it saturates.

Storage is that of `torchlite.numerics.linear` without an offset: codes packed two per byte in the
block layout (bits <= 4), one uint8 per code otherwise; K zero-padded to the block (code 0 = 0.0).
`scale`: float32 [1, 1], [N, 1] or [N, Kp / group_size].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import TorchliteError
from .linear import block_size, expand, pack_nibbles, padded, unpack_nibbles

ROOT_HALF = 2**-0.5


@dataclass
class LogQuantizedWeight:
    qdata: torch.Tensor
    scale: torch.Tensor
    bits: int
    group_size: int  # 0 when not grouped
    in_features: int

    scheme = "log"
    zero = codebook = input_scale = None

    @property
    def out_features(self) -> int:
        return self.qdata.shape[0]

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_log(self.qdata, self.scale, self.bits, self.group_size, self.in_features, dtype)

    effective_weight = dequantize

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.qdata, self.scale))


def levels(bits: int) -> int:
    """L: the number of nonzero magnitudes of a b-bit log code."""
    return 2 ** (bits - 1) - 1


def code_values(bits: int) -> torch.Tensor:
    """The 2^bits values ±2^-(c-1) (0 for c = 0) a code stands for, before the scale: float32."""
    code = torch.arange(2**bits)
    mag, negative = code % 2 ** (bits - 1), code >> (bits - 1)
    value = torch.where(mag > 0, torch.ldexp(torch.ones(mag.shape), 1 - mag), 0.0)
    return torch.where(negative > 0, -value, value).float()


def magnitude_codes(r: torch.Tensor, bits: int) -> torch.Tensor:
    """Magnitude codes (int64, 0..L) of r = |w| / scale >= 0, rounded as described above."""
    top = levels(bits)
    mant, ex = torch.frexp(r)  # r = mant · 2^ex, mant in [0.5, 1): r lies between 2^(ex-1) and 2^ex
    e = torch.where(mant >= ROOT_HALF, -ex, 1 - ex).clamp_min(0).long()
    tail = torch.where(r >= 2.0 ** -(top - 1) / 2, top, 0)
    return torch.where(r == 0, 0, torch.where(e <= top - 1, e + 1, tail))


def quantize_log(
    weight: torch.Tensor, bits: int, group_size: int | None, granularity: str, log_offset: float = 0.0
) -> LogQuantizedWeight:
    """Log-quantize W[N, K] with one scale per tensor, output channel or group of `group_size` inputs."""
    if weight.dim() != 2:
        raise TorchliteError(f"quantize_log expects a 2-D weight [out, in], got shape {tuple(weight.shape)}")
    check_bits(bits)
    gs = group_size if granularity == "group" else 0
    w = padded(weight, bits, gs)
    return encode_log(w, log_scales(w, granularity, gs, log_offset), bits, gs, weight.shape[1])


def check_bits(bits: int) -> None:
    if not 3 <= bits <= 8:
        raise TorchliteError(f"log quantization takes bits in 3..8, got {bits}")


def log_scales(w: torch.Tensor, granularity: str, group_size: int, log_offset: float) -> torch.Tensor:
    """Scales [1, 1], [N, 1] or [N, Kp / group_size] of a padded W[N, Kp]: max|w| · 2^-log_offset (1 where 0)."""
    n, kp = w.shape
    view = {"tensor": w.reshape(1, 1, -1), "channel": w.reshape(n, 1, kp)}.get(granularity)
    view = w.reshape(n, kp // group_size, group_size) if view is None else view
    amax = view.abs().amax(dim=-1)
    return torch.where(amax > 0, amax * 2.0**-log_offset, torch.ones_like(amax)).contiguous()


def round_log(w: torch.Tensor, scale_cols: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes (int64) of W with the scales broadcast to its shape, rounded as described above."""
    mag = magnitude_codes(w.abs() / scale_cols, bits)
    return mag | ((w < 0) & (mag > 0)).long() << (bits - 1)


def encode_log(w: torch.Tensor, scale: torch.Tensor, bits: int, group_size: int, in_features: int) -> LogQuantizedWeight:
    """A padded W[N, Kp] log-quantized with the given scales, in the storage layout."""
    codes = round_log(w, expand(scale, w.shape[1]), bits).to(torch.uint8)
    qdata = pack_nibbles(codes, block_size(bits, group_size)) if bits <= 4 else codes.contiguous()
    return LogQuantizedWeight(qdata, scale, bits, group_size, in_features)


def dequantize_log(
    qdata: torch.Tensor, scale: torch.Tensor, bits: int, group_size: int, in_features: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The reference dequantization W[N, K] = value(code) · scale, padding dropped."""
    codes = unpack_nibbles(qdata, block_size(bits, group_size)) if bits <= 4 else qdata
    w = code_values(bits).to(qdata.device)[codes.long()] * expand(scale, codes.shape[1])
    return w[:, :in_features].to(dtype).contiguous()

