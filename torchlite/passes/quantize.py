"""Weight-only linear quantization of every linear-like op whose weight is a graph constant.

Two steps, both visible in the returned graph when `fuse=False`:
1. insert: `linear(x, W, b)` -> `linear(x, torchlite.dequantize(qW, scale, zero), b)`; the weight
   is quantized once, here (constant folding of quantize on a constant), and only the packed
   integers, scales and zero points are stored in the new graph.
2. fuse: `linear(x, torchlite.dequantize(...), b)` -> `torchlite.qlinear(x, qW, scale, zero, b)`,
   the op whose Inductor lowering reads the packed weight directly.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F

from .. import ops as _ops  # noqa: F401  (registers torch.ops.torchlite)
from ..graph import attr_name, clone, find_linears, set_attr
from ..graph.linear import LinearSite
from ..log import logger
from ..quant.linear import QuantizedWeight, check_finite, quantize_weight
from ..recipe import Quantize
from ..report import mb, table

DEQUANTIZE = torch.ops.torchlite.dequantize.default
QLINEAR = torch.ops.torchlite.qlinear.default


@dataclass
class LayerReport:
    name: str
    shape: tuple[int, int]
    bytes_before: int
    bytes_after: int
    max_abs_error: float
    rel_error: float  # ||W - Ŵ||_F / ||W||_F


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

    def __str__(self) -> str:
        c = self.config
        head = (
            f"quantize: {c.bits}-bit {'symmetric' if c.symmetric else 'asymmetric'} per {c.granularity}"
            + (f" (group {c.group_size})" if c.group_size else "")
            + f", {len(self.layers)} layer(s) quantized, {len(self.skipped)} skipped"
        )
        rows = [
            [r.name, f"{r.shape[0]}x{r.shape[1]}", mb(r.bytes_before), mb(r.bytes_after), r.max_abs_error, r.rel_error]
            for r in self.layers
        ]
        if self.layers:
            ratio = self.bytes_before / max(self.bytes_after, 1)
            rows.append(["total", "", mb(self.bytes_before), mb(self.bytes_after), f"{ratio:.2f}x smaller", ""])
        out = [head, table(["layer", "shape", "MB before", "MB after", "max |err|", "rel err"], rows)]
        out += [f"skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(out)


def excluded(name: str, patterns: tuple[str, ...]) -> bool:
    return any(name == p or name.endswith("." + p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def layer_report(name: str, weight: torch.Tensor, qw: QuantizedWeight) -> LayerReport:
    w = weight.detach().float()
    err = qw.dequantize() - w
    return LayerReport(
        name=name,
        shape=tuple(w.shape),
        bytes_before=weight.numel() * weight.element_size(),
        bytes_after=qw.nbytes,
        max_abs_error=err.abs().max().item(),
        rel_error=(err.norm() / w.norm().clamp_min(1e-30)).item(),
    )


def _weight_and_bias_nodes(gm: fx.GraphModule, site: LinearSite):
    """For `call_module` sites, expose the module's bias as a top-level constant of `gm`."""
    if site.node.op != "call_module":
        return site.bias
    bias = gm.get_submodule(str(site.node.target)).bias
    if bias is None:
        return None
    name = attr_name(gm, site.name + ".bias")
    set_attr(gm, name, bias.detach())
    with gm.graph.inserting_before(site.node):
        return gm.graph.get_attr(name)


def insert_dequantize(gm: fx.GraphModule, cfg: Quantize, report: QuantizeReport) -> None:
    """Step 1, in place on a fresh clone."""
    sites = find_linears(gm)
    chosen = []
    for site in sites:
        if site.reason is None and excluded(site.name, cfg.exclude):
            site.reason = "excluded by the recipe"
        if site.reason is not None:
            report.skipped.append((site.name, site.reason))
            logger.info("quantize: leaving %s as it is: %s", site.name, site.reason)
            continue
        check_finite(site.weight_tensor, site.name)  # every layer is checked before any is rewritten
        chosen.append(site)
    done: dict[int, tuple[fx.Node, ...]] = {}
    for site in chosen:
        w = site.weight_tensor
        key = id(w)
        if key not in done:
            qw = quantize_weight(w, cfg.bits, cfg.group_size, cfg.symmetric, cfg.granularity)
            report.layers.append(layer_report(site.name, w, qw))
            names = []
            for part in ("qdata", "scale", "zero"):
                t = getattr(qw, part)
                if t is None:
                    names.append(None)
                    continue
                names.append(attr_name(gm, f"{site.name}.{part}"))
                set_attr(gm, names[-1], t)
            done[key] = (names, qw)
        names, qw = done[key]
        bias = _weight_and_bias_nodes(gm, site)
        with gm.graph.inserting_before(site.node):
            q, s, z = (gm.graph.get_attr(n) if n else None for n in names)
            deq = gm.graph.call_function(
                DEQUANTIZE, (q, s, z, qw.bits, qw.group_size, qw.in_features, w.dtype)
            )
            lin = gm.graph.call_function(F.linear, (site.x, deq, bias))
        lin.meta.update({k: v for k, v in site.node.meta.items() if k in ("stack_trace", "nn_module_stack")})
        site.node.replace_all_uses_with(lin)
        gm.graph.erase_node(site.node)


def fuse_qlinear(gm: fx.GraphModule) -> int:
    """Step 2, in place: linear(x, dequantize(...), b) -> qlinear(x, ..., b). Returns the count."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not F.linear:
            continue
        x, w, b = (list(node.args) + [None])[:3]
        if not (isinstance(w, fx.Node) and w.target is DEQUANTIZE):
            continue
        q, s, z, bits, gs, k, _dtype = w.args
        with gm.graph.inserting_before(node):
            fused = gm.graph.call_function(QLINEAR, (x, q, s, z, b, bits, gs, k))
        fused.meta.update(node.meta)
        node.replace_all_uses_with(fused)
        gm.graph.erase_node(node)
        count += 1
    return count


def drop_unused_attributes(gm: fx.GraphModule, original: fx.GraphModule) -> None:
    """Detach weights that nothing in `gm` refers to any more (such as the replaced fp32 weights).

    Modules that `gm` shares with `original` are detached, never edited.
    """
    for node in reversed(list(gm.graph.nodes)):  # never a full DCE: it would drop in-place ops
        if not node.users and (node.op == "get_attr" or node.target is DEQUANTIZE):
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


def run(gm: fx.GraphModule, cfg: Quantize, calib=None, *, fuse: bool = True):
    """Quantize the weights of `gm`'s linear layers. Returns (new GraphModule, QuantizeReport)."""
    if not isinstance(cfg, Quantize):
        raise TypeError(f"quantize needs a torchlite.Quantize config, got {type(cfg).__name__}")
    if calib is not None:
        logger.debug("quantize: round-to-nearest quantization uses no calibration data; ignoring calib")
    report = QuantizeReport(cfg)
    new = clone(gm)
    insert_dequantize(new, cfg, report)
    if fuse:
        fuse_qlinear(new)
    drop_unused_attributes(new, gm)
    new.recompile()
    return new, report
