"""`torchlite.compress`: the eager front door of the pipeline, for models you keep and reuse.

The same passes and numerics as the `lite` backend (`torchlite.pipeline`), with the results written
into the model as modules: QuantizedLinear, LowRankLinear, SparseLinear, or smaller nn.Linear.
"""
from __future__ import annotations

import copy

import torch

from . import pipeline
from .calibration import calibration_batches, observe_modules
from .errors import TorchliteError
from .graph import find_linears, get_attr_value, meta
from .inductor import tag_cache_key
from .log import logger
from .nn import LowRankLinear, QuantizedLinear, SparseLinear
from .numerics.nm import codes_packable, pack_nm, pack_nm_codes
from .numerics.stats import static_activation_scale
from .passes.factor import SHARED, FactorReport, factor_layers
from .passes.prune import in_steps
from .passes.prune import step as prune_step
from .passes.quantize import QuantizeReport, quantize_layers, skip_reasons
from .recipe import Factor, Prune, Quantize, Recipe, matches, parse_recipe
from .report import Report
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
    tag_cache_key()  # the modules it returns compile to torchlite's kernels
    recipe = parse_recipe(recipe)
    if not isinstance(model, torch.nn.Module):
        raise TorchliteError(f"compress takes an nn.Module, not {type(model).__name__}")
    batches = None if calib is None else calibration_batches(calib, "compress")
    pipeline.check(recipe, batches)
    if recipe.prune is not None and batches is None:
        raise TorchliteError(
            "compress with Prune needs calib=<iterable of input batches>: the first batch traces the model to find "
            "its linear layers and their dependency groups"
        )
    target = ModuleTarget(model if inplace else copy.deepcopy(model), batches, callback)
    target.model.torchlite_report = pipeline.run(target, recipe)
    return target.model


class ModuleTarget:
    """An eager model under compression (`pipeline.Target`): its modules are replaced in place."""

    def __init__(self, model: torch.nn.Module, batches, callback):
        self.model, self.batches, self.callback = model, batches, callback

    def _linears(self) -> list[tuple[str, torch.nn.Linear]]:
        return [(n, m) for n, m in self.model.named_modules() if type(m) is torch.nn.Linear]

    def _replace(self, name: str, new: torch.nn.Module) -> None:
        parent_name, _, leaf = name.rpartition(".")
        setattr(self.model.get_submodule(parent_name) if parent_name else self.model, leaf, new)

    def factor(self, cfg: Factor) -> FactorReport:
        linears = self._linears()
        tied = _tied_to_non_linear(self.model, linears)
        layers = [(n, m.weight, m.bias is not None, SHARED if id(m.weight) in tied else None) for n, m in linears]
        stats = None
        if self.batches is not None:
            names = [n for n, _, _, why in layers if why is None and not matches(n, cfg.exclude)]
            stats = observe_modules(self.model, names, self.batches, "factor")
        report = FactorReport(cfg)
        for (name, mod), pair in zip(linears, factor_layers(layers, cfg, stats, report)):
            if pair is not None:
                self._replace(name, LowRankLinear(*pair, None if mod.bias is None else mod.bias.detach()))
        logger.info("compress:\n%s", report)
        return report

    def quantize(self, cfg: Quantize) -> QuantizeReport:
        linears = self._linears()
        layers = [(n, m.weight, None) for n, m in linears]
        stats = None
        if cfg.needs_calibration:
            names = [n for (n, _, _), why in zip(layers, skip_reasons(layers, cfg)) if why is None]
            stats = observe_modules(self.model, names, self.batches, "quantize")
        report = QuantizeReport(cfg)
        for (name, mod), qw in zip(linears, quantize_layers(layers, cfg, report, stats)):
            if qw is not None:
                layer_cfg = cfg.for_layer(name)
                static = layer_cfg.activations == "static"
                x_scale = static_activation_scale(stats[name], qw.input_scale) if static else None
                self._replace(name, QuantizedLinear(qw, mod.bias, layer_cfg.activations, x_scale))
        logger.info("compress:\n%s", report)
        return report

    def prune(self, cfg: Prune, pack: bool) -> Report:
        """Through the graph pass: the model is traced at the first batch, pruned, and the new weights
        written back into its modules (`pack` is ignored: `pack_nm` stores N:M layers at the end)."""
        if cfg.schedule is None:
            _, report, _ = self._prune_step(self.model, cfg.sparsity, None, cfg)
        else:
            _, report = in_steps(
                cfg, lambda model, sparsity, original: self._prune_step(model, sparsity, original, cfg), self.model,
                self.callback, _reapply,
            )
        logger.info("compress:\n%s", report)
        return report

    def _prune_step(self, model: torch.nn.Module, sparsity: float, original, cfg: Prune):
        args, kwargs = self.batches[0]
        gm = trace(model, tuple(args), kwargs)
        new, report, _ = prune_step(gm, cfg, sparsity, _positional(self.batches), False, original)
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
            path = node.meta.get(meta.NAME)
            if node.op == "get_attr" and path in state and state[path].shape != get_attr_value(new, str(node.target)).shape:
                _set_module_tensor(model, path, get_attr_value(new, str(node.target)), undo)
        if cfg.structured:
            _check_runs(model, args, kwargs, undo, pruned)
        masks = {name: model.get_submodule(name).weight.detach() != 0 for name in pruned} if not cfg.structured else {}
        return model, report, masks

    def pack_nm(self, names: set[str], n: int, m: int) -> None:
        """N:M-pruned layers (still nn.Linear, or int8 per-channel QuantizedLinear) -> SparseLinear."""
        for name in names:
            mod = self.model.get_submodule(name)
            if type(mod) is torch.nn.Linear:
                self._replace(name, SparseLinear(pack_nm(mod.weight.detach(), n, m), mod.bias))
            elif (isinstance(mod, QuantizedLinear) and mod.scheme == "linear" and mod.input_scale is None
                  and not mod.activations and codes_packable(mod.bits, mod.zero, mod.group_size, mod.scale, mod.out_features)):
                self._replace(name, SparseLinear(pack_nm_codes(mod.qdata[:, : mod.in_features], mod.scale, n, m), mod.bias))


def _tied_to_non_linear(model: torch.nn.Module, linears) -> set[int]:
    linear_ids = {id(m) for _, m in linears}
    return {id(p) for m in model.modules() if id(m) not in linear_ids for p in m.parameters(recurse=False)}


def _reapply(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, mask in masks.items():
            model.get_submodule(name).weight.mul_(mask)


def _positional(batches) -> list[tuple]:
    """The batches as positional inputs of the traced graph (args, then kwargs in the first batch's order)."""
    args0, kwargs0 = batches[0]
    shapes0 = [tuple(t.shape) for t in list(args0) + list(kwargs0.values()) if isinstance(t, torch.Tensor)]
    out = []
    for i, (args, kwargs) in enumerate(batches):
        if list(kwargs) != list(kwargs0):
            raise TorchliteError(f"compress: calibration batch {i} has keys {list(kwargs)}, batch 0 has {list(kwargs0)}")
        flat = tuple(args) + tuple(kwargs[k] for k in kwargs0)
        if [tuple(t.shape) for t in flat if isinstance(t, torch.Tensor)] != shapes0:
            raise TorchliteError(
                f"compress: pruning traces the model at the first batch's shapes {shapes0}; calibration batch {i} "
                "differs: use batches of one shape"
            )
        out.append(flat)
    return calibration_batches(out, "compress")


def _set_module_tensor(model: torch.nn.Module, path: str, tensor: torch.Tensor, undo: list) -> None:
    owner_path, _, leaf = path.rpartition(".")
    owner = model.get_submodule(owner_path) if owner_path else model
    old = getattr(owner, leaf)
    undo.append((owner, leaf, old))
    if isinstance(old, torch.nn.Parameter):
        setattr(owner, leaf, torch.nn.Parameter(tensor.detach().clone(), requires_grad=old.requires_grad))
    else:
        setattr(owner, leaf, tensor.detach().clone())


def _check_runs(model: torch.nn.Module, args, kwargs, undo: list, pruned: set[str]) -> None:
    """Run the shrunk model once; if its own code does not follow the new shapes, undo every change."""
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
