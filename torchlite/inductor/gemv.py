"""The hand-written decode kernel for linears over 8-bit and 4-bit weight codes, on every kernel tier.

Inductor's vectorizer turns each weight into float32 one lane at a time (widen, mask, shift, convert,
offset, multiply, add), which caps a generated reduction at about half (int8) or a third (int4) of
the memory roofline here. `csrc/gemv.cpp` keeps the weights in bytes instead: it maps 4-bit codes
to bytes with one table shuffle, quantizes the activations per call into int8 parts (each codes what
the previous ones leave over; see `weight_only_parts`) and multiplies them with integer dot products
(vpdpbusd on the VNNI tiers, vpmaddubsw on AVX2, plain C++ elsewhere: `tiers`). Table values cover
int2..int4 (symmetric or with zero points), int8 and log codes (±2^-e, exact as integers times
2^(L-1)). W8A8 (`torchlite::qlinear_a8`) is the same kernel with one part: the op's own per-token (or
static) int8 activations.

The call is a `cpp_kernel.CppKernelCall` node: compiled by Inductor's toolchain and called from the
compiled graph like one of its generated kernels. The lowerings use it where a kernel tier is
selected, the activations are float32 and the rows few and static, and the layout comes in whole
64-weight steps (`gemv_usable`, then `gemv_sums` builds the call); everywhere else they keep the
generated reduction. Every hand-written kernel family follows that pair: `<family>_usable(...) -> bool`,
then `<family>_sums(...)`, which assumes it (here; `sparse.nm_gemv_*`, `vector.vq_*`). This module
also holds what the integer-dot-product kernels share: the #defines of `csrc/activation_parts.h`
(`with_activation_parts`) and how many activation parts a call gets.
"""
from __future__ import annotations

import torch

from .cpp_kernel import call, kernel_source, takes_decode_call

ARG_TYPES = ["const float*", "const uint8_t*", "const float*", "const uint8_t*", "const float*", "float*"]
STEP = 64  # weights per step of the kernel


def gemv_usable(x2, m_rows, kp: int, block: int, group: int) -> bool:
    """Whether `gemv_sums` can take this call (otherwise the generated reduction is used)."""
    group = group or kp
    layout = group == 32 or (block % STEP == 0 and group % block == 0)  # groups of 32: two per step
    return bool(takes_decode_call(x2, m_rows)) and kp % STEP == 0 and layout


def byte_table(values: torch.Tensor) -> tuple[list[int], float, float]:
    """(bytes u, offset, value_scale) with value = (u - offset) * value_scale for each 4-bit code's value."""
    value_scale = 1.0
    while not torch.equal(values / value_scale, torch.round(values / value_scale)):
        value_scale /= 2
        if value_scale < 2.0**-16:
            raise ValueError(f"code values {values.tolist()} are not small multiples of a power of two")
    ints = torch.round(values / value_scale)
    offset = -float(ints.min()) if ints.min() < 0 else 0.0
    u = (ints + offset).to(torch.int64)
    if u.max() > 255:
        raise ValueError(f"code values {values.tolist()} do not fit one byte each")
    return u.tolist() + [0] * (16 - len(u)), offset, value_scale


def with_activation_parts(defines: dict, *, in_features: int, kp: int, parts: int, static_x_scale: bool = False,
                          k_after: str | None = "N_OUT") -> dict:
    """An integer-dot-product kernel's own #defines (in order) plus those of csrc/activation_parts.h: K_IN (floats per
    activation row) and KP (K_IN zero-padded) right after `k_after` (None: at the end), then PARTS and
    STATIC_X_SCALE at the end. The order is part of the kernel's source, on which Inductor keys it."""
    out = {}
    for key, value in defines.items():
        out[key] = value
        if key == k_after:
            out |= {"K_IN": in_features, "KP": kp}
    return out | {"K_IN": in_features, "KP": kp, "PARTS": parts, "STATIC_X_SCALE": int(static_x_scale)}


def weight_only_parts(narrow_codes: bool) -> int:
    """Int8 parts the activations of a weight-only call are split into (activation_parts.h). Two (~15 bits)
    leave at most max|x| / (4·127²) per activation, three orders of magnitude below the rounding of codes
    of 4 bits or fewer and of VQ, and are 1.06-1.22x faster than three; next to 8-bit codes that error
    shows (SmolLM2's logits 0.04 off the eager oracle's through 30 layers, against < 1e-3 with three:
    ~22 bits, float32-like), so those get three."""
    return 2 if narrow_codes else 3


def gemv_sums(x2, qdata, scale, zero, *, in_features: int, kp: int, nibbles: bool, block: int, group: int,
              table: torch.Tensor | None, flip_sign: bool, parts: int | None = None, x_scale=None):
    """sums[n, m] = Σ_k x[m, k]·Ŵ[n, k] as float32 [N, M] from `csrc/gemv.cpp` (where `gemv_usable`),
    scales included (per group, per channel or per tensor). `parts`: int8 parts of the activations (1: W8A8,
    with the static activation scale `x_scale` [1, 1] if given, else per token; None: weight-only,
    `weight_only_parts`)."""
    n_out, m_rows = qdata.get_size()[0], x2.get_size()[0]
    parts = weight_only_parts(nibbles) if parts is None else parts
    lut, offset, value_scale = byte_table(table) if nibbles else ([0] * 16, 128.0 if flip_sign else 0.0, 1.0)
    rows, cols = (int(s) for s in scale.get_size())
    defines = {
        "M_ROWS": int(m_rows), "N_OUT": int(n_out), "NIBBLES": int(nibbles), "BLOCK": block, "GROUP": group or kp,
        "SCALED": int(group > 0), "SCALE_ROWS": rows, "SCALE_COLS": cols, "HAS_ZERO": int(zero is not None),
        "OFFSET": f"{offset}f", "FLIP_SIGN": int(flip_sign), "VALUE_SCALE": repr(value_scale),
        "LUT_VALUES": ", ".join(map(str, lut)),
    }
    defines = with_activation_parts(
        defines, in_features=in_features, kp=kp, parts=parts, static_x_scale=x_scale is not None
    )
    # pointers the kernel never reads (no zero points, no static scale) get the codes / scales again
    inputs = [x2, qdata, scale, zero if zero is not None else qdata, x_scale if x_scale is not None else scale]
    return call(inputs, [n_out, m_rows], kernel_source("gemv.cpp", "activation_parts.h"), defines, ARG_TYPES, "gemv")
