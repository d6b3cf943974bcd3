"""Running statistics of a linear layer's input over calibration data, and the errors measured on them."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import TorchliteError


@dataclass
class InputStats:
    """Running statistics of a linear layer's input x [..., in] over the calibration data."""

    in_features: int
    gram: torch.Tensor = field(init=False)  # sum of x^T x, float64 [in, in]
    abs_sum: torch.Tensor = field(init=False)  # sum of |x| per input feature, float64 [in]
    abs_max: torch.Tensor = field(init=False)  # max of |x| per input feature, float32 [in]
    count: int = 0  # rows (tokens) seen

    def __post_init__(self) -> None:
        self.gram = torch.zeros(self.in_features, self.in_features, dtype=torch.float64)
        self.abs_sum = torch.zeros(self.in_features, dtype=torch.float64)
        self.abs_max = torch.zeros(self.in_features)

    def update(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.in_features:
            raise TorchliteError(f"a linear input has {x.shape[-1]} features, expected {self.in_features}")
        rows = x.detach().reshape(-1, self.in_features).float()
        self.gram += (rows.T @ rows).double()  # one batch in float32 (fast GEMM), the running sum in float64
        self.abs_sum += rows.abs().sum(0, dtype=torch.float64)
        self.abs_max = torch.maximum(self.abs_max, rows.abs().amax(0))
        self.count += rows.shape[0]

    @property
    def covariance(self) -> torch.Tensor:
        """E[x^T x] (uncentered second moment), float64 [in, in]."""
        return self.gram / max(self.count, 1)

    @property
    def mean_abs(self) -> torch.Tensor:
        return self.abs_sum / max(self.count, 1)


def output_error(weight: torch.Tensor, approx: torch.Tensor, stats: InputStats) -> float:
    """Relative output error on the calibration inputs: ||(W - W') X^T||_F / ||W X^T||_F."""
    w = weight.detach().double()
    d = w - approx.detach().double()
    c = stats.gram
    num = torch.einsum("oi,ij,oj->", d, c, d).clamp_min(0)
    den = torch.einsum("oi,ij,oj->", w, c, w).clamp_min(1e-300)
    return float((num / den).sqrt())


def activation_scale(stats: InputStats, alpha: float) -> torch.Tensor:
    """mean|x|^alpha per input feature, normalised to geometric mean 1 (float64 [in]); shared by ASVD
    and AWQ: only the shape of the scaling matters."""
    s = stats.mean_abs.clamp_min(1e-8).pow(alpha)
    return s / s.log().mean().exp()


def static_activation_scale(stats: InputStats, input_scale: torch.Tensor | None) -> torch.Tensor:
    """W8A8 static: one activation scale [1, 1] per layer, max |x| over the calibration data / 127
    (of x * input_scale when the layer scales its input)."""
    amax = stats.abs_max if input_scale is None else stats.abs_max * input_scale
    return (amax.max() / 127).clamp_min(1e-12).reshape(1, 1).float()
