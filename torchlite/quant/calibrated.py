"""Calibration-based weight quantization: GPTQ and AWQ-style activation-aware scaling.

Both read the statistics of a layer's inputs X (`InputStats`: H = XᵀX and mean |x| per feature) and
minimise the layer's output error on them, ‖(W − Ŵ) Xᵀ‖² = tr(Δ H Δᵀ), rather than the weight error.
Both are never worse than round-to-nearest (RTN) on the calibration data: GPTQ keeps, row by row,
whichever of its result and RTN's has the smaller output error (rows are independent in that
error); AWQ's search includes the unscaled weight.
"""
from __future__ import annotations

import torch

from ..calibration import InputStats, activation_scale
from .linear import QuantizedWeight, encode, expand, padded, qrange, quantize_weight, scales_for

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


def gptq(
    weight: torch.Tensor, stats: InputStats, bits: int, group_size: int | None, symmetric: bool, granularity: str,
    damp: float = 0.01, act_order: bool = False, block: int = 128,
) -> QuantizedWeight:
    """GPTQ (Frantar et al., 2022): quantize columns in order, spreading each column's rounding error
    over the columns not yet quantized through the inverse Hessian's Cholesky factor.

    damp: fraction of mean(diag H) added to the diagonal. act_order: columns in order of decreasing
    H_ii (group scales are then fixed up front from the unquantized weights, as "static groups").
    """
    gs = group_size if granularity == "group" else 0
    w0 = padded(weight, bits, gs)
    n, kp = w0.shape
    h = _padded_hessian(stats, kp, damp)
    perm = torch.argsort(h.diagonal(), descending=True) if act_order else torch.arange(kp)
    inv_perm = torch.argsort(perm)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h[perm][:, perm])), upper=True).float()
    static = act_order or granularity != "group"
    scale, zero = scales_for(w0, bits, symmetric, granularity, gs)
    scale_cols, zero_cols = expand(scale, kp), None if zero is None else expand(zero, kp)
    w = w0[:, perm].clone()
    q = torch.zeros_like(w)
    qmin, qmax = qrange(bits, symmetric)
    for start in range(0, kp, block):
        end = min(start + block, kp)
        err = torch.zeros(n, end - start)
        for i in range(start, end):
            col = int(perm[i])
            if not static and col % gs == 0:  # a new group: its scale from the weights as updated so far
                g = col // gs
                s, z = scales_for(w[:, i : i + gs], bits, symmetric, "channel", 0)
                scale[:, g], scale_cols[:, col : col + gs] = s[:, 0], s
                if zero is not None:
                    zero[:, g], zero_cols[:, col : col + gs] = z[:, 0], z.float()
            s_col = scale_cols[:, col] if scale_cols.shape[0] == n else scale_cols[0, col].expand(n)
            z_col = 0 if zero_cols is None else (zero_cols[:, col] if zero_cols.shape[0] == n else zero_cols[0, col])
            codes = torch.clamp(torch.round(w[:, i] / s_col) + z_col, qmin, qmax)
            q[:, i] = codes
            e = (w[:, i] - (codes - z_col) * s_col) / u[i, i]
            w[:, i:end] -= e[:, None] * u[i, i:end][None, :]
            err[:, i - start] = e
        w[:, end:] -= err @ u[start:end, end:]
    codes = q[:, inv_perm]
    result = encode(codes, scale, zero, bits, gs, weight.shape[1])
    return _keep_better_rows(weight, stats, result, quantize_weight(weight, bits, group_size, symmetric, granularity))


def _keep_better_rows(weight, stats, a: QuantizedWeight, b: QuantizedWeight) -> QuantizedWeight:
    """Per output row, the quantization (codes and scales) of `a` or `b` with less output error."""
    if a.scale.shape[0] != weight.shape[0]:  # one per-tensor scale: rows are not independent
        ea, eb = (row_errors(weight, x.dequantize(), stats.covariance).sum() for x in (a, b))
        return a if ea <= eb else b
    take_b = row_errors(weight, b.dequantize(), stats.covariance) < row_errors(weight, a.dequantize(), stats.covariance)
    pick = lambda x, y: None if x is None else torch.where(take_b[:, None], y, x)  # noqa: E731
    return QuantizedWeight(pick(a.qdata, b.qdata), pick(a.scale, b.scale), pick(a.zero, b.zero), a.bits, a.group_size, a.in_features)


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
