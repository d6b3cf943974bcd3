"""Calibration data and the activation statistics that calibration-based passes read.

A calibration set is an iterable of batches. Each batch is what the model (or GraphModule) is
called with: a tensor (one positional input, e.g. token ids [batch, seq]), a tuple/list of
positional inputs, or a dict of keyword inputs. Batches are validated before any weight is touched.

Statistics are recorded per linear layer input, either through the FX graph (an Interpreter that
sees every linear's input, `observe_graph`) or through forward hooks on nn.Linear modules
(`observe_modules`, used by `torchlite.compress`). Both accumulate in float64.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.fx as fx
from tqdm.auto import tqdm

from .errors import TorchliteError
from .numerics.stats import InputStats


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
