"""Weight-only linear quantization of every linear-like op whose weight is a graph constant.

Two steps; `fuse=False` stops after the first and returns that graph:
1. insert: `linear(x, W, b)` -> `linear(x, dequantize(qW, scale, zero), b)`: the weight is quantized
   when the pass runs (by its scheme and method, `torchlite.numerics.schemes`) and the graph keeps
   only the stored integers, scales and zero points (or codebooks) as constants, no fp32 weight.
   With `fold=False` (round-to-nearest linear codes only) the graph quantizes at run time instead:
   `linear(x, dequantize(*quantize(W)), b)`.
2. fuse: `linear(x, dequantize(qW, scale, zero), b)` -> `qlinear(x, qW, scale, zero, b)` (each
   scheme's linear op), whose Inductor lowering reads the stored weight directly.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F

from .. import ops as _ops  # noqa: F401  (registers torch.ops.torchlite)
from ..calibration import calibration_batches, observe_graph
from ..errors import TorchliteError
from ..graph import clone, find_linears, meta
from ..graph.cost import TOKENS, Cost, linear_cost
from ..graph.rewrite import drop_unused, linear_part, new_constant, replace_linear
from ..log import logger
from ..numerics import schemes
from ..numerics.linear import check_finite
from ..numerics.stats import InputStats, output_error, static_activation_scale
from ..recipe import Quantize, check_calibration, matches
from ..report import Costed, Report, mb, table

QUANTIZE = torch.ops.torchlite.quantize.default
QLINEAR_A8 = torch.ops.torchlite.qlinear_a8.default


@dataclass
class LayerReport(Costed):
    name: str
    shape: tuple[int, int]
    bits: int
    before: Cost
    after: Cost
    max_abs_error: float
    rel_error: float  # ||W - Ŵ||_F / ||W||_F
    output_error: float | None = None  # ||(W - Ŵ) Xᵀ||_F / ||W Xᵀ||_F on the calibration data

    @property
    def bits_per_weight(self) -> float:
        """Stored bits (codes, scales, zero points, codebooks, padding) per weight."""
        return 8 * self.bytes_after / (self.shape[0] * self.shape[1])


@dataclass
class QuantizeReport(Report):
    layers: list[LayerReport] = field(default_factory=list)

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight over all quantized layers (codebooks, scales and padding included)."""
        return 8 * self.bytes_after / max(sum(r.shape[0] * r.shape[1] for r in self.layers), 1)

    def __str__(self) -> str:
        c = self.config
        head = (f"quantize: {schemes.SCHEMES[c.scheme].describe(c)}, {c.method}, {len(self.layers)} layer(s) quantized, "
                f"{len(self.skipped)} skipped")
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


def layer_report(name: str, weight: torch.Tensor, qw, stats: InputStats | None = None) -> LayerReport:
    w = weight.detach().float()
    approx = qw.effective_weight()
    err = approx - w
    out_f, in_f = w.shape
    before = linear_cost(in_f, out_f, itemsize=weight.element_size())
    return LayerReport(
        name=name,
        shape=(out_f, in_f),
        bits=qw.bits,
        before=before,
        after=Cost(before.params, qw.nbytes, 2 * out_f * in_f * TOKENS),
        max_abs_error=err.abs().max().item(),
        rel_error=(err.norm() / w.norm().clamp_min(1e-30)).item(),
        output_error=None if stats is None else output_error(w, approx, stats),
    )


def skip_reasons(layers: list[tuple[str, torch.Tensor, str | None]], cfg: Quantize) -> list[str | None]:
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
) -> list:
    """Quantize the weights of (name, weight, reason-to-skip) layers that `cfg` does not exclude.

    Shared by the pass and `torchlite.compress`. Every chosen weight is checked for NaN/Inf (and its
    shape, by its scheme) before any is quantized; a weight shared by several layers (tied) is
    quantized and reported once (with the statistics of its first layer). `stats` (by layer name) are
    needed by the calibrated methods. Returns, per layer, its quantized weight (the same object for tied
    layers) or None if skipped.
    """
    reasons = skip_reasons(layers, cfg)
    for (name, weight, _), reason in zip(layers, reasons):
        if reason is None:
            check_finite(weight, name)
            layer_cfg = cfg.for_layer(name)
            schemes.SCHEMES[layer_cfg.scheme].check(name, weight.shape, layer_cfg)
        else:
            report.skipped.append((name, reason))
            logger.info("quantize: leaving %s as it is: %s", name, reason)
    done: dict[int, object] = {}
    out = []
    for (name, weight, _), reason in zip(layers, reasons):
        if reason is None and id(weight) not in done:
            layer_stats = stats.get(name) if stats else None
            done[id(weight)] = schemes.quantize(weight, cfg.for_layer(name), layer_stats)
            report.layers.append(layer_report(name, weight, done[id(weight)], layer_stats))
        out.append(None if reason else done[id(weight)])
    return out


def _runtime_quantize(gm: fx.GraphModule, site, cfg: Quantize) -> list:
    """(qdata, scale, zero) nodes of a run-time `quantize(W)` (fold=False)."""
    weight = linear_part(gm, site, "weight")
    args = (weight, cfg.bits, cfg.group_size or 0, cfg.symmetric, cfg.granularity)
    with gm.graph.inserting_after(weight):
        qnode = gm.graph.call_function(QUANTIZE, args)
    qnode.meta[meta.NAME] = site.name
    with gm.graph.inserting_before(site.node):
        parts = [gm.graph.call_function(operator.getitem, (qnode, i)) for i in range(2 if cfg.symmetric else 3)]
    return parts + [None] * (3 - len(parts))


def insert_dequantize(gm: fx.GraphModule, cfg: Quantize, report: QuantizeReport, calib=None, fold: bool = True) -> None:
    """Step 1, in place on a fresh clone."""
    sites = find_linears(gm)
    layers = [(s.name, s.weight_tensor, s.reason) for s in sites]
    stats = None
    if calib is not None:
        watch = {s.name: (s.x, s.weight_tensor.shape[1]) for s, why in zip(sites, skip_reasons(layers, cfg)) if why is None}
        stats = observe_graph(gm, watch, calib, "quantize")
    quantized = quantize_layers(layers, cfg, report, stats)
    tensors: dict[int, list] = {}  # one set of stored tensors per distinct quantized weight
    for site, qw in zip(sites, quantized):
        if qw is None:
            continue
        w = site.weight_tensor
        layer_cfg = cfg.for_layer(site.name)
        scheme = schemes.SCHEMES[qw.scheme]
        if id(qw) not in tensors:
            if fold:
                values, _ = scheme.args(qw)
                tensors[id(qw)] = [None if t is None else new_constant(gm, f"{site.name}.{part}", t, site.node)
                                   for part, t in zip(scheme.tensors, values)]
            else:
                tensors[id(qw)] = _runtime_quantize(gm, site, layer_cfg)
        x = site.x
        bias = linear_part(gm, site, "bias")
        with gm.graph.inserting_before(site.node):
            if qw.input_scale is not None:
                scale = new_constant(gm, f"{site.name}.input_scale", qw.input_scale.to(w.dtype), site.node)
                x = gm.graph.call_function(torch.mul, (x, scale))
            _, attributes = scheme.args(qw)
            deq = gm.graph.call_function(scheme.dequantize, (*tensors[id(qw)], *attributes, w.dtype))
            lin = gm.graph.call_function(F.linear, (x, deq, bias))
        if layer_cfg.activations == "static":
            lin.meta[meta.A8] = str(new_constant(gm, f"{site.name}.x_scale", static_activation_scale(stats[site.name], qw.input_scale), lin).target)
        elif layer_cfg.activations == "dynamic":
            lin.meta[meta.A8] = ""
        replace_linear(gm, site, lin)


def fuse_qlinear(gm: fx.GraphModule) -> int:
    """Step 2, in place: linear(x, <scheme's dequantize>(...), b) -> <scheme's linear op>(x, ..., b).
    Returns the count."""
    fused_ops = {s.dequantize: s for s in schemes.SCHEMES.values()}
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not F.linear:
            continue
        x, w, b = (list(node.args) + [None])[:3]
        if not (isinstance(w, fx.Node) and w.target in fused_ops):
            continue
        scheme = fused_ops[w.target]
        n_tensors = len(scheme.tensors)
        weight, attributes = w.args[:n_tensors], w.args[n_tensors:-1]  # the last argument is the dtype
        with gm.graph.inserting_before(node):
            if meta.A8 in node.meta:
                attr = node.meta[meta.A8]
                x_scale = gm.graph.get_attr(attr) if attr else None
                fused = gm.graph.call_function(QLINEAR_A8, (x, weight[0], weight[1], b, attributes[-1], x_scale))
            else:
                fused = gm.graph.call_function(scheme.linear, (x, *weight, b, *attributes))
        fused.meta.update({k: v for k, v in node.meta.items() if k != meta.A8})
        node.replace_all_uses_with(fused)
        gm.graph.erase_node(node)
        count += 1
    return count


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
    return apply(gm, cfg, None if calib is None else calibration_batches(calib, "quantize"), fold=fold, fuse=fuse)


def apply(gm: fx.GraphModule, cfg: Quantize, batches=None, *, fold: bool = True, fuse: bool = True):
    """`run` on validated input (the pipeline validates a whole recipe once)."""
    report = QuantizeReport(cfg)
    new = clone(gm)
    insert_dequantize(new, cfg, report, batches, fold)
    if fold and fuse:
        fuse_qlinear(new)
    drop_unused(new, gm, {s.dequantize for s in schemes.SCHEMES.values()})
    new.recompile()
    return new, report
