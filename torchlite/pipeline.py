"""Apply a Recipe's passes to a GraphModule in the recipe's fixed order."""
from __future__ import annotations

import torch.fx as fx

from . import passes
from .recipe import Recipe


def apply_recipe(gm: fx.GraphModule, recipe: Recipe, calib=None) -> tuple[fx.GraphModule, list]:
    """Run every configured pass of `recipe` (in Recipe.ORDER), each with the calibration batches
    `calib` (positional inputs of `gm`; passes that need none ignore them). Returns (new gm, reports).

    N:M pruning followed by other passes leaves the zeros in dense weights until those passes ran,
    then packs the layers still N:M sparse (int8 per-channel codes included) into nm_linear."""
    reports = []
    nm = recipe.prune is not None and recipe.prune.structure == "n:m"
    later = any(getattr(recipe, name) is not None for name in Recipe.ORDER[1:])
    for name in Recipe.ORDER:
        cfg = getattr(recipe, name)
        if cfg is None:
            continue
        extra = {"pack": not later} if name == "prune" and nm else {}
        gm, report = getattr(passes, name)(gm, cfg, calib, **extra)
        reports.append(report)
    if nm and later:
        gm = passes.sparsify(gm, recipe.prune.n, recipe.prune.m, {lay.name for lay in reports[0].layers})
    return gm, reports
