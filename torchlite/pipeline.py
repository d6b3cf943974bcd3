"""The one pipeline: a Recipe's passes in the recipe's order, behind both front doors.

The backend (and `apply_recipe`, for a GraphModule in a notebook) compresses a graph; `torchlite.compress`
compresses an eager model. Both hand `run` a target that can prune, factor, quantize and pack N:M
layers; `run` owns the order and the rule that N:M pruning followed by other passes leaves its zeros in
dense weights until those passes ran, then packs the layers still N:M sparse (int8 per-channel codes
included) into `nm_linear`.
"""
from __future__ import annotations

from typing import Protocol

import torch.fx as fx

from .calibration import calibration_batches
from .passes.factor import apply as factor_graph
from .passes.pack import run as pack_graph
from .passes.prune import apply as prune_graph
from .passes.quantize import apply as quantize_graph
from .recipe import Factor, Prune, Quantize, Recipe, check_calibration
from .report import Report


class Target(Protocol):
    """What the pipeline compresses: a graph (`GraphTarget`) or an eager model (`torchlite.compress`)."""

    def prune(self, cfg: Prune, pack: bool) -> Report: ...

    def factor(self, cfg: Factor) -> Report: ...

    def quantize(self, cfg: Quantize) -> Report: ...

    def pack_nm(self, names: set[str], n: int, m: int) -> None: ...


def check(recipe: Recipe, calib) -> None:
    """Raise before anything runs when a pass of `recipe` needs calibration data and there is none."""
    for name in Recipe.ORDER:
        check_calibration(getattr(recipe, name), calib)


def run(target: Target, recipe: Recipe) -> list[Report]:
    """Run every configured pass of `recipe` on `target`, in Recipe.ORDER. Returns their reports."""
    nm = recipe.prune is not None and recipe.prune.structure == "n:m"
    later = any(getattr(recipe, name) is not None for name in Recipe.ORDER[1:])
    reports = []
    for name in Recipe.ORDER:
        cfg = getattr(recipe, name)
        if cfg is None:
            continue
        reports.append(target.prune(cfg, pack=not (nm and later)) if name == "prune" else getattr(target, name)(cfg))
    if nm and later:
        target.pack_nm({lay.name for lay in reports[0].layers}, recipe.prune.n, recipe.prune.m)
    return reports


class GraphTarget:
    """A GraphModule under compression: each pass replaces it by its (new) result."""

    def __init__(self, gm: fx.GraphModule, batches):
        self.gm, self.batches = gm, batches

    def prune(self, cfg: Prune, pack: bool) -> Report:
        self.gm, report = prune_graph(self.gm, cfg, self.batches, pack=pack)
        return report

    def factor(self, cfg: Factor) -> Report:
        self.gm, report = factor_graph(self.gm, cfg, self.batches)
        return report

    def quantize(self, cfg: Quantize) -> Report:
        self.gm, report = quantize_graph(self.gm, cfg, self.batches)
        return report

    def pack_nm(self, names: set[str], n: int, m: int) -> None:
        self.gm, _ = pack_graph(self.gm, names, n, m)


def apply_recipe(gm: fx.GraphModule, recipe: Recipe, calib=None) -> tuple[fx.GraphModule, list[Report]]:
    """`recipe`'s passes on `gm` with the calibration batches `calib` (positional inputs of `gm`; passes
    that need none ignore them). Returns (new gm, reports); `gm` is not changed."""
    batches = None if calib is None else calibration_batches(calib, "lite")
    check(recipe, batches)
    target = GraphTarget(gm, batches)
    reports = run(target, recipe)
    return target.gm, reports
