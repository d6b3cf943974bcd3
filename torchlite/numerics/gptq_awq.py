"""Calibration-based weight quantization: GPTQ (for linear, log and vector codes) and AWQ-style
activation-aware scaling.

Both read the statistics of a layer's inputs X (`InputStats`: H = XᵀX and mean |x| per feature) and
minimise the layer's output error on them, ‖(W − Ŵ) Xᵀ‖² = tr(Δ H Δᵀ), rather than the weight error.
Both are never worse than round-to-nearest (RTN) on the calibration data: GPTQ keeps, row by row,
whichever of its result and RTN's has the smaller output error (rows are independent in that
error); AWQ's search includes the unscaled weight.
"""
from __future__ import annotations

import dataclasses

import torch

from .stats import InputStats, activation_scale
from .linear import QuantizedWeight, encode, expand, padded, qrange, quantize_weight, scales_for
from .log import LogQuantizedWeight, check_bits, code_values, encode_log, log_scales, round_log
from .vector import VectorQuantizedWeight, encode_vector, nearest_codes, quantize_vector, store_codes

AWQ_ALPHAS = tuple(i / 20 for i in range(21))  # alpha = 0: no scaling (plain RTN)


def row_errors(weight: torch.Tensor, approx: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """Per output row, δ H δᵀ for δ = W − Ŵ (float64 [N])."""
    d = (weight.double() - approx.double())
    return ((d @ gram) * d).sum(1)


def _padded_hessian(stats: InputStats, kp: int, damp: float) -> torch.Tensor:
    k = stats.in_features
    h = torch.eye(kp, dtype=torch.float64)
    h[:k, :k] = stats.covariance
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    h += damp * h.diagonal().mean() * torch.eye(kp, dtype=torch.float64)
    return h


def gptq_sweep(w0: torch.Tensor, h: torch.Tensor, width: int, quantize, act_order: bool, block: int = 128) -> torch.Tensor:
    """The GPTQ sweep (Frantar et al., 2022) over W [N, Kp] in units of `width` adjacent columns (1 for scalar
    codes, d for d-dimensional sub-vectors): each unit is quantized from the weights as updated so far, and
    each of its columns' error is spread over the columns not yet quantized through the Cholesky factor of
    H⁻¹. Units go left to right or, with act_order, by decreasing Σ H_ii over the unit.

    quantize(unit, rest) -> the unit's dequantized values [N, width]; `rest` holds the current weights from the
    unit's first column on, in sweep order. Returns Ŵ [N, Kp] in the original column order."""
    n, kp = w0.shape
    units = kp // width
    order = torch.argsort(h.diagonal().reshape(units, width).sum(1), descending=True) if act_order else torch.arange(units)
    perm = (order[:, None] * width + torch.arange(width)).reshape(-1)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h[perm][:, perm])), upper=True).float()
    w = w0[:, perm].clone()
    approx = torch.empty_like(w)
    block = max(width, block // width * width)
    for start in range(0, kp, block):
        end = min(start + block, kp)
        err = torch.zeros(n, end - start)
        for i in range(start, end, width):
            q = quantize(int(order[i // width]), w[:, i:])
            approx[:, i : i + width] = q
            for c in range(i, i + width):
                e = (w[:, c] - q[:, c - i]) / u[c, c]
                w[:, c:end] -= e[:, None] * u[c, c:end][None, :]
                err[:, c - start] = e
        w[:, end:] -= err @ u[start:end, end:]
    return approx[:, torch.argsort(perm)]


def gptq(
    weight: torch.Tensor, stats: InputStats, bits: int, group_size: int | None, symmetric: bool, granularity: str,
    damp: float = 0.01, act_order: bool = False, block: int = 128,
) -> QuantizedWeight:
    """GPTQ for linear (integer) codes: columns quantized one at a time by `gptq_sweep`.

    damp: fraction of mean(diag H) added to the diagonal. act_order: columns in order of decreasing
    H_ii (group scales are then fixed up front from the unquantized weights, as "static groups"); without
    it, a group's scale comes from its weights as updated when the sweep reaches its first column.
    """
    gs = group_size if granularity == "group" else 0
    w0 = padded(weight, bits, gs)
    n, kp = w0.shape
    static = act_order or granularity != "group"
    scale, zero = scales_for(w0, bits, symmetric, granularity, gs)
    scale_cols, zero_cols = expand(scale, kp), None if zero is None else expand(zero, kp)
    q = torch.zeros_like(w0)
    qmin, qmax = qrange(bits, symmetric)

    def quantize(col: int, rest: torch.Tensor) -> torch.Tensor:
        if not static and col % gs == 0:  # a new group: its scale from the weights as updated so far
            g = col // gs
            s, z = scales_for(rest[:, :gs], bits, symmetric, "channel", 0)
            scale[:, g], scale_cols[:, col : col + gs] = s[:, 0], s
            if zero is not None:
                zero[:, g], zero_cols[:, col : col + gs] = z[:, 0], z.float()
        s_col = scale_cols[:, col] if scale_cols.shape[0] == n else scale_cols[0, col].expand(n)
        z_col = 0 if zero_cols is None else (zero_cols[:, col] if zero_cols.shape[0] == n else zero_cols[0, col])
        q[:, col] = torch.clamp(torch.round(rest[:, 0] / s_col) + z_col, qmin, qmax)
        return ((q[:, col] - z_col) * s_col)[:, None]

    gptq_sweep(w0, _padded_hessian(stats, kp, damp), 1, quantize, act_order, block)
    result = encode(q, scale, zero, bits, gs, weight.shape[1])
    return _keep_better_rows(weight, stats, result, quantize_weight(weight, bits, group_size, symmetric, granularity))


def gptq_log(
    weight: torch.Tensor, stats: InputStats, bits: int, group_size: int | None, granularity: str, log_offset: float = 0.0,
    damp: float = 0.01, act_order: bool = False,
) -> LogQuantizedWeight:
    """GPTQ for log codes: the scales of RTN (`quantize_log`), columns rounded one at a time in the log
    domain by `gptq_sweep`; never worse than RTN on the calibration data."""
    check_bits(bits)
    gs = group_size if granularity == "group" else 0
    w0 = padded(weight, bits, gs)
    n, kp = w0.shape
    scale = log_scales(w0, granularity, gs, log_offset)
    scale_cols, values = expand(scale, kp).expand(n, kp), code_values(bits)

    def quantize(col: int, rest: torch.Tensor) -> torch.Tensor:
        return (values[round_log(rest[:, :1], scale_cols[:, col : col + 1], bits)] * scale_cols[:, col : col + 1])

    approx = gptq_sweep(w0, _padded_hessian(stats, kp, damp), 1, quantize, act_order)
    result = encode_log(approx, scale, bits, gs, weight.shape[1])  # exact: every value is a level
    return _keep_better_rows(weight, stats, result, encode_log(w0, scale, bits, gs, weight.shape[1]))  # RTN


def gptq_vector(
    weight: torch.Tensor, stats: InputStats, vector_dim: int, codebook_size: int, group_size: int | None = None,
    damp: float = 0.01, act_order: bool = False,
) -> VectorQuantizedWeight:
    """GPTQ for vector codes (as GPTVQ, van Baalen et al., 2024, with plain k-means codebooks): the codebooks
    and row scales of `quantize_vector`, sub-vectors coded one at a time with their nearest centroid by
    `gptq_sweep` (units of vector_dim columns); never worse than nearest-centroid coding on the calibration data."""
    rtn = quantize_vector(weight, vector_dim, codebook_size, group_size)
    n, k = weight.shape
    group = torch.arange(n) // (rtn.group_size or n)

    def quantize(unit: int, rest: torch.Tensor) -> torch.Tensor:
        codes = nearest_codes(rest[:, :vector_dim], rtn.scale, rtn.codebook, rtn.group_size)[:, 0]
        return rtn.codebook[group, codes] * rtn.scale

    approx = gptq_sweep(weight.detach().float(), _padded_hessian(stats, k, damp), vector_dim, quantize, act_order)
    result = encode_vector(approx, rtn.scale, rtn.codebook, rtn.group_size)  # exact: every sub-vector is a centroid
    return _keep_better_rows(weight, stats, result, rtn)


def _keep_better_rows(weight, stats, a, b):
    """Per output row, the codes and scales of quantization `a` or `b` (of one scheme, sharing any codebook)
    with less output error; with one scale per tensor the rows are not independent, and the better whole wins."""
    if a.scale.shape[0] != weight.shape[0]:
        ea, eb = (row_errors(weight, x.dequantize(), stats.covariance).sum() for x in (a, b))
        return a if ea <= eb else b
    take_b = row_errors(weight, b.dequantize(), stats.covariance) < row_errors(weight, a.dequantize(), stats.covariance)
    pick = lambda x, y: torch.where(take_b[:, None], y, x)  # noqa: E731
    if a.scheme == "vector":  # codes picked per row, then stored in their layout again
        qdata = store_codes(pick(a.codes(), b.codes()), a.codebook.shape[1])
    else:
        qdata = pick(a.qdata, b.qdata)
    changes = {"qdata": qdata, "scale": pick(a.scale, b.scale)}
    if a.zero is not None:
        changes["zero"] = pick(a.zero, b.zero)
    return dataclasses.replace(a, **changes)


def awq(
    weight: torch.Tensor, stats: InputStats, bits: int, group_size: int | None, symmetric: bool, granularity: str,
) -> QuantizedWeight:
    """AWQ-style (Lin et al., 2023) activation-aware scaling: s = mean|x|^alpha, normalised to
    geometric mean 1, protects the weights that meet large activations; alpha is searched over
    AWQ_ALPHAS for the least output error on the calibration data. The result stores W·diag(s)
    quantized and input_scale = 1/s (None when alpha = 0 wins)."""
    w = weight.detach().float()
    best = None
    for alpha in AWQ_ALPHAS:
        s = activation_scale(stats, alpha).float()
        qw = quantize_weight(w * s, bits, group_size, symmetric, granularity)
        err = float(row_errors(w, qw.dequantize() / s, stats.covariance).sum())
        if best is None or err < best[0]:
            best = (err, alpha, qw, s)
    _, alpha, qw, s = best
    if alpha:
        qw.input_scale = (1.0 / s).contiguous()
    return qw



def smoothquant(weight: torch.Tensor, stats: InputStats, alpha: float = 0.5) -> QuantizedWeight:
    """SmoothQuant (Xiao et al., 2022) for W8A8: s_j = max|x_j|^alpha / max|W_:,j|^(1 - alpha) moves
    the activation outliers into the weights; W·diag(s) is quantized to int8 per channel and the
    layer computes (x / s) Ŵᵀ, whose activations quantize with less error."""
    w = weight.detach().float()
    s = (stats.abs_max.clamp_min(1e-5).pow(alpha) / w.abs().amax(0).clamp_min(1e-5).pow(1 - alpha)).clamp_min(1e-5)
    qw = quantize_weight(w * s, 8, None, True, "channel")
    qw.input_scale = (1.0 / s).contiguous()
    return qw
