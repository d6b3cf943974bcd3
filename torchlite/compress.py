"""`torchlite.compress`: the eager counterpart of the backend, for models you keep and reuse."""
from __future__ import annotations

import copy

import torch

from .calibration import calibration_batches, observe_modules
from .errors import TorchliteError
from .log import logger
from .modules import LowRankLinear, QuantizedLinear
from .passes.factor import SHARED, FactorReport, factor_layers
from .passes.quantize import QuantizeReport, quantize_layers, selected, static_activation_scale
from .recipe import Factor, Quantize, Recipe, check_calibration, matches, parse_recipe


def compress(
    model: torch.nn.Module, recipe: Recipe | str | dict = "int8", *, calib=None, inplace: bool = False
) -> torch.nn.Module:
    """Return `model` with its nn.Linear layers factored (LowRankLinear) and/or quantized
    (QuantizedLinear with real int8/int4 storage), in the recipe's order.

    The same numerics and layer selection as the `lite` backend. `calib` is an iterable of input
    batches (what the model is called with: tensors, tuples or dicts) for the passes that use
    activation statistics. Config, calibration data and every weight are validated before any module
    is replaced. The reports are attached as `model.torchlite_report`. With `inplace=False`
    (default) the input model is not modified.
    """
    recipe = parse_recipe(recipe)
    if not isinstance(model, torch.nn.Module):
        raise TorchliteError(f"compress takes an nn.Module, not {type(model).__name__}")
    if calib is not None:
        calib = calibration_batches(calib, "compress")
    for cfg in (recipe.factor, recipe.quantize):
        check_calibration(cfg, calib)
    target = model if inplace else copy.deepcopy(model)
    reports = []
    if recipe.factor is not None:
        reports.append(_factor(target, recipe.factor, calib))
    if recipe.quantize is not None:
        reports.append(_quantize(target, recipe.quantize, calib))
    target.torchlite_report = reports
    return target


def _linears(model: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if type(m) is torch.nn.Linear]


def _replace(model: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, new)


def _factor(model: torch.nn.Module, cfg: Factor, calib) -> FactorReport:
    linears = _linears(model)
    tied = _tied_to_non_linear(model, linears)
    layers = [
        (n, m.weight, m.bias is not None, SHARED if id(m.weight) in tied else None)
        for n, m in linears
    ]
    stats = None
    if calib is not None:
        names = [n for n, _, _, why in layers if why is None and not matches(n, cfg.exclude)]
        stats = observe_modules(model, names, calib, "factor")
    report = FactorReport(cfg)
    for (name, mod), pair in zip(linears, factor_layers(layers, cfg, stats, report)):
        if pair is not None:
            _replace(model, name, LowRankLinear(*pair, None if mod.bias is None else mod.bias.detach()))
    logger.info("compress:\n%s", report)
    return report


def _tied_to_non_linear(model: torch.nn.Module, linears) -> set[int]:
    linear_ids = {id(m) for _, m in linears}
    return {
        id(p) for m in model.modules() if id(m) not in linear_ids for p in m.parameters(recurse=False)
    }


def _quantize(model: torch.nn.Module, cfg: Quantize, calib) -> QuantizeReport:
    linears = _linears(model)
    layers = [(n, m.weight, None) for n, m in linears]
    stats = None
    if cfg.needs_calibration:
        names = [n for (n, _, _), why in zip(layers, selected(layers, cfg)) if why is None]
        stats = observe_modules(model, names, calib, "quantize")
    report = QuantizeReport(cfg)
    quantized = quantize_layers(layers, cfg, report, stats)
    for (name, mod), qw in zip(linears, quantized):
        if qw is not None:
            layer_cfg = cfg.for_layer(name)
            x_scale = static_activation_scale(stats[name], qw) if layer_cfg.activations == "static" else None
            _replace(model, name, QuantizedLinear(qw, mod.bias, layer_cfg.activations, x_scale))
    logger.info("compress:\n%s", report)
    return report
