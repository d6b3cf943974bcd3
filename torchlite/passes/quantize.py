"""Weight-only linear quantization of every linear-like op whose weight is a graph constant.

Three steps; `fold=False` / `fuse=False` stop after the first / second and return that graph:
1. insert: `linear(x, W, b)` -> `linear(x, dequantize(*quantize(W)), b)` with the torchlite ops.
2. fold: `quantize` of a constant weight is evaluated once; the graph keeps only the packed
   integers, scales and zero points as constants (no fp32 weight is left).
3. fuse: `linear(x, dequantize(qW, scale, zero), b)` -> `qlinear(x, qW, scale, zero, b)`, the op
   whose Inductor lowering reads the packed weight directly.
Log and vector weights (`Quantize.scheme`) are computed when the pass runs and enter the graph as
constants feeding `dequantize_log` / `dequantize_vector`, fused into `qlinear_log` / `qlinear_vector`.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F

from .. import ops as _ops  # noqa: F401  (registers torch.ops.torchlite)
from ..calibration import calibration_batches, observe_graph
from ..numerics.stats import InputStats, output_error
from ..errors import TorchliteError
from ..graph import attr_name, clone, find_linears, get_attr_value, set_attr
from ..graph.linear import TRANSPOSES, LinearSite
from ..log import logger
from ..numerics.gptq_awq import awq, gptq, gptq_log, gptq_vector, smoothquant
from ..numerics.linear import QuantizedWeight, check_finite, quantize_weight
from ..numerics.log import quantize_log
from ..numerics.vector import check_shape, quantize_vector
from ..recipe import Quantize, check_calibration, matches
from ..report import mb, table

QUANTIZE = torch.ops.torchlite.quantize.default
DEQUANTIZE = torch.ops.torchlite.dequantize.default
QLINEAR = torch.ops.torchlite.qlinear.default
QLINEAR_A8 = torch.ops.torchlite.qlinear_a8.default
DEQUANTIZE_LOG = torch.ops.torchlite.dequantize_log.default
DEQUANTIZE_VECTOR = torch.ops.torchlite.dequantize_vector.default
# dequantize op -> (fused linear op, number of weight tensors before the int arguments)
FUSED = {
    DEQUANTIZE: (QLINEAR, 3),
    DEQUANTIZE_LOG: (torch.ops.torchlite.qlinear_log.default, 2),
    DEQUANTIZE_VECTOR: (torch.ops.torchlite.qlinear_vector.default, 3),
}


@dataclass
class LayerReport:
    name: str
    shape: tuple[int, int]
    bits: int
    bytes_before: int
    bytes_after: int
    max_abs_error: float
    rel_error: float  # ||W - Ŵ||_F / ||W||_F
    output_error: float | None = None  # ||(W - Ŵ) Xᵀ||_F / ||W Xᵀ||_F on the calibration data

    @property
    def bits_per_weight(self) -> float:
        """Stored bits (codes, scales, zero points, codebooks, padding) per weight."""
        return 8 * self.bytes_after / (self.shape[0] * self.shape[1])


@dataclass
class QuantizeReport:
    config: Quantize
    layers: list[LayerReport] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def bytes_before(self) -> int:
        return sum(layer.bytes_before for layer in self.layers)

    @property
    def bytes_after(self) -> int:
        return sum(layer.bytes_after for layer in self.layers)

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight over all quantized layers (codebooks, scales and padding included)."""
        return 8 * self.bytes_after / max(sum(r.shape[0] * r.shape[1] for r in self.layers), 1)

    def __str__(self) -> str:
        c = self.config
        if c.scheme == "vector":
            what = f"vector d={c.vector_dim}, {c.codebook_size} centroids per " + (f"{c.group_size} rows" if c.group_size else "layer")
        else:
            what = (
                (f"{c.bits}-bit log (offset {c.log_offset:g})" if c.scheme == "log" else
                 f"{c.bits}-bit {'symmetric' if c.symmetric else 'asymmetric'}")
                + f" per {c.granularity}" + (f" (group {c.group_size})" if c.group_size else "")
            )
        head = f"quantize: {what}, {c.method}, {len(self.layers)} layer(s) quantized, {len(self.skipped)} skipped"
        rows = [
            [r.name, f"{r.shape[0]}x{r.shape[1]}", r.bits, f"{r.bits_per_weight:.3f}", mb(r.bytes_before), mb(r.bytes_after),
             r.max_abs_error, r.rel_error, "-" if r.output_error is None else r.output_error]
            for r in self.layers
        ]
        if self.layers:
            ratio = self.bytes_before / max(self.bytes_after, 1)
            rows.append(["total", "", "", f"{self.bits_per_weight:.3f}", mb(self.bytes_before), mb(self.bytes_after),
                         f"{ratio:.2f}x smaller", "", ""])
        headers = ["layer", "shape", "bits", "bits/w", "MB before", "MB after", "max |err|", "rel err", "output err"]
        out = [head, table(headers, rows)]
        out += [f"skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(out)


def layer_report(name: str, weight: torch.Tensor, qw: QuantizedWeight, stats: InputStats | None = None) -> LayerReport:
    w = weight.detach().float()
    approx = qw.effective_weight()
    err = approx - w
    return LayerReport(
        name=name,
        shape=tuple(w.shape),
        bits=qw.bits,
        bytes_before=weight.numel() * weight.element_size(),
        bytes_after=qw.nbytes,
        max_abs_error=err.abs().max().item(),
        rel_error=(err.norm() / w.norm().clamp_min(1e-30)).item(),
        output_error=None if stats is None else output_error(w, approx, stats),
    )


def static_activation_scale(stats: InputStats, qw: QuantizedWeight) -> torch.Tensor:
    """W8A8 static: one activation scale [1, 1] per layer, max |x| over the calibration data / 127
    (of x * input_scale when the layer scales its input)."""
    amax = stats.abs_max if qw.input_scale is None else stats.abs_max * qw.input_scale
    return (amax.max() / 127).clamp_min(1e-12).reshape(1, 1).float()


def quantize_one(weight: torch.Tensor, cfg: Quantize, stats: InputStats | None):
    """One weight by the config's scheme and method (round to nearest, GPTQ, AWQ or SmoothQuant)."""
    gptq_options = {"damp": cfg.damp, "act_order": cfg.act_order}
    if cfg.scheme == "log":
        if cfg.method == "gptq":
            return gptq_log(weight, stats, cfg.bits, cfg.group_size, cfg.granularity, cfg.log_offset, **gptq_options)
        return quantize_log(weight, cfg.bits, cfg.group_size, cfg.granularity, cfg.log_offset)
    if cfg.scheme == "vector":
        if cfg.method == "gptq":
            return gptq_vector(weight, stats, cfg.vector_dim, cfg.codebook_size, cfg.group_size, **gptq_options)
        return quantize_vector(weight, cfg.vector_dim, cfg.codebook_size, cfg.group_size)
    args = (cfg.bits, cfg.group_size, cfg.symmetric, cfg.granularity)
    if cfg.method == "gptq":
        return gptq(weight, stats, *args, **gptq_options)
    if cfg.method == "awq":
        return awq(weight, stats, *args)
    if cfg.method == "smoothquant":
        return smoothquant(weight, stats)
    return quantize_weight(weight, *args)


def _constant_node(gm: fx.GraphModule, site: LinearSite, part: str, tensor: torch.Tensor | None):
    """The `get_attr` of a linear's weight or bias; `call_module` sites get top-level constants."""
    if site.node.op != "call_module":
        return site.weight if part == "weight" else site.bias
    return None if tensor is None else _new_constant(gm, site, f"{site.name}.{part}", tensor.detach())


def _new_constant(gm: fx.GraphModule, site: LinearSite, name: str, tensor: torch.Tensor) -> fx.Node:
    """A new `get_attr` constant holding `tensor`, placed before the linear of `site`."""
    attr = attr_name(gm, name)
    set_attr(gm, attr, tensor)
    with gm.graph.inserting_before(site.node):
        return gm.graph.get_attr(attr)


def selected(layers: list[tuple[str, torch.Tensor, str | None]], cfg: Quantize) -> list[str | None]:
    """Per (name, weight, reason) layer, why it is left as it is, or None when it gets quantized."""
    def why(name: str, reason: str | None) -> str | None:
        if reason:
            return reason
        if matches(name, cfg.exclude):
            return "excluded by the recipe"
        return "kept in floating point by Quantize.overrides" if cfg.for_layer(name) is None else None

    return [why(name, reason) for name, _, reason in layers]


def quantize_layers(
    layers: list[tuple[str, torch.Tensor, str | None]], cfg: Quantize, report: QuantizeReport,
    stats: dict[str, InputStats] | None = None,
) -> list[QuantizedWeight | None]:
    """Quantize the weights of (name, weight, reason-to-skip) layers that `cfg` does not exclude.

    Shared by the pass and `torchlite.compress`. Every chosen weight is checked for NaN/Inf (and, for
    vector quantization, its shape) before any is quantized; a weight shared by several layers (tied) is quantized and reported once (with
    the statistics of its first layer). `stats` (by layer name) are needed by GPTQ and AWQ.
    Returns, per layer, its QuantizedWeight (the same object for tied layers) or None if skipped.
    """
    check_calibration(cfg, stats)
    reasons = selected(layers, cfg)
    for (name, weight, _), reason in zip(layers, reasons):
        if reason is None:
            check_finite(weight, name)
            layer_cfg = cfg.for_layer(name)
            if layer_cfg.scheme == "vector":
                check_shape(name, weight.shape, layer_cfg.vector_dim, layer_cfg.codebook_size, layer_cfg.group_size)
        else:
            report.skipped.append((name, reason))
            logger.info("quantize: leaving %s as it is: %s", name, reason)
    done: dict[int, QuantizedWeight] = {}
    out = []
    for (name, weight, _), reason in zip(layers, reasons):
        if reason is None and id(weight) not in done:
            layer_stats = stats.get(name) if stats else None
            done[id(weight)] = quantize_one(weight, cfg.for_layer(name), layer_stats)
            report.layers.append(layer_report(name, weight, done[id(weight)], layer_stats))
        out.append(None if reason else done[id(weight)])
    return out


def insert_quantize_dequantize(gm: fx.GraphModule, cfg: Quantize, report: QuantizeReport, calib=None) -> dict:
    """Step 1, in place on a fresh clone. Returns {quantize node: its already computed result}."""
    sites = find_linears(gm)
    layers = [(s.name, s.weight_tensor, s.reason) for s in sites]
    stats = None
    if calib is not None:
        watch = {s.name: (s.x, s.weight_tensor.shape[1]) for s, why in zip(sites, selected(layers, cfg)) if why is None}
        stats = observe_graph(gm, watch, calib, "quantize")
    quantized = quantize_layers(layers, cfg, report, stats)
    qnodes: dict[int, fx.Node] = {}  # one quantize node per distinct QuantizedWeight
    computed = {}
    for site, qw in zip(sites, quantized):
        if qw is None:
            continue
        w = site.weight_tensor
        layer_cfg = cfg.for_layer(site.name)
        if id(qw) not in qnodes and not isinstance(qw, QuantizedWeight):  # log / vector: constants
            parts = (("qdata", qw.qdata), ("scale", qw.scale), ("codebook", qw.codebook))
            qnodes[id(qw)] = [_new_constant(gm, site, f"{site.name}.{part}", t) for part, t in parts if t is not None]
        if id(qw) not in qnodes:
            weight = _constant_node(gm, site, "weight", w)
            args = (weight, layer_cfg.bits, layer_cfg.group_size or 0, layer_cfg.symmetric, layer_cfg.granularity)
            with gm.graph.inserting_after(weight):
                qnode = gm.graph.call_function(QUANTIZE, args)
            qnode.meta["torchlite_name"] = site.name
            computed[qnode] = qw
            qnodes[id(qw)] = qnode
        qnode = qnodes[id(qw)]
        module = gm.get_submodule(str(site.node.target)) if site.node.op == "call_module" else None
        bias = _constant_node(gm, site, "bias", module.bias if module is not None else None)
        x = site.x
        with gm.graph.inserting_before(site.node):
            if qw.input_scale is not None:
                attr = attr_name(gm, f"{site.name}.input_scale")
                set_attr(gm, attr, qw.input_scale.to(w.dtype))
                x = gm.graph.call_function(torch.mul, (x, gm.graph.get_attr(attr)))
            if isinstance(qw, QuantizedWeight):
                q, s = (gm.graph.call_function(operator.getitem, (qnode, i)) for i in range(2))
                z = None if layer_cfg.symmetric else gm.graph.call_function(operator.getitem, (qnode, 2))
                deq = gm.graph.call_function(DEQUANTIZE, (q, s, z, qw.bits, qw.group_size, qw.in_features, w.dtype))
            elif qw.scheme == "log":
                deq = gm.graph.call_function(DEQUANTIZE_LOG, (*qnode, qw.bits, qw.group_size, qw.in_features, w.dtype))
            else:
                deq = gm.graph.call_function(DEQUANTIZE_VECTOR, (*qnode, qw.group_size, qw.in_features, w.dtype))
            lin = gm.graph.call_function(F.linear, (x, deq, bias))
        lin.meta.update({k: v for k, v in site.node.meta.items() if k in ("stack_trace", "nn_module_stack")})
        lin.meta["torchlite_name"] = site.name
        if layer_cfg.activations == "static":
            attr = attr_name(gm, f"{site.name}.x_scale")
            set_attr(gm, attr, static_activation_scale(stats[site.name], qw))
            lin.meta["torchlite_a8"] = attr
        elif layer_cfg.activations == "dynamic":
            lin.meta["torchlite_a8"] = ""
        site.node.replace_all_uses_with(lin)
        gm.graph.erase_node(site.node)
    return computed


def fold_quantize(gm: fx.GraphModule, computed: dict) -> None:
    """Step 2, in place: replace each `quantize(constant)` by constants holding its result."""
    for qnode in [n for n in gm.graph.nodes if n.target is QUANTIZE and n.args[0].op == "get_attr"]:
        qw = computed.get(qnode)
        parts = (qw.qdata, qw.scale, qw.zero) if qw else QUANTIZE(get_attr_value(gm, str(qnode.args[0].target)), *qnode.args[1:])
        name = qnode.meta.get("torchlite_name", qnode.name)
        for use in list(qnode.users):
            tensor = parts[use.args[1]]
            attr = attr_name(gm, f"{name}.{('qdata', 'scale', 'zero')[use.args[1]]}")
            set_attr(gm, attr, tensor)
            with gm.graph.inserting_before(use):
                const = gm.graph.get_attr(attr)
            use.replace_all_uses_with(const)
            gm.graph.erase_node(use)
        gm.graph.erase_node(qnode)


def fuse_qlinear(gm: fx.GraphModule) -> int:
    """Step 2, in place: linear(x, dequantize*(...), b) -> qlinear*(x, ..., b). Returns the count."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not F.linear:
            continue
        x, w, b = (list(node.args) + [None])[:3]
        if not (isinstance(w, fx.Node) and w.target in FUSED):
            continue
        op, n_weight = FUSED[w.target]
        weight, meta = w.args[:n_weight], w.args[n_weight:-1]  # the last argument is the dtype
        with gm.graph.inserting_before(node):
            if "torchlite_a8" in node.meta:
                attr = node.meta["torchlite_a8"]
                x_scale = gm.graph.get_attr(attr) if attr else None
                fused = gm.graph.call_function(QLINEAR_A8, (x, weight[0], weight[1], b, meta[2], x_scale))
            else:
                fused = gm.graph.call_function(op, (x, *weight, b, *meta))
        fused.meta.update({k: v for k, v in node.meta.items() if k != "torchlite_a8"})
        node.replace_all_uses_with(fused)
        gm.graph.erase_node(node)
        count += 1
    return count


def drop_unused_attributes(gm: fx.GraphModule, original: fx.GraphModule) -> None:
    """Detach weights that nothing in `gm` refers to any more (such as the replaced fp32 weights).

    Modules that `gm` shares with `original` are detached, never edited.
    """
    for node in reversed(list(gm.graph.nodes)):  # never a full DCE: it would drop in-place ops
        if not node.users and (node.op == "get_attr" or node.target in (*FUSED, operator.getitem, *TRANSPOSES)):
            gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
    used = {str(n.target) for n in gm.graph.nodes if n.op in ("get_attr", "call_module")}
    named = list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False))
    for name, _ in named:
        if name in used or any(name.startswith(u + ".") for u in used):
            continue
        owner_path, _, leaf = name.rpartition(".")
        owner = gm.get_submodule(owner_path) if owner_path else gm
        try:
            shared = original.get_submodule(owner_path) is owner
        except AttributeError:
            shared = False
        if not shared:
            delattr(owner, leaf)


def run(gm: fx.GraphModule, cfg: Quantize, calib=None, *, fold: bool = True, fuse: bool = True):
    """Quantize the weights of `gm`'s linear layers. Returns (new GraphModule, QuantizeReport)."""
    if not isinstance(cfg, Quantize):
        raise TypeError(f"quantize needs a torchlite.Quantize config, got {type(cfg).__name__}")
    check_calibration(cfg, calib)
    if (cfg.needs_calibration or cfg.schemes != {"linear"}) and not fold:
        raise TorchliteError(
            f"Quantize(method={cfg.method!r}, scheme={cfg.scheme!r}) computes its codes when the pass runs; fold=False "
            "(a run-time quantize op) exists only for method='rtn' with scheme='linear'"
        )
    if calib is not None:
        calib = calibration_batches(calib, "quantize")
    report = QuantizeReport(cfg)
    new = clone(gm)
    computed = insert_quantize_dequantize(new, cfg, report, calib)
    if fold:
        fold_quantize(new, computed)
    if fold and fuse:
        fuse_qlinear(new)
    drop_unused_attributes(new, gm)
    new.recompile()
    return new, report
