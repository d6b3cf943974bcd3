"""The numerics of low-rank factorization: plain tensors in, plain tensors out (no FX).

W [out, in] is approximated by B [out, r] @ A [r, in] from the truncated SVD of a transformed
matrix M = W T (T invertible, [in, in]):
- "svd":    T = I, the truncation minimizes ||W - BA||_F.
- "asvd":   T = diag(mean|x|^alpha) (ASVD): input features that carry large activations weigh more.
- "whiten": T = C^(1/2) for the input second moment C = E[x^T x] (SVD-LLM): ||(W - BA) T||_F^2 is
            then exactly the layer's output error on the calibration data, and truncating the SVD
            of M minimizes it.
With M ≈ U_r S_r V_r^T: B = U_r S_r^(1/2) and A = S_r^(1/2) V_r^T T^-1 (the singular values are
split evenly, so both factors have similar ranges, which matters when they are quantized next).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .stats import InputStats, activation_scale, output_error
from ..errors import TorchliteError

ASVD_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # alpha = 0 is plain SVD: ASVD is never worse than it


@dataclass
class Decomposition:
    """The SVD of M = W T for one layer, in float64."""

    u: torch.Tensor  # [out, k]
    sigma: torch.Tensor  # [k], descending
    vh: torch.Tensor  # [k, in]
    t_inv: torch.Tensor | None  # T^-1 [in, in] (None: identity)
    dtype: torch.dtype

    @property
    def max_rank(self) -> int:
        return self.sigma.numel()

    def energy(self, rank: int) -> float:
        """Fraction of sum(sigma^2) kept by the first `rank` singular values."""
        s2 = self.sigma.square()
        return float(s2[:rank].sum() / s2.sum().clamp_min(1e-300))

    def rank_for_energy(self, energy: float) -> int:
        cum = self.sigma.square().cumsum(0) / self.sigma.square().sum().clamp_min(1e-300)
        return min(int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype)).item()) + 1, self.max_rank)

    def factors(self, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(A [rank, in], B [out, rank]) in the weight's dtype."""
        if not 1 <= rank <= self.max_rank:
            raise TorchliteError(f"rank {rank} is outside 1..{self.max_rank}")
        root = self.sigma[:rank].sqrt()
        a = root[:, None] * self.vh[:rank]
        if self.t_inv is not None:
            a = a @ self.t_inv
        b = self.u[:, :rank] * root
        return a.to(self.dtype).contiguous(), b.to(self.dtype).contiguous()


def _svd(m: torch.Tensor, t_inv, dtype) -> Decomposition:
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    return Decomposition(u, s, vh, t_inv, dtype)


def sqrt_and_inverse(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C^(1/2), C^(-1/2)) of a symmetric PSD matrix; eigenvalues below 1e-12 of the largest are clamped."""
    lam, q = torch.linalg.eigh(cov)
    lam = lam.clamp_min(lam.max().clamp_min(1e-300) * 1e-12)
    return (q * lam.sqrt()) @ q.T, (q * lam.rsqrt()) @ q.T


def decompose(weight: torch.Tensor, method: str, stats: InputStats | None = None, alpha: float = 0.5) -> Decomposition:
    """The decomposition `method` truncates. "asvd" uses `alpha`; "asvd"/"whiten" need `stats`."""
    w = weight.detach().double()
    if method == "svd":
        return _svd(w, None, weight.dtype)
    if stats is None:
        raise TorchliteError(f"factorization method {method!r} needs calibration statistics")
    if method == "asvd":
        s = activation_scale(stats, alpha)
        return _svd(w * s, torch.diag(1.0 / s), weight.dtype)
    if method == "whiten":
        root, inv_root = sqrt_and_inverse(stats.covariance)
        return _svd(w @ root, inv_root, weight.dtype)
    raise TorchliteError(f"unknown factorization method {method!r}")


def weight_error(weight: torch.Tensor, approx: torch.Tensor) -> float:
    """||W - W'||_F / ||W||_F."""
    w = weight.detach().double()
    return float((w - approx.detach().double()).norm() / w.norm().clamp_min(1e-300))


def best_asvd(weight: torch.Tensor, stats: InputStats, rank: int) -> tuple[Decomposition, float]:
    """The ASVD decomposition (alpha from ASVD_ALPHAS) with the least output error at `rank`."""
    best = None
    for alpha in ASVD_ALPHAS:
        dec = decompose(weight, "asvd", stats, alpha)
        a, b = dec.factors(rank)
        err = output_error(weight, b.double() @ a.double(), stats)
        if best is None or err < best[2]:
            best = (dec, alpha, err)
    return best[0], best[1]


def params(in_features: int, out_features: int, rank: int | None) -> int:
    """Weight parameters of a layer kept dense (rank None) or factored at `rank`."""
    return in_features * out_features if rank is None else rank * (in_features + out_features)


def max_paying_rank(in_features: int, out_features: int, min_saving: float) -> int:
    """The largest rank with r*(in+out) <= (1 - min_saving) * in*out (0 if none pays)."""
    return int((1 - min_saving) * in_features * out_features // (in_features + out_features))


def aligned(rank: int, multiple: int, mode: str, limit: int) -> int:
    """`rank` as a multiple of `multiple`, rounded "down", "up" or to the "nearest" one, at most `limit`
    (where that is above it, "nearest" rounds down and "up" keeps `rank`). A rank below `multiple` is
    kept as it is."""
    if multiple <= 1 or rank < multiple:
        return rank
    down = rank // multiple * multiple
    up = down if down == rank else down + multiple
    choice = {"down": down, "up": up, "nearest": up if 2 * rank >= down + up else down}[mode]
    if choice <= limit:
        return choice
    return rank if mode == "up" else down


def allocate_budget(
    spectra: list[tuple[int, int, torch.Tensor]], target: float, min_saving: float, multiple: int = 1
) -> list[int | None]:
    """Ranks (None: stays dense) whose total parameters are at most `target`.

    `spectra` holds (in, out, sigma) per layer. Rank unit i of a layer is worth sigma_i^2 / sum(sigma^2)
    (its share of the layer's output energy) per parameter it costs (in + out); units are kept in
    order of worth down to one global threshold, the highest-rank allocation that meets `target`.
    Each layer's rank is rounded to the nearest multiple of `multiple` (`aligned`) before its cost
    counts. A layer whose rank would not save `min_saving` of its parameters stays dense.
    """
    worth = [(s.square() / s.square().sum().clamp_min(1e-300)) / (i + o) for i, o, s in spectra]

    def ranks_at(threshold: float) -> list[int | None]:
        out = []
        for (i, o, _), w in zip(spectra, worth):
            pays = max_paying_rank(i, o, min_saving)
            r = aligned(max(1, int((w >= threshold).sum())), multiple, "nearest", pays)
            out.append(r if r <= pays else None)
        return out

    def cost(ranks) -> int:
        return sum(params(i, o, r) for (i, o, _), r in zip(spectra, ranks))

    thresholds = torch.cat(worth).unique().sort().values  # ascending: higher threshold, lower ranks
    if not len(thresholds) or cost(ranks_at(float("inf"))) > target:
        least = cost(ranks_at(float("inf")))
        raise TorchliteError(
            f"Factor.budget cannot be met: it asks for at most {target:,.0f} parameters, but the least these layers "
            f"can hold (rank 1 where factoring pays) is {least:,}; raise the budget or lower min_saving"
        )
    lo, hi = 0, len(thresholds) - 1  # find the smallest threshold whose cost fits
    if cost(ranks_at(float(thresholds[hi]))) > target:
        return ranks_at(float("inf"))
    while lo < hi:
        mid = (lo + hi) // 2
        if cost(ranks_at(float(thresholds[mid]))) <= target:
            hi = mid
        else:
            lo = mid + 1
    return ranks_at(float(thresholds[lo]))
