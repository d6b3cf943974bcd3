"""N:M structured sparsity: of every run of m consecutive input features, n are kept.

Storage (`NMWeight`, what `torchlite::nm_linear` and its Inductor lowering read), for W[out, in]
with G = in / m groups per row, in blocks of B = 16 consecutive groups (B = G when 16 does not
divide G). Inside a block, per-group entries are slot-major: entry s of group g sits in column
(g // B) * S * B + s * B + g % B (S entries per group), so one vector of B consecutive groups of
one slot is a contiguous load, and a row is read as one sequential stream.
- `values` [out, n * G] (S = n): the kept values, slot j = the j-th kept one in ascending position
  order. Float dtype of the weight, or int8 codes with a per-row float32 `scale` [out, 1]
  (symmetric: code = round(w / scale), scale = max|w| / 127 over the row's kept values).
- `indices` [out, planes * G] uint8 (S = planes; 2:4 below): where each kept value sits in its group.
  Positions are distinct and ascending, so slot j's position is j + o_j with an offset
  0 <= o_j <= m - n; the offsets are stored, `offset_bits(n, m)` bits each (2 at 1:4, 3 at 2:8 and
  4:8), as many per byte as fit, from the top bit down: plane q holds slots q * per_byte ..,
  slot j's offset in bits [8 - b * (s + 1), 8 - b * s), s = j % per_byte. At 4:8 that is two bytes
  per group. A kernel turns a bit into a lane mask with one shift to the sign bit and a compare.
  2:4 has its own 4-bit code with one bit fewer than two offsets, which lets its kernels decide both
  slots with three masks instead of four: bit 3 = (p0 == 0), bit 2 = (p0, p1) in {(0,2), (1,2),
  (1,3)}, bit 1 = (p1 == 3); then p0 = 0 if bit 3 else 1 if bit 2 else 2, p1 = 3 if bit 1 else 2 if
  bit 2 else 1. Two codes share a byte: per chunk of 32 groups, byte i holds group i in its low
  nibble and group 16 + i in its high one (`pair_code_column`), [out, `index_columns`] in all: 1/8
  byte per weight, so 2:4 int8 stores 0.625 bytes per weight.
A group with fewer than n nonzeros keeps zeros as values at distinct positions, so the dense
weight is exactly W[o, g * m + j + o_j] = value of slot j of group g.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, replace

import torch

from ..errors import TorchliteError

GROUP_BLOCK = 16  # groups per storage block: one float32 vector of AVX-512, the kernel's inner loop


def check_nm(n: int, m: int, in_features: int) -> None:
    if not 0 < n < m:
        raise TorchliteError(f"N:M sparsity needs 0 < n < m, got n={n}, m={m} (e.g. n=2, m=4)")
    if in_features % m:
        raise TorchliteError(
            f"m={m} does not divide in_features={in_features}: choose m dividing {in_features} "
            f"or exclude this layer from N:M pruning"
        )


def offset_bits(n: int, m: int) -> int:
    """Bits of one stored offset (0..m-n)."""
    return max(1, math.ceil(math.log2(m - n + 1)))


def group_block(groups: int) -> int:
    """Groups per storage block: GROUP_BLOCK when it divides the groups, else all of them (one block)."""
    return GROUP_BLOCK if groups % GROUP_BLOCK == 0 else groups


def to_storage(t: torch.Tensor) -> torch.Tensor:
    """[out, G, s] (s slots or planes per group) -> [out, G * s]: blocks of B groups, slot-major inside."""
    out, g, s = t.shape
    b = group_block(g)
    return t.reshape(out, g // b, b, s).permute(0, 1, 3, 2).reshape(out, g * s).contiguous()


def from_storage(t: torch.Tensor, groups: int) -> torch.Tensor:
    """Inverse of to_storage: [out, G * s] -> [out, G, s]."""
    out, b = t.shape[0], group_block(groups)
    s = t.shape[1] // groups
    return t.reshape(out, groups // b, s, b).permute(0, 1, 3, 2).reshape(out, groups, s)


def pair_code_column(g, floordiv=operator.floordiv, mod=operator.mod):
    """(byte column, nibble 0 or 1) of group g's 2:4 code: g an int or an int64 tensor, or an Inductor
    index with Inductor's floor division and modulus."""
    return floordiv(g, 32) * 16 + mod(g, 16), mod(floordiv(g, 16), 2)


def index_columns(n: int, m: int, groups: int) -> int:
    """Bytes of `indices` per row."""
    if (n, m) == (2, 4):
        return (groups // 32) * 16 + min(groups % 32, 16)
    return index_layout(n, m)[1] * groups


def index_layout(n: int, m: int) -> tuple[int, int]:
    """(offsets per index byte, index planes = bytes per group)."""
    per_byte = 8 // offset_bits(n, m)
    return per_byte, -(-n // per_byte)


@dataclass
class NMWeight:
    values: torch.Tensor  # [out, n * G]: float, or int8 codes when `scale` is set
    indices: torch.Tensor  # [out, index_columns(n, m, G)] uint8
    scale: torch.Tensor | None  # [out, 1] float32 for int8 values
    n: int
    m: int
    in_features: int

    @property
    def out_features(self) -> int:
        return self.values.shape[0]

    @property
    def nbytes(self) -> int:
        parts = (self.values, self.indices, self.scale)
        return sum(t.numel() * t.element_size() for t in parts if t is not None)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean mask [out, in] keeping the n highest scores of each run of m consecutive inputs
    (ties: the lowest index wins)."""
    if scores.dim() != 2:
        raise TorchliteError(f"nm_mask expects 2-D scores [out, in], got shape {tuple(scores.shape)}")
    check_nm(n, m, scores.shape[1])
    if scores.isnan().any():
        raise TorchliteError("nm_mask got NaN scores; fix the scores (e.g. the weights they come from) first")
    groups = scores.reshape(scores.shape[0], -1, m)
    order = torch.argsort(groups, dim=-1, descending=True, stable=True)
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order[..., :n], True)
    return mask.reshape(scores.shape)


def pack_nm(weight: torch.Tensor, n: int, m: int, *, int8: bool = False) -> NMWeight:
    """Compress an N:M sparse W[out, in] (at most n nonzeros per group of m) into `NMWeight`."""
    if weight.dim() != 2 or not weight.is_floating_point():
        raise TorchliteError(f"pack_nm expects a 2-D float weight [out, in], got {tuple(weight.shape)} {weight.dtype}")
    out, k = weight.shape
    check_nm(n, m, k)
    groups = weight.detach().reshape(out, k // m, m)
    nonzero = groups != 0
    too_dense = (nonzero.sum(-1) > n).sum().item()
    if too_dense:
        raise TorchliteError(
            f"{too_dense} group(s) of {m} hold more than n={n} nonzeros: the weight is not {n}:{m} sparse; "
            f"apply nm_mask(scores, {n}, {m}) to it first"
        )
    # nonzeros first, then zeros, each by position; keep n of them in ascending position order
    rank = (~nonzero).to(torch.int64) * m + torch.arange(m, device=weight.device)
    positions = rank.argsort(dim=-1)[..., :n].sort(dim=-1).values  # [out, G, n]
    kept = groups.gather(-1, positions)
    scale = None
    if int8:
        amax = kept.float().abs().amax(dim=(1, 2)).reshape(out, 1)
        scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
        kept = torch.clamp(torch.round(kept.float() / scale.unsqueeze(-1)), -127, 127).to(torch.int8)
    values = to_storage(kept)
    return NMWeight(values, _pack_positions(positions, m), scale, n, m, k)


def pack_nm_codes(codes: torch.Tensor, scale: torch.Tensor, n: int, m: int) -> NMWeight:
    """`NMWeight` with int8 values from N:M sparse int8 codes [out, in] and their per-row scale
    (what per-channel int8 quantization of an N:M pruned weight stores: 0 stays 0)."""
    nmw = pack_nm(codes.float(), n, m)
    return replace(nmw, values=nmw.values.to(torch.int8), scale=scale.float().reshape(-1, 1))


def codes_packable(bits: int, zero, group_size: int, scale: torch.Tensor, out_features: int) -> bool:
    """Whether linear quantization codes can be stored as N:M int8 values (`pack_nm_codes`): 8-bit
    symmetric codes with one scale per output channel."""
    return bits == 8 and zero is None and not group_size and scale.shape[0] == out_features


def _pack_positions(positions: torch.Tensor, m: int) -> torch.Tensor:
    """[out, G, n] ascending positions -> [out, index_columns] uint8 codes (layout in the module docstring)."""
    out, g, n = positions.shape
    if (n, m) == (2, 4):
        p0, p1 = positions[..., 0], positions[..., 1]
        middle = (p0 == 1) | ((p0 == 0) & (p1 == 2))
        code = ((p0 == 0).to(torch.int64) << 3) | (middle.to(torch.int64) << 2) | ((p1 == 3).to(torch.int64) << 1)
        chunks = torch.nn.functional.pad(code, (0, -g % 32)).reshape(out, -1, 2, 16)
        packed = (chunks[:, :, 0] | (chunks[:, :, 1] << 4)).reshape(out, -1)
        return packed[:, : index_columns(n, m, g)].to(torch.uint8).contiguous()
    per_byte, planes = index_layout(n, m)
    bits, device = offset_bits(n, m), positions.device
    offsets = positions - torch.arange(n, device=device)
    padded = torch.nn.functional.pad(offsets, (0, planes * per_byte - n)).reshape(out, g, planes, per_byte)
    packed = (padded << (8 - bits * (torch.arange(per_byte, device=device) + 1))).sum(-1)  # [out, G, planes]
    return to_storage(packed.to(torch.uint8))


def positions_of(nmw: NMWeight) -> torch.Tensor:
    """The kept positions, int64 [out, G, n]."""
    out, g = nmw.out_features, nmw.in_features // nmw.m
    if (nmw.n, nmw.m) == (2, 4):
        column, nibble = pair_code_column(torch.arange(g, device=nmw.indices.device))
        code = (nmw.indices[:, column].to(torch.int64) >> (4 * nibble)) & 15  # [out, G]
        first, middle, last = ((code >> b) & 1 for b in (3, 2, 1))
        return torch.stack([(1 - first) * (2 - middle), 3 - (1 - last) * (2 - middle)], dim=-1)
    per_byte, planes = index_layout(nmw.n, nmw.m)
    packed = from_storage(nmw.indices, g).to(torch.int64)  # [out, G, planes]
    bits, device = offset_bits(nmw.n, nmw.m), packed.device
    shifts = 8 - bits * (torch.arange(per_byte, device=device) + 1)
    offsets = (packed.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)  # [out, G, planes, per_byte]
    return offsets.reshape(out, g, planes * per_byte)[..., : nmw.n] + torch.arange(nmw.n, device=device)


def unpack_nm(nmw: NMWeight, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The dense W[out, in]: the inverse of `pack_nm` (int8 values come back as codes * scale, float32)."""
    out, g = nmw.out_features, nmw.in_features // nmw.m
    kept = from_storage(nmw.values, g)
    if nmw.scale is not None:
        kept = kept.float() * nmw.scale.reshape(out, 1, 1)
    dense = kept.new_zeros(out, g, nmw.m).scatter_add_(-1, positions_of(nmw), kept)
    return dense.reshape(out, nmw.in_features).to(dtype or dense.dtype)
