"""Calibration data and the activation statistics that calibration-based passes read.

A calibration set is an iterable of batches. Each batch is what the model (or GraphModule) is
called with: a tensor (one positional input, e.g. token ids [batch, seq]), a tuple/list of
positional inputs, or a dict of keyword inputs. Batches are validated before any weight is touched.

Statistics are recorded per linear layer input, either through the FX graph (an Interpreter that
sees every linear's input, `observe_graph`) or through forward hooks on nn.Linear modules
(`observe_modules`, used by `torchlite.compress`). Both accumulate in float64.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.fx as fx
from tqdm.auto import tqdm

from .errors import TorchliteError


class Batches(list):
    """Validated calibration batches: a list of (args, kwargs)."""


def calibration_batches(calib: Iterable[Any] | None, who: str) -> Batches:
    """Validate `calib` and return it as Batches of (args, kwargs). Raises on empty or malformed data."""
    if isinstance(calib, Batches):
        return calib
    if calib is None:
        raise TorchliteError(f"{who} needs calibration data: pass calib=<iterable of input batches>, e.g. token ids")
    if isinstance(calib, (torch.Tensor, dict)):
        raise TorchliteError(
            f"{who}: calib must be an iterable of batches (e.g. a list of token-id tensors), not a single "
            f"{type(calib).__name__}; wrap it in a list"
        )
    try:
        batches = list(calib)
    except TypeError:
        raise TorchliteError(f"{who}: calib must be an iterable of batches, not {type(calib).__name__}") from None
    if not batches:
        raise TorchliteError(f"{who}: the calibration iterable is empty; pass at least one batch")
    out = Batches()
    for i, batch in enumerate(batches):
        if isinstance(batch, torch.Tensor):
            args, kwargs = (batch,), {}
        elif isinstance(batch, (tuple, list)):
            args, kwargs = tuple(batch), {}
        elif isinstance(batch, dict):
            args, kwargs = (), dict(batch)
        else:
            raise TorchliteError(
                f"{who}: calibration batch {i} is a {type(batch).__name__}; use a tensor, a tuple of tensors or a dict"
            )
        tensors = [t for t in list(args) + list(kwargs.values()) if isinstance(t, torch.Tensor)]
        if not tensors:
            raise TorchliteError(f"{who}: calibration batch {i} holds no tensor")
        for t in tensors:
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise TorchliteError(f"{who}: calibration batch {i} holds NaN or Inf values")
        out.append((args, kwargs))
    first = [(t.dtype, t.dim()) for t in out[0][0] if isinstance(t, torch.Tensor)]
    for i, (args, _) in enumerate(out[1:], 1):
        now = [(t.dtype, t.dim()) for t in args if isinstance(t, torch.Tensor)]
        if now != first:
            raise TorchliteError(
                f"{who}: calibration batch {i} has inputs (dtype, ndim) {now}, batch 0 has {first}; "
                "every batch must have the same structure"
            )
    return out


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


class _Observer(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, watch: dict[fx.Node, InputStats]):
        super().__init__(gm)
        self.watch = watch

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        stats = self.watch.get(n)
        if stats is not None:
            stats.update(out)
        return out


def _run_all(call, batches, who: str) -> None:
    with torch.no_grad():
        for i, (args, kwargs) in enumerate(tqdm(batches, desc=f"{who}: calibrating", leave=False)):
            try:
                call(args, kwargs)
            except Exception as exc:
                raise TorchliteError(
                    f"{who}: calibration batch {i} could not run through the model ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0]}); "
                    "batches must be what the model is called with (same shapes as the traced example inputs)"
                ) from exc


def observe_graph(gm: fx.GraphModule, inputs: dict[str, tuple[fx.Node, int]], calib, who: str) -> dict[str, InputStats]:
    """Run `calib` through `gm` and record the statistics of the value of each named (node, width):
    a linear layer's input and its number of features. Layers reading one node share one InputStats.
    Batches are positional inputs of `gm` (tensors or tuples)."""
    batches = calibration_batches(calib, who)
    if any(kwargs for _, kwargs in batches):
        raise TorchliteError(f"{who}: a GraphModule is calibrated with positional batches (tensors or tuples), not dicts")
    by_node: dict[fx.Node, InputStats] = {}
    for node, width in inputs.values():
        by_node.setdefault(node, InputStats(width))
    _run_all(lambda args, _: _Observer(gm, by_node).run(*args), batches, who)
    return {name: by_node[node] for name, (node, _) in inputs.items()}


def observe_modules(model: torch.nn.Module, names: list[str], calib, who: str) -> dict[str, InputStats]:
    """Run `calib` through `model` and record the input statistics of the nn.Linear modules `names`.

    Modules called on the very same input tensor in the first batch (such as the q/k/v projections
    of an attention layer) share one InputStats, which is updated once per batch.
    """
    batches = calibration_batches(calib, who)
    stats = {name: InputStats(model.get_submodule(name).in_features) for name in names}
    seen: dict[int, tuple[torch.Tensor, InputStats]] = {}  # inputs of this batch, kept alive so ids stay unique
    first = [True]

    def hook(name: str, x: torch.Tensor) -> None:
        hit = seen.get(id(x))
        if hit is not None and first[0]:
            stats[name] = hit[1]
        if hit is not None and stats[name] is hit[1]:
            return
        stats[name].update(x)
        seen[id(x)] = (x, stats[name])

    def run(args, kwargs):
        seen.clear()
        model(*args, **kwargs)
        first[0] = False

    hooks = [
        model.get_submodule(name).register_forward_pre_hook(lambda m, args, n=name: hook(n, args[0])) for name in names
    ]
    try:
        _run_all(run, batches, who)
    finally:
        for h in hooks:
            h.remove()
        seen.clear()
    return stats
