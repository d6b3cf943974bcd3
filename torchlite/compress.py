"""`torchlite.compress`: the eager counterpart of the backend, for models you keep and reuse."""
from __future__ import annotations

import copy

import torch

from .errors import TorchliteError
from .log import logger
from .modules import QuantizedLinear
from .passes.quantize import QuantizeReport, quantize_layers
from .recipe import Recipe, parse_recipe


def compress(model: torch.nn.Module, recipe: Recipe | str | dict = "int8", *, inplace: bool = False) -> torch.nn.Module:
    """Return `model` with its nn.Linear layers replaced by QuantizedLinear holding real int8/int4 storage.

    The same numerics and layer selection as the `lite` backend. Every weight is validated before
    any module is replaced, so a failure leaves the model as it was. The report is attached as
    `model.torchlite_report`. With `inplace=False` (default) the input model is not modified.
    """
    recipe = parse_recipe(recipe)
    if not isinstance(model, torch.nn.Module):
        raise TorchliteError(f"compress takes an nn.Module, not {type(model).__name__}")
    target = model if inplace else copy.deepcopy(model)
    cfg = recipe.quantize
    reports = []
    if cfg is not None:
        linears = [(n, m) for n, m in target.named_modules() if type(m) is torch.nn.Linear]
        report = QuantizeReport(cfg)
        quantized = quantize_layers([(n, m.weight, None) for n, m in linears], cfg, report)
        for (name, mod), qw in zip(linears, quantized):
            if qw is None:
                continue
            parent_name, _, leaf = name.rpartition(".")
            parent = target.get_submodule(parent_name) if parent_name else target
            setattr(parent, leaf, QuantizedLinear(qw, mod.bias))
        logger.info("compress:\n%s", report)
        reports.append(report)
    target.torchlite_report = reports
    return target
