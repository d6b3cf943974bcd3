"""Pruning of linear layers on the FX graph.

- "unstructured": the least important weights become exact zeros (dense storage), per layer or
  ranked globally.
- "n:m": n weights kept in every m consecutive inputs; the layer becomes `torchlite::nm_linear` over
  the compressed storage (values plus small indices), or, with `pack=False`, stays a dense linear
  with the zeros in place so a later pass (quantize) sees it; `sparsify` packs it afterwards.
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
from ..graph import attr_name, clone, find_linears, get_attr_value, set_attr
from ..graph.cost import BATCH, SEQ, TOKENS, Cost, linear_cost, total
from ..graph.groups import RESHAPES, Group, _shape_list, dependency_groups, op_name, record_shapes, shape
from ..graph.linear import LinearSite, weights_used_elsewhere
from ..log import logger
from ..numerics.linear import check_finite
from ..recipe import Prune, check_calibration, matches
from ..report import table
from ..numerics import importance as imp
from ..numerics.nm import check_nm, nm_mask, pack_nm, pack_nm_codes
from .quantize import QLINEAR, _constant_node, drop_unused_attributes

NM_LINEAR = torch.ops.torchlite.nm_linear.default
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
class PruneReport:
    config: Prune
    layers: list[PruneLayer] = field(default_factory=list)
    groups: list[PruneGroupReport] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    attention: list[tuple[str, Cost, Cost]] = field(default_factory=list)  # heads pruned: sdpa FLOPs
    steps: list[float] = field(default_factory=list)  # target sparsity of each step

    @property
    def before(self) -> Cost:
        return total([lay.before for lay in self.layers] + [b for _, b, _ in self.attention])

    @property
    def after(self) -> Cost:
        return total([lay.after for lay in self.layers] + [a for _, _, a in self.attention])

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
        if self.attention:
            out.append(f"attention FLOPs (in the totals): {total(x for _, x, _ in self.attention).flops} -> {total(x for _, _, x in self.attention).flops}")
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
    shared = weights_used_elsewhere(gm, sites)
    counts: dict[int, int] = {}
    for s in sites:
        if s.weight_tensor is not None:
            counts[id(s.weight_tensor)] = counts.get(id(s.weight_tensor), 0) + 1
    out = []
    for s in sites:
        why = s.reason
        if why is None and (id(s.weight_tensor) in shared or counts[id(s.weight_tensor)] > 1):
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


def _constant(gm: fx.GraphModule, node: fx.Node, tensor: torch.Tensor, name: str) -> fx.Node:
    """Point every use of the get_attr `node` at a new constant holding `tensor`."""
    attr = attr_name(gm, name)
    set_attr(gm, attr, tensor)
    with gm.graph.inserting_before(node):
        new = gm.graph.get_attr(attr)
    new.meta.update(node.meta)
    new.meta["torchlite_name"] = node.meta.get("torchlite_name", str(node.target))
    new.meta["torchlite_shape"] = tuple(tensor.shape)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


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
    site.weight.meta.setdefault("torchlite_name", f"{site.name}.weight")
    site.weight = _constant(gm, site.weight, weight, f"{site.name}.weight")
    site.weight_tensor = weight
    if bias is not None and isinstance(site.bias, fx.Node) and site.bias.op == "get_attr":
        site.bias.meta.setdefault("torchlite_name", f"{site.name}.bias")
        site.bias = _constant(gm, site.bias, bias, f"{site.name}.bias")


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
                _replace_by_nm(gm, site, nmw, bias)
            else:
                _set_weight(gm, site, pruned, None)
        else:
            after = Cost(nnz, before.bytes, before.flops)
            _set_weight(gm, site, pruned, None)
        zeros = 1 - int(masks[site.name].sum()) / masks[site.name].numel()
        report.layers.append(PruneLayer(site.name, tuple(w.shape), tuple(w.shape), zeros, before, after))
    return masks


def _replace_by_nm(gm: fx.GraphModule, site: LinearSite, nmw, bias: torch.Tensor | None) -> None:
    parts = {"nm_values": nmw.values, "nm_indices": nmw.indices, "nm_scale": nmw.scale}
    nodes = {}
    for part, tensor in parts.items():
        if tensor is None:
            nodes[part] = None
            continue
        attr = attr_name(gm, f"{site.name}.{part}")
        set_attr(gm, attr, tensor)
        with gm.graph.inserting_before(site.node):
            nodes[part] = gm.graph.get_attr(attr)
    bias_node = _constant_node(gm, site, "bias", bias)
    with gm.graph.inserting_before(site.node):
        y = gm.graph.call_function(
            NM_LINEAR, (site.x, nodes["nm_values"], nodes["nm_indices"], nodes["nm_scale"], bias_node, nmw.n, nmw.m, nmw.in_features)
        )
    y.meta.update({k: v for k, v in site.node.meta.items() if k in ("stack_trace", "nn_module_stack", "torchlite_shape")})
    y.meta["torchlite_name"] = site.name
    site.node.replace_all_uses_with(y)
    gm.graph.erase_node(site.node)


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
        _constant(gm, node, t.detach().index_select(axis, g.indices(t.shape[axis], kept, u)).clone(), str(node.target))
    for node, axis in g.members.items():
        if node.op == "get_attr" or node.graph is not gm.graph:
            continue
        old = shape(node)
        new = old[:axis] + (old[axis] // u * len(kept),) + old[axis + 1:]
        node.meta["torchlite_shape"] = new
        if op_name(node) in RESHAPES | {"expand"}:
            _set_literal(node, axis, new[axis])


def _set_literal(node: fx.Node, axis: int, size: int) -> None:
    literal = _shape_list(node)
    if literal is None or len(literal) <= axis or literal[axis] == -1:
        return
    literal[axis] = size
    packed = len(node.args) == 2 and isinstance(node.args[1], (list, tuple))
    node.args = (node.args[0], literal) if packed else (node.args[0], *literal)


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
            report.attention.append((n.name, _attention_cost(n, heads[n]), _attention_cost(n, heads[n] // units * len(kept))))
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


def _step(gm, cfg: Prune, sparsity: float, batches, pack: bool, original: dict[str, int] | None):
    report = PruneReport(cfg, steps=[sparsity])
    new = clone(gm)
    all_sites, sites = _candidates(new, cfg, report)
    scores = _scores(new, cfg, sites, batches)
    masks = None
    if cfg.structured:
        _prune_groups(new, cfg, sparsity, all_sites, scores, report, original)
    else:
        masks = _prune_weights(new, cfg, sparsity, sites, scores, report, pack)
    drop_unused_attributes(new, gm)
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
    `sparsify` packs them). With `cfg.schedule`, `callback(gm, step)` runs after every step (e.g. to
    fine-tune the graph's weights); weights pruned so far are set back to zero after it returns.
    """
    if not isinstance(cfg, Prune):
        raise TypeError(f"prune needs a torchlite.Prune config, got {type(cfg).__name__}")
    check_calibration(cfg, calib)
    batches = calibration_batches(calib, "prune") if calib is not None else None
    if batches and any(kwargs for _, kwargs in batches):
        raise TorchliteError("prune: a GraphModule is calibrated with positional batches (tensors or tuples), not dicts")
    if cfg.schedule is None:
        new, report, _ = _step(gm, cfg, cfg.sparsity, batches, pack, None)
        logger.debug("%s", report)
        return new, report
    original = None
    current, reports = gm, []
    for step, target in scheduled_steps(cfg, relative=cfg.structured and cfg.scope == "global"):
        current, report, masks = _step(current, cfg, target, batches, pack, original)
        if original is None:
            original = {g.name: g.units for g in report.groups}
        reports.append(report)
        if callback is not None:
            seeded_callback(cfg, callback, current, step)
            if masks:
                _reapply(current, masks)
    report = merge_reports(cfg, reports)
    logger.debug("%s", report)
    return current, report


def scheduled_steps(cfg: Prune, relative: bool):
    """(step, sparsity to prune to) for each step of `cfg.schedule`, with a progress bar; with
    `relative`, from the second step on as a fraction of the units still there."""
    targets = cfg.schedule.sparsities(cfg.sparsity)
    for step, target in enumerate(tqdm(targets, desc="prune: steps")):
        yield step, 1 - (1 - target) / (1 - targets[step - 1]) if relative and step else target


def seeded_callback(cfg: Prune, callback, model, step: int) -> None:
    torch.manual_seed(cfg.schedule.seed + step)
    callback(model, step)


def _reapply(gm: fx.GraphModule, masks: dict[str, torch.Tensor]) -> None:
    """Zero again what the masks removed (a fine-tuning callback may have moved those weights)."""
    with torch.no_grad():
        for site in find_linears(gm):
            if site.name in masks and site.weight_tensor is not None:
                site.weight_tensor.mul_(masks[site.name].to(site.weight_tensor.dtype))


def merge_reports(cfg: Prune, reports: list[PruneReport]) -> PruneReport:
    """One report for all steps: layers from the first step's 'before' to the last step's 'after'."""
    first, last = reports[0], reports[-1]
    begin = {lay.name: lay for lay in first.layers}
    layers = [replace(lay, shape_before=begin[lay.name].shape_before, before=begin[lay.name].before) if lay.name in begin else lay
              for lay in last.layers]
    att_begin = {name: b for name, b, _ in first.attention}
    attention = [(name, att_begin.get(name, b), a) for name, b, a in last.attention]
    groups = [replace(g, units=next((f.units for f in first.groups if f.name == g.name), g.units)) for g in last.groups]
    return PruneReport(cfg, layers, groups, last.skipped, attention, cfg.schedule.sparsities(cfg.sparsity))


def sparsify(gm: fx.GraphModule, n: int, m: int, names: set[str]) -> fx.GraphModule:
    """Pack the layers `names` (N:M sparse dense linears, or int8 per-channel qlinears whose codes are
    N:M sparse) into `torchlite::nm_linear`. In place; returns `gm`."""
    for site in find_linears(gm):
        if site.name in names and site.weight_tensor is not None:
            _replace_by_nm(gm, site, pack_nm(site.weight_tensor.detach(), n, m), site.bias_tensor(gm))
    for node in list(gm.graph.nodes):
        if node.target is not QLINEAR or node.meta.get("torchlite_name") not in names:
            continue
        x, q, s, z, b, bits, group_size, k = node.args
        if bits != 8 or z is not None or group_size or q.op != "get_attr" or s.op != "get_attr":
            continue
        codes, scale = get_attr_value(gm, str(q.target)), get_attr_value(gm, str(s.target))
        if scale.shape[0] != codes.shape[0]:
            continue  # per-tensor scale: not the layout nm_linear reads
        site = LinearSite(node, 0, q, b, node.meta["torchlite_name"], None)
        _replace_by_nm(gm, site, pack_nm_codes(codes[:, :k], scale, n, m), site.bias_tensor(gm))
    drop_unused_attributes(gm, gm)
    gm.recompile()
    return gm
