"""Apply a Recipe's passes to a GraphModule in the recipe's fixed order."""
from __future__ import annotations

import torch.fx as fx

from . import passes
from .recipe import Recipe


def apply_recipe(gm: fx.GraphModule, recipe: Recipe, calib=None) -> tuple[fx.GraphModule, list]:
    """Run every configured pass of `recipe` (in Recipe.ORDER), each with the calibration batches
    `calib` (positional inputs of `gm`; passes that need none ignore them). Returns (new gm, reports)."""
    reports = []
    for name in Recipe.ORDER:
        cfg = getattr(recipe, name)
        if cfg is None:
            continue
        gm, report = getattr(passes, name)(gm, cfg, calib)
        reports.append(report)
    return gm, reports
