"""`torchlite.compress`: the eager counterpart of the backend, for models you keep and reuse."""
from __future__ import annotations

import copy
from dataclasses import replace

import torch

from .calibration import calibration_batches, observe_modules
from .errors import TorchliteError
from .graph import find_linears, get_attr_value
from .log import logger
from .nn import LowRankLinear, QuantizedLinear, SparseLinear
from .passes import prune as prune_pass
from .passes.factor import SHARED, FactorReport, factor_layers
from .passes.prune import PruneReport, merge_reports, scheduled_steps, seeded_callback
from .passes.quantize import QuantizeReport, quantize_layers, selected, static_activation_scale
from .recipe import Factor, Prune, Quantize, Recipe, check_calibration, matches, parse_recipe
from .numerics.nm import pack_nm, pack_nm_codes
from .trace import trace


def compress(
    model: torch.nn.Module, recipe: Recipe | str | dict = "int8", *, calib=None, inplace: bool = False,
    callback=None,
) -> torch.nn.Module:
    """Return `model` with its nn.Linear layers pruned (zeros, SparseLinear for N:M, or smaller
    Linears), factored (LowRankLinear) and/or quantized (QuantizedLinear with real int8/int4
    storage), in the recipe's order.

    The same numerics and layer selection as the `lite` backend. `calib` is an iterable of input
    batches (what the model is called with: tensors, tuples or dicts) for the passes that use
    activation statistics; pruning needs it (its first batch traces the model to find the dependency
    groups). With `Prune(schedule=...)`, `callback(model, step)` runs after every pruning step (e.g. to
    fine-tune). Config, calibration data and every weight are validated before any module is
    replaced. The reports are attached as `model.torchlite_report`. With `inplace=False` (default)
    the input model is not modified.
    """
    recipe = parse_recipe(recipe)
    if not isinstance(model, torch.nn.Module):
        raise TorchliteError(f"compress takes an nn.Module, not {type(model).__name__}")
    if calib is not None:
        calib = calibration_batches(calib, "compress")
    for cfg in (recipe.prune, recipe.factor, recipe.quantize):
        check_calibration(cfg, calib)
    if recipe.prune is not None and calib is None:
        raise TorchliteError(
            "compress with Prune needs calib=<iterable of input batches>: the first batch traces the model to find "
            "its linear layers and their dependency groups"
        )
    target = model if inplace else copy.deepcopy(model)
    reports = []
    if recipe.prune is not None:
        reports.append(_prune(target, recipe.prune, calib, callback))
    if recipe.factor is not None:
        reports.append(_factor(target, recipe.factor, calib))
    if recipe.quantize is not None:
        reports.append(_quantize(target, recipe.quantize, calib))
    if recipe.prune is not None and recipe.prune.structure == "n:m":
        _sparsify(target, {lay.name for lay in reports[0].layers}, recipe.prune.n, recipe.prune.m)
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


def _positional(calib) -> list[tuple]:
    """The batches as positional inputs of the traced graph (args, then kwargs in the first batch's order)."""
    args0, kwargs0 = calib[0]
    shapes0 = [tuple(t.shape) for t in list(args0) + list(kwargs0.values()) if isinstance(t, torch.Tensor)]
    out = []
    for i, (args, kwargs) in enumerate(calib):
        if list(kwargs) != list(kwargs0):
            raise TorchliteError(f"compress: calibration batch {i} has keys {list(kwargs)}, batch 0 has {list(kwargs0)}")
        flat = tuple(args) + tuple(kwargs[k] for k in kwargs0)
        if [tuple(t.shape) for t in flat if isinstance(t, torch.Tensor)] != shapes0:
            raise TorchliteError(
                f"compress: pruning traces the model at the first batch's shapes {shapes0}; calibration batch {i} "
                "differs: use batches of one shape"
            )
        out.append(flat)
    return out


def _set_module_tensor(model: torch.nn.Module, path: str, tensor: torch.Tensor, undo: list) -> None:
    owner_path, _, leaf = path.rpartition(".")
    owner = model.get_submodule(owner_path) if owner_path else model
    old = getattr(owner, leaf)
    undo.append((owner, leaf, old))
    if isinstance(old, torch.nn.Parameter):
        setattr(owner, leaf, torch.nn.Parameter(tensor.detach().clone(), requires_grad=old.requires_grad))
    else:
        setattr(owner, leaf, tensor.detach().clone())


def _prune_step(model: torch.nn.Module, cfg: Prune, calib) -> tuple[PruneReport, dict]:
    """One pruning step through the graph pass, written back into `model`'s modules."""
    args, kwargs = calib[0]
    gm = trace(model, tuple(args), kwargs)
    new, report = prune_pass(gm, cfg, _positional(calib), pack=False)
    pruned, undo = {lay.name for lay in report.layers}, []
    for site in find_linears(new):
        if site.name in pruned:
            _set_module_tensor(model, f"{site.name}.weight", site.weight_tensor, undo)
            bias = site.bias_tensor(new)
            if bias is not None:
                _set_module_tensor(model, f"{site.name}.bias", bias, undo)
            linear = model.get_submodule(site.name)
            linear.out_features, linear.in_features = site.weight_tensor.shape
    state = dict(model.named_parameters()) | dict(model.named_buffers())
    for node in new.graph.nodes:
        path = node.meta.get("torchlite_name")
        if node.op == "get_attr" and path in state and state[path].shape != get_attr_value(new, str(node.target)).shape:
            _set_module_tensor(model, path, get_attr_value(new, str(node.target)), undo)
    if cfg.structured:
        try:
            with torch.no_grad():
                model(*args, **kwargs)
        except Exception as exc:
            for owner, leaf, old in reversed(undo):
                setattr(owner, leaf, old)
            for linear in {model.get_submodule(n) for n in pruned}:
                linear.out_features, linear.in_features = linear.weight.shape
            raise TorchliteError(
                f"compress: the model's own code does not follow the shrunk shapes ({type(exc).__name__}: {exc}); it "
                "probably fixes a pruned size (e.g. reshapes to a literal head count). Prune its graph instead: "
                "torch.compile(model, backend='lite', options={'recipe': {'prune': ...}}) or torchlite.trace + passes.prune"
            ) from exc
    masks = {name: model.get_submodule(name).weight.detach() != 0 for name in pruned} if not cfg.structured else {}
    return report, masks


def _prune(model: torch.nn.Module, cfg: Prune, calib, callback) -> PruneReport:
    if cfg.schedule is None:
        report, _ = _prune_step(model, cfg, calib)
        logger.info("compress:\n%s", report)
        return report
    reports = []
    for step, target in scheduled_steps(cfg, relative=cfg.structured):
        report, masks = _prune_step(model, replace(cfg, sparsity=target, schedule=None), calib)
        reports.append(report)
        if callback is not None:
            seeded_callback(cfg, callback, model, step)
            with torch.no_grad():
                for name, mask in masks.items():
                    model.get_submodule(name).weight.mul_(mask)
    report = merge_reports(cfg, reports)
    logger.info("compress:\n%s", report)
    return report


def _sparsify(model: torch.nn.Module, names: set[str], n: int, m: int) -> None:
    """N:M-pruned layers (still nn.Linear, or int8 per-channel QuantizedLinear) -> SparseLinear."""
    for name in names:
        mod = model.get_submodule(name)
        if type(mod) is torch.nn.Linear:
            _replace(model, name, SparseLinear(pack_nm(mod.weight.detach(), n, m), mod.bias))
        elif (isinstance(mod, QuantizedLinear) and mod.scheme == "linear" and mod.bits == 8 and mod.zero is None and not mod.group_size
              and mod.input_scale is None and not mod.activations and mod.scale.shape[0] == mod.out_features):
            _replace(model, name, SparseLinear(pack_nm_codes(mod.qdata[:, : mod.in_features], mod.scale, n, m), mod.bias))
