"""Pruning of linear layers on the FX graph.

- "unstructured": the least important weights become exact zeros (dense storage), per layer or
  ranked globally.
- "n:m": n weights kept in every m consecutive inputs; the layer becomes `torchlite::nm_linear` over
  the compressed storage (values plus small indices), or, with `pack=False`, stays a dense linear
  with the zeros in place so a later pass (quantize) sees it; `passes.pack_nm` packs it afterwards.
- "neuron" / "head" / "channel": whole units of dependency groups (`torchlite.graph.groups`) are
  removed: producers lose rows, consumers columns, coupled constants their slices, and reshapes that
  name the pruned size get the new one. The result is a smaller dense graph.

With a `Schedule`, pruning runs in steps towards the target with `callback(gm, step)` in between.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.fx as fx
from tqdm.auto import tqdm

from .. import ops as _ops  # noqa: F401  (registers torch.ops.torchlite)
from ..calibration import calibration_batches, observe_graph
from ..errors import TorchliteError
from ..graph import attr_name, clone, find_linears, get_attr_value, meta
from ..graph.cost import BATCH, SEQ, TOKENS, Cost, linear_cost, total
from ..graph.groups import RESHAPES, Group, dependency_groups, op_name, record_shapes, set_size, shape
from ..graph.linear import LinearSite
from ..graph.rewrite import drop_unused, replace_by_nm, replace_constant, shared_weights
from ..log import logger
from ..numerics.linear import check_finite
from ..recipe import Prune, check_calibration, matches
from ..report import Report, table
from ..numerics import importance as imp
from ..numerics.nm import check_nm, nm_mask, pack_nm

SHARED = "weight is also used outside this linear layer (e.g. tied to an embedding): pruning it would change that use"


@dataclass
class PruneLayer:
    name: str
    shape_before: tuple[int, int]
    shape_after: tuple[int, int]
    sparsity: float  # fraction of zero weights in the stored layer
    before: Cost
    after: Cost


@dataclass
class PruneGroupReport:
    name: str
    kind: str  # "neuron" or "head"
    units: int  # before pruning
    kept: int
    removed: list[int] = field(default_factory=list)  # unit indices removed (of the last step)


@dataclass
class PruneReport(Report):
    """`others`: the attention FLOPs of the heads pruned (in the totals); `steps`: target sparsity of each step."""

    layers: list[PruneLayer] = field(default_factory=list)
    groups: list[PruneGroupReport] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        """Fraction of the pruned layers' weights removed (zeros or shrunk away)."""
        before = sum(math.prod(lay.shape_before) for lay in self.layers)
        kept = sum(math.prod(lay.shape_after) * (1 - lay.sparsity) for lay in self.layers)
        return 1 - kept / before if before else 0.0

    def __str__(self) -> str:
        c = self.config
        steps = f", {len(self.steps)} steps" if len(self.steps) > 1 else ""
        head = (f"prune: {c.structure}" + (f" {c.n}:{c.m}" if c.structure == "n:m" else f" {c.sparsity:.0%}")
                + f", {c.importance}, {c.scope}{steps}: {self.sparsity:.1%} of the pruned layers' weights removed")
        rows = [
            [r.name, "x".join(map(str, r.shape_before)), "x".join(map(str, r.shape_after)), f"{r.sparsity:.1%}",
             r.before.params, r.after.params, r.before.bytes, r.after.bytes, r.before.flops, r.after.flops]
            for r in self.layers
        ]
        b, a = self.before, self.after
        rows.append(["total", "", "", "", b.params, a.params, b.bytes, a.bytes, b.flops, a.flops])
        headers = ["layer", "shape", "shape after", "zeros", "params", "params after", "bytes", "bytes after", "FLOPs", "FLOPs after"]
        out = [head, table(headers, rows)]
        if self.others:
            out.append(f"attention FLOPs (in the totals): {total(x for _, x, _ in self.others).flops} -> {total(x for _, _, x in self.others).flops}")
        out += [f"{g.kind} group {g.name}: {g.kept}/{g.units} units kept" for g in self.groups]
        reasons: dict[str, list[str]] = {}
        for name, why in self.skipped:
            reasons.setdefault(why, []).append(name)
        out += [f"left unpruned ({len(names)}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}): {why}"
                for why, names in reasons.items()]
        return "\n".join(out)


def _candidates(gm: fx.GraphModule, cfg: Prune, report: PruneReport) -> tuple[list[LinearSite], list[LinearSite]]:
    """(all linear layers, those to prune), every weight checked before anything changes."""
    sites = find_linears(gm)
    shared = shared_weights(gm, sites, tied_linears=True)
    out = []
    for s in sites:
        why = s.reason
        if why is None and id(s.weight_tensor) in shared:
            why = SHARED
        if why is None and matches(s.name, cfg.exclude):
            why = "excluded by the recipe"
        if why is not None:
            report.skipped.append((s.name, why))
            continue
        check_finite(s.weight_tensor, s.name)
        if cfg.structure == "n:m":
            try:
                check_nm(cfg.n, cfg.m, s.weight_tensor.shape[1])
            except TorchliteError as exc:
                raise TorchliteError(f"layer {s.name!r}: {exc}") from None
        out.append(s)
    return sites, out


def _set_weight(gm: fx.GraphModule, site: LinearSite, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Give the layer a new weight (and bias, when it has one); the old tensors are not touched."""
    if site.node.op == "call_module":
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype)
        linear.weight = torch.nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            linear.bias = torch.nn.Parameter(bias, requires_grad=False)
        name = attr_name(gm, site.name)
        gm.add_submodule(name, linear)
        site.node.target = name
        return
    site.weight.meta.setdefault(meta.NAME, f"{site.name}.weight")
    site.weight = replace_constant(gm, site.weight, weight, f"{site.name}.weight")
    site.weight_tensor = weight
    if bias is not None and isinstance(site.bias, fx.Node) and site.bias.op == "get_attr":
        site.bias.meta.setdefault(meta.NAME, f"{site.name}.bias")
        site.bias = replace_constant(gm, site.bias, bias, f"{site.name}.bias")


def _gradients(gm: fx.GraphModule, sites: list[LinearSite], batches) -> dict[str, torch.Tensor]:
    """Sum over the calibration batches of d loss / d W for each site's weight (torch.func.grad).

    The loss is next-token cross entropy when the graph maps token ids [B, S] to logits [B, S, V],
    otherwise half the mean square of the first output."""
    targets = {s.name: f"{s.node.target}.weight" if s.node.op == "call_module" else str(s.weight.target) for s in sites}
    params = {t: get_attr_value(gm, t).detach() for t in targets.values()}

    def loss(p, args):
        out = torch.func.functional_call(gm, p, args)
        y = out[0] if isinstance(out, (tuple, list)) else out
        ids = args[0] if args else None
        if isinstance(ids, torch.Tensor) and not ids.is_floating_point() and ids.dim() == 2 and y.dim() == 3 and y.shape[:2] == ids.shape:
            return torch.nn.functional.cross_entropy(y[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        return 0.5 * y.float().square().mean()

    grad = torch.func.grad(loss)
    acc = {t: torch.zeros_like(p, dtype=torch.float32) for t, p in params.items()}
    for args, _ in tqdm(batches, desc="prune: gradients", leave=False):
        for t, g in grad(params, args).items():
            acc[t] += g.float()
    return {name: acc[t] for name, t in targets.items()}


def _scores(gm, cfg: Prune, sites: list[LinearSite], batches) -> dict[str, torch.Tensor]:
    stats = grads = None
    if cfg.importance == "wanda":
        stats = observe_graph(gm, {s.name: (s.x, s.weight_tensor.shape[1]) for s in sites}, batches, "prune")
    if cfg.importance == "taylor":
        grads = _gradients(gm, sites, batches)
    return {
        s.name: imp.weight_scores(s.weight_tensor, cfg.importance, stats and stats[s.name], grads and grads[s.name])
        for s in sites
    }


def _prune_weights(gm, cfg: Prune, sparsity: float, sites, scores, report: PruneReport, pack: bool) -> dict[str, torch.Tensor]:
    """Unstructured and N:M. Returns the keep-mask of each layer. Consumes `scores` (made absolute in
    place and dropped layer by layer, so a large model holds one extra copy of its weights, not three)."""
    for v in scores.values():
        v.abs_()  # fresh tensors from weight_scores; Taylor's signed products rank by |g w|
    masks = imp.global_masks(scores, sparsity) if cfg.scope == "global" and cfg.structure != "n:m" else {}
    for site in sites:
        if site.name not in masks:
            s = scores.pop(site.name)
            if cfg.structure == "n:m":
                masks[site.name] = nm_mask(s, cfg.n, cfg.m)
            else:
                masks[site.name] = imp.layer_mask(s, sparsity, per_row=cfg.importance == "wanda")
            del s
        w = site.weight_tensor
        pruned = (w.detach() * masks[site.name]).to(w.dtype)
        bias = site.bias_tensor(gm)
        before = linear_cost(w.shape[1], w.shape[0], bias=bias is not None, itemsize=w.element_size())
        nnz = int(masks[site.name].sum()) + (w.shape[0] if bias is not None else 0)
        if cfg.structure == "n:m":
            nmw = pack_nm(pruned, cfg.n, cfg.m)
            bias_bytes = 0 if bias is None else bias.numel() * bias.element_size()
            after = Cost(nnz, nmw.nbytes + bias_bytes, 2 * nmw.values.numel() * TOKENS)
            if pack:
                replace_by_nm(gm, site, nmw)
            else:
                _set_weight(gm, site, pruned, None)
        else:
            after = Cost(nnz, before.bytes, before.flops)
            _set_weight(gm, site, pruned, None)
        zeros = 1 - int(masks[site.name].sum()) / masks[site.name].numel()
        report.layers.append(PruneLayer(site.name, tuple(w.shape), tuple(w.shape), zeros, before, after))
    return masks


def _kind(g: Group) -> str:
    return "head" if g.attention else "neuron"


def _wanted(g: Group, structure: str) -> bool:
    if structure == "head":
        return g.attention
    if structure == "neuron":
        return not g.attention and all(g.units == s.weight_tensor.shape[0] for s in g.producers)
    return True


def _unit_scores(gm, g: Group, cfg: Prune, scores: dict[str, torch.Tensor]) -> torch.Tensor:
    u = g.units
    if cfg.importance == "wanda":  # activation-weighted consumer columns (the producers' inputs say nothing of a unit)
        parts = [(scores[s.name], 1) for s in g.consumers]
    else:
        parts = [(scores[s.name], 0) for s in g.producers] + [(scores[s.name], 1) for s in g.consumers]
        for s in g.producers:
            b = s.bias_tensor(gm)
            if b is not None and cfg.importance in ("l1", "l2"):
                parts.append((imp.weight_scores(b, cfg.importance), 0))
    return imp.unit_scores(parts, u, signed=cfg.importance == "taylor")


def _shrink(gm: fx.GraphModule, g: Group, kept: list[int]) -> None:
    """Remove the units of `g` not in `kept` from every member, in place."""
    u = g.units
    for s in g.producers:
        w, b = s.weight_tensor, s.bias_tensor(gm)
        rows = g.indices(w.shape[0], kept, u)
        _set_weight(gm, s, w.detach()[rows].clone(), None if b is None else b.detach()[rows].clone())
    for s in g.consumers:
        w = s.weight_tensor
        _set_weight(gm, s, w.detach()[:, g.indices(w.shape[1], kept, u)].clone(), None)
    for node, axis in g.constants.items():
        t = get_attr_value(gm, str(node.target))
        replace_constant(gm, node, t.detach().index_select(axis, g.indices(t.shape[axis], kept, u)).clone(), str(node.target))
    for node, axis in g.members.items():
        if node.op == "get_attr" or node.graph is not gm.graph:
            continue
        old = shape(node)
        new = old[:axis] + (old[axis] // u * len(kept),) + old[axis + 1:]
        node.meta[meta.SHAPE] = new
        if op_name(node) in RESHAPES | {"expand"}:
            set_size(node, axis, new[axis])


def _attention_cost(node: fx.Node, heads: int) -> Cost:
    """FLOPs of scaled-dot-product attention with `heads` heads: QK^T and AV, 2 * 2 * S^2 * D per head."""
    return Cost(0, 0, 4 * BATCH * SEQ**2 * heads * shape(node)[-1])


def _prune_groups(gm, cfg: Prune, sparsity: float, all_sites, scores, report: PruneReport, original: dict[str, int] | None) -> None:
    groups = dependency_groups(gm, all_sites)
    chosen = []
    for g in groups:
        if g.reason is not None:
            report.skipped.append((g.name or "?", g.reason))
        elif not all(s.name in scores for s in g.producers + g.consumers):
            left = [s.name for s in g.producers + g.consumers if s.name not in scores]
            report.skipped.append((g.name, f"coupled with {', '.join(left)}, which is not pruned"))
        elif _wanted(g, cfg.structure):
            chosen.append(g)
    unit_scores = {g.name: _unit_scores(gm, g, cfg, scores) for g in chosen}
    if cfg.scope == "global":
        removals = imp.global_unit_removals(unit_scores, sparsity)
    else:
        removals = {}
        for g in chosen:
            first = (original or {}).get(g.name, g.units)
            removals[g.name] = max(0, imp.pruned_count(first, sparsity) - (first - g.units))
    removals = {name: imp.rounded_removals(unit_scores[name].numel(), r, cfg.round_to) for name, r in removals.items()}
    sites = [s for g in chosen for s in g.producers + g.consumers]
    before = {s.name: (tuple(s.weight_tensor.shape), s.bias_tensor(gm) is not None, s.weight_tensor.element_size()) for s in sites}
    for g in chosen:
        try:
            kept = imp.kept_units(unit_scores[g.name], removals[g.name])
        except TorchliteError as exc:
            raise TorchliteError(f"group {g.name}: {exc}") from None
        units = g.units
        sdpa = [n for n in g.members if op_name(n) == "scaled_dot_product_attention"]
        heads = {n: shape(n)[g.members[n]] for n in sdpa}
        _shrink(gm, g, kept)
        for n in sdpa:
            report.others.append((n.name, _attention_cost(n, heads[n]), _attention_cost(n, heads[n] // units * len(kept))))
        report.groups.append(PruneGroupReport(g.name, _kind(g), units, len(kept), sorted(set(range(units)) - set(kept))))
    for s in sites:
        (out_f, in_f), has_bias, size = before[s.name]
        w = s.weight_tensor
        zeros = int((w == 0).sum()) / w.numel()
        report.layers.append(PruneLayer(
            s.name, (out_f, in_f), tuple(w.shape), zeros,
            linear_cost(in_f, out_f, bias=has_bias, itemsize=size),
            linear_cost(w.shape[1], w.shape[0], bias=has_bias, itemsize=size),
        ))


def step(gm, cfg: Prune, sparsity: float, batches, pack: bool, original: dict[str, int] | None):
    """One pruning step of `gm` to `sparsity` (structured: with `original`, the unit count of each group
    before the first step, the target counts from those). Returns (new gm, PruneReport, keep-masks of
    unstructured / N:M layers or None)."""
    report = PruneReport(cfg, steps=[sparsity])
    new = clone(gm)
    all_sites, sites = _candidates(new, cfg, report)
    scores = _scores(new, cfg, sites, batches)
    masks = None
    if cfg.structured:
        _prune_groups(new, cfg, sparsity, all_sites, scores, report, original)
    else:
        masks = _prune_weights(new, cfg, sparsity, sites, scores, report, pack)
    drop_unused(new, gm)
    new.recompile()
    if cfg.structured and batches:
        try:
            record_shapes(new, batches[0][0])
        except Exception as exc:  # a rule missed a coupling: never hand back a broken graph
            raise RuntimeError(f"prune: the shrunk graph no longer runs ({type(exc).__name__}: {exc})") from exc
    return new, report, masks


def run(gm: fx.GraphModule, cfg: Prune, calib=None, *, pack: bool = True, callback=None):
    """Prune `gm`'s linear layers. Returns (new GraphModule, PruneReport).

    `pack=False` leaves N:M layers as dense linears holding the zeros (for a later quantize pass;
    `passes.pack_nm` packs them). With `cfg.schedule`, `callback(gm, step)` runs after every step (e.g.
    to fine-tune the graph's weights); weights pruned so far are set back to zero after it returns.
    """
    if not isinstance(cfg, Prune):
        raise TypeError(f"prune needs a torchlite.Prune config, got {type(cfg).__name__}")
    check_calibration(cfg, calib)
    batches = calibration_batches(calib, "prune") if calib is not None else None
    return apply(gm, cfg, batches, pack=pack, callback=callback)


def apply(gm: fx.GraphModule, cfg: Prune, batches=None, *, pack: bool = True, callback=None):
    """`run` on validated input (the pipeline validates a whole recipe once)."""
    if batches and any(kwargs for _, kwargs in batches):
        raise TorchliteError("prune: a GraphModule is calibrated with positional batches (tensors or tuples), not dicts")
    if cfg.schedule is None:
        new, report, _ = step(gm, cfg, cfg.sparsity, batches, pack, None)
    else:
        new, report = in_steps(
            cfg, lambda current, sparsity, original: step(current, cfg, sparsity, batches, pack, original), gm,
            callback, _reapply,
        )
    logger.debug("%s", report)
    return new, report


def in_steps(cfg: Prune, prune_step, target, callback, reapply):
    """Iterative pruning of `target` (a graph, or a model for `torchlite.compress`) by `cfg.schedule`.

    `prune_step(target, sparsity, original) -> (target, report, masks)` prunes once (`original`: each
    group's unit count before the first step, None in the first step). After every step
    `callback(target, step)` runs under torch.manual_seed(schedule.seed + step), then
    `reapply(target, masks)` zeros again what earlier steps removed (a fine-tuning callback may move
    those weights). Returns (target, one PruneReport for all steps)."""
    original, reports = None, []
    targets = cfg.schedule.sparsities(cfg.sparsity)
    relative = cfg.structured and cfg.scope == "global"  # global ranks the units still there
    for i, sparsity in enumerate(tqdm(targets, desc="prune: steps")):
        if relative and i:
            sparsity = 1 - (1 - sparsity) / (1 - targets[i - 1])
        target, report, masks = prune_step(target, sparsity, original)
        if original is None:
            original = {g.name: g.units for g in report.groups}
        reports.append(report)
        if callback is not None:
            torch.manual_seed(cfg.schedule.seed + i)
            callback(target, i)
            if masks:
                reapply(target, masks)
    return target, _merge_reports(cfg, reports)


def _reapply(gm: fx.GraphModule, masks: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for site in find_linears(gm):
            if site.name in masks and site.weight_tensor is not None:
                site.weight_tensor.mul_(masks[site.name].to(site.weight_tensor.dtype))


def _merge_reports(cfg: Prune, reports: list[PruneReport]) -> PruneReport:
    """One report for all steps: layers from the first step's 'before' to the last step's 'after'."""
    first, last = reports[0], reports[-1]
    begin = {lay.name: lay for lay in first.layers}
    layers = [replace(lay, shape_before=begin[lay.name].shape_before, before=begin[lay.name].before) if lay.name in begin else lay
              for lay in last.layers]
    att_begin = {name: b for name, b, _ in first.others}
    others = [(name, att_begin.get(name, b), a) for name, b, a in last.others]
    groups = [replace(g, units=next((f.units for f in first.groups if f.name == g.name), g.units)) for g in last.groups]
    return PruneReport(cfg, layers=layers, skipped=last.skipped, others=others, groups=groups,
                       steps=cfg.schedule.sparsities(cfg.sparsity))
