"""Linear (uniform) quantization of a weight matrix W[N, K] (out_features x in_features).

Storage layout (what the kernels in `torchlite.inductor` read):
- `block`: the unit along K that shares a scale and, for packed weights, a byte layout. It is the
  group size for per-group quantization and `PACK_BLOCK` for per-channel/per-tensor. K is zero-padded up to a multiple of `block`; padded weights dequantize
  to exactly 0, so kernels may read them against zero-padded activations.
- 5-8 bits: one value per byte, int8 for symmetric, uint8 (with a zero point) for asymmetric.
- 2-4 bits: two values per byte, uint8. Inside every block of P elements, byte j holds element j
  in its low nibble and element j + P/2 in its high nibble, so a kernel unpacking the low (high)
  nibbles of P/2 consecutive bytes meets P/2 *consecutive* activations: contiguous vector loads.
  Symmetric values are stored with an offset of 8 (nibble = q + 8).
- `scale`: float32, shape [1, 1] (tensor), [N, 1] (channel) or [N, Kp / block] (group);
  `zero`: uint8 of the same shape, or None when symmetric.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import TorchliteError

PACK_BLOCK = 64  # K-block (padding unit and nibble layout) when weights are not grouped


@dataclass
class QuantizedWeight:
    qdata: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None
    bits: int
    group_size: int  # 0 when not grouped
    in_features: int
    input_scale: torch.Tensor | None = None  # AWQ: the layer computes (x * input_scale) Ŵᵀ

    scheme = "linear"
    codebook = None

    @property
    def out_features(self) -> int:
        return self.qdata.shape[0]

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The stored matrix Ŵ (of W / input_scale when there is an input scale)."""
        return dequantize_weight(self.qdata, self.scale, self.zero, self.bits, self.group_size, self.in_features, dtype)

    def effective_weight(self) -> torch.Tensor:
        """What the layer multiplies x by: Ŵ · diag(input_scale), float32 [N, K]."""
        w = self.dequantize()
        return w if self.input_scale is None else w * self.input_scale

    @property
    def nbytes(self) -> int:
        parts = (self.qdata, self.scale, self.zero, self.input_scale)
        return sum(t.numel() * t.element_size() for t in parts if t is not None)


def block_size(bits: int, group_size: int) -> int:
    if group_size:
        return group_size
    return PACK_BLOCK


def padded_in_features(in_features: int, bits: int, group_size: int) -> int:
    b = block_size(bits, group_size)
    return -(-in_features // b) * b


def storage_dtype(bits: int, symmetric: bool) -> torch.dtype:
    """int8 for symmetric 5-8 bit values, uint8 for everything else (packed nibbles, zero points)."""
    return torch.int8 if bits > 4 and symmetric else torch.uint8


def storage_shape(out_features: int, in_features: int, bits: int, group_size: int) -> tuple[int, int]:
    kp = padded_in_features(in_features, bits, group_size)
    return out_features, kp // 2 if bits <= 4 else kp


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer range of the quantized values (symmetric is restricted: -(2^(b-1)-1)..2^(b-1)-1)."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        return -qmax, qmax
    return 0, 2**bits - 1


def check_finite(weight: torch.Tensor, name: str) -> None:
    if not torch.isfinite(weight).all():
        bad = (~torch.isfinite(weight)).sum().item()
        raise TorchliteError(
            f"weight of {name!r} has {bad} NaN/Inf value(s); fix the weights or exclude the layer "
            f"(exclude=({name!r},) in the pass's config) before compressing"
        )


def quantize_weight(
    weight: torch.Tensor, bits: int, group_size: int | None, symmetric: bool, granularity: str
) -> QuantizedWeight:
    """Quantize W[N, K]: Δ = max|w| / (2^(bits-1) - 1), q = round(w / Δ) (symmetric), or
    Δ = (max - min) / (2^bits - 1), z = round(-min / Δ), q = round(w / Δ) + z (asymmetric)."""
    if weight.dim() != 2:
        raise TorchliteError(f"quantize_weight expects a 2-D weight [out, in], got shape {tuple(weight.shape)}")
    gs = group_size if granularity == "group" else 0
    w = padded(weight, bits, gs)
    scale, zero = scales_for(w, bits, symmetric, granularity, gs)
    return encode(round_to_grid(w, scale, zero, bits, symmetric), scale, zero, bits, gs, weight.shape[1])


def padded(weight: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """W as float32 [N, Kp], zero-padded to the storage block."""
    k = weight.shape[1]
    w = weight.detach().float()
    kp = padded_in_features(k, bits, group_size)
    return torch.nn.functional.pad(w, (0, kp - k)) if kp != k else w


def scales_for(w: torch.Tensor, bits: int, symmetric: bool, granularity: str, group_size: int):
    """(scale, zero) of a padded W[N, Kp]: shapes [1, 1], [N, 1] or [N, Kp/group]; zero None if symmetric."""
    n, kp = w.shape
    if granularity == "tensor":
        view = w.reshape(1, 1, -1)
    elif granularity == "channel":
        view = w.reshape(n, 1, kp)
    else:
        view = w.reshape(n, kp // group_size, group_size)
    qmin, qmax = qrange(bits, symmetric)
    if symmetric:
        scale = view.abs().amax(dim=-1) / qmax
        return torch.where(scale > 0, scale, torch.ones_like(scale)).contiguous(), None
    lo, hi = view.amin(dim=-1).clamp(max=0), view.amax(dim=-1).clamp(min=0)
    scale = (hi - lo) / (qmax - qmin)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).contiguous()
    return scale, torch.clamp(torch.round(-lo / scale), qmin, qmax).to(torch.uint8).contiguous()


def expand(t: torch.Tensor, columns: int) -> torch.Tensor:
    """A per-tensor/channel/group parameter [N or 1, G] broadcast to [N or 1, columns]."""
    return t.float().repeat_interleave(columns // t.shape[1], dim=1)


def round_to_grid(w, scale, zero, bits: int, symmetric: bool) -> torch.Tensor:
    """Integer codes q of W (float32, same shape): round(w / Δ) (+ z), clamped to the range."""
    qmin, qmax = qrange(bits, symmetric)
    q = torch.round(w / expand(scale, w.shape[1]))
    if zero is not None:
        q = q + expand(zero, w.shape[1])
    return torch.clamp(q, qmin, qmax)


def from_grid(q, scale, zero) -> torch.Tensor:
    """(q - z) * Δ for codes q [N, C] whose parameters cover exactly C columns."""
    if zero is not None:
        q = q - expand(zero, q.shape[1])
    return q * expand(scale, q.shape[1])


def encode(q: torch.Tensor, scale, zero, bits: int, group_size: int, in_features: int) -> QuantizedWeight:
    """Store integer codes q [N, Kp] (as float or int) in the layout described above."""
    symmetric = zero is None
    if bits <= 4:
        stored = q + 8 if symmetric else q
        qdata = pack_nibbles(stored.to(torch.uint8), block_size(bits, group_size))
    else:
        qdata = q.to(storage_dtype(bits, symmetric)).contiguous()
    return QuantizedWeight(qdata, scale, zero, bits, group_size, in_features)


def pack_nibbles(values: torch.Tensor, block: int) -> torch.Tensor:
    """[N, Kp] uint8 values < 16 -> [N, Kp/2] bytes, in the block layout described above."""
    n, kp = values.shape
    v = values.reshape(n, kp // block, 2, block // 2)
    return (v[:, :, 0] | (v[:, :, 1] << 4)).reshape(n, kp // 2).contiguous()


def unpack_nibbles(packed: torch.Tensor, block: int) -> torch.Tensor:
    """Inverse of pack_nibbles: [N, Kp/2] bytes -> [N, Kp] uint8 values."""
    n, half_kp = packed.shape
    p = packed.reshape(n, half_kp * 2 // block, 1, block // 2)
    return torch.cat([p & 0xF, p >> 4], dim=2).reshape(n, half_kp * 2)


def dequantize_weight(
    qdata: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor | None,
    bits: int,
    group_size: int,
    in_features: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The reference dequantization: W[N, K] = (q - z) * Δ, padding dropped."""
    if bits <= 4:
        q = unpack_nibbles(qdata, block_size(bits, group_size)).to(torch.float32)
        if zero is None:
            q = q - 8
    else:
        q = qdata.to(torch.float32)
    return from_grid(q, scale, zero)[:, :in_features].to(dtype).contiguous()
