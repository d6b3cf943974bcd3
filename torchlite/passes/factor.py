"""Low-rank factorization of linear layers: `linear(x, W, b)` -> `linear(linear(x, A), B, b)`.

Ranks come from the config (fixed rank, per-layer ratio, energy threshold, or a global parameter
budget); a layer is factored only where it saves at least `min_saving` of its parameters. The
factors are new graph constants, so a quantize pass after this one quantizes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..numerics import lowrank
from ..calibration import calibration_batches, observe_graph
from ..numerics.stats import InputStats
from ..errors import TorchliteError
from ..graph import clone, find_linears, meta
from ..graph.cost import Cost, linear_cost
from ..graph.rewrite import copy_meta, drop_unused, linear_part, new_constant, replace_linear, shared_weights
from ..log import logger
from ..numerics.linear import check_finite
from ..recipe import Factor, check_calibration, matches
from ..report import Report, table

SHARED = "weight is also used outside linear layers (e.g. a tied embedding): factoring it would add parameters"


@dataclass
class FactorLayer:
    name: str
    in_features: int
    out_features: int
    rank: int
    energy: float  # fraction of sum(sigma^2) kept (of the activation-weighted matrix for asvd/whiten)
    weight_error: float  # ||W - BA||_F / ||W||_F
    output_error: float | None  # on the calibration data, when there is any
    before: Cost
    after: Cost
    alpha: float | None = None  # the ASVD exponent chosen for this layer


@dataclass
class FactorReport(Report):
    """`others`: the linear layers left dense (same cost before and after, in the totals)."""

    layers: list[FactorLayer] = field(default_factory=list)

    def __str__(self) -> str:
        c = self.config
        policy = next(f"{k}={getattr(c, k)}" for k in ("rank", "ratio", "energy", "budget") if getattr(c, k) is not None)
        head = f"factor: {c.method}, {policy}, {len(self.layers)} layer(s) factored, {len(self.skipped)} left dense"
        rows = [
            [r.name, f"{r.out_features}x{r.in_features}", r.rank, r.energy, r.weight_error,
             "-" if r.output_error is None else r.output_error, r.before.params, r.after.params]
            for r in self.layers
        ]
        b, a = self.before, self.after
        rows.append(["total (all linear layers)", "", "", "", "", "", b.params, a.params])
        lines = [head, table(["layer", "shape", "rank", "energy", "weight err", "output err", "params before", "params after"], rows)]
        lines.append(f"FLOPs per forward: {b.flops} -> {a.flops}; weight bytes {b.bytes:,} -> {a.bytes:,}")
        lines += [f"left dense {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


def _chosen_ranks(cfg: Factor, candidates, decs) -> list[int | None]:
    """Rank per candidate (None: stays dense, reason given by the caller)."""
    shapes = [(w.shape[1], w.shape[0]) for _, w in candidates]
    if cfg.budget is not None:
        target = cfg.budget * sum(i * o for i, o in shapes)
        spectra = [(i, o, d.sigma) for (i, o), d in zip(shapes, decs)]
        return lowrank.allocate_budget(spectra, target, cfg.min_saving, cfg.rank_multiple)
    ranks = []
    for (i, o), dec in zip(shapes, decs):
        pays = lowrank.max_paying_rank(i, o, cfg.min_saving)
        if cfg.rank is not None:
            r = cfg.rank
        elif cfg.ratio is not None:  # at most `ratio` of the parameters: round down
            r = lowrank.aligned(max(1, int(cfg.ratio * i * o // (i + o))), cfg.rank_multiple, "down", pays)
        else:  # at least `energy`: round up
            r = lowrank.aligned(dec.rank_for_energy(cfg.energy), cfg.rank_multiple, "up", pays)
        ranks.append(r if r <= pays else None)
    return ranks


def factor_layers(
    layers: list[tuple[str, torch.Tensor, bool, str | None]], cfg: Factor, stats: dict[str, InputStats] | None,
    report: FactorReport,
) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    """Factor the weights of (name, weight, has_bias, reason-to-skip) layers. Shared by the pass and
    `torchlite.compress`. Validates everything before computing anything; returns (A, B) or None per layer."""
    candidates = []
    bias = {name: has_bias for name, _, has_bias, _ in layers}
    for name, weight, has_bias, reason in layers:
        reason = reason or ("excluded by the recipe" if matches(name, cfg.exclude) else None)
        if reason is None:
            check_finite(weight, name)
            candidates.append((name, weight))
            continue
        report.skipped.append((name, reason))
        if weight is not None:
            cost = _dense_cost(weight, has_bias)
            report.others.append((name, cost, cost))
    if cfg.rank is not None:
        for name, w in candidates:
            if cfg.rank > min(w.shape):
                raise TorchliteError(
                    f"Factor.rank={cfg.rank} exceeds min(in, out)={min(w.shape)} of layer {name!r} "
                    f"({w.shape[0]}x{w.shape[1]}); use a smaller rank or exclude the layer"
                )
    decs = [lowrank.decompose(w, cfg.method, stats[name] if stats else None) for name, w in candidates]
    ranks = _chosen_ranks(cfg, candidates, decs)
    chosen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for (name, w), dec, rank in zip(candidates, decs, ranks):
        out_f, in_f = w.shape
        dense = _dense_cost(w, bias[name])
        if rank is None:
            report.skipped.append((name, f"factoring does not save {cfg.min_saving:.0%} of its parameters at the chosen rank"))
            report.others.append((name, dense, dense))
            continue
        alpha = None
        if cfg.method == "asvd":
            dec, alpha = lowrank.best_asvd(w, stats[name], rank)
        a, b = dec.factors(rank)
        approx = b.double() @ a.double()
        report.layers.append(FactorLayer(
            name, in_f, out_f, rank, dec.energy(rank), lowrank.weight_error(w, approx),
            lowrank.output_error(w, approx, stats[name]) if stats else None,
            dense, linear_cost(in_f, out_f, rank=rank, bias=bias[name], itemsize=w.element_size()), alpha,
        ))
        chosen[name] = (a, b)
    return [chosen.get(name) for name, *_ in layers]


def _dense_cost(weight: torch.Tensor, has_bias: bool) -> Cost:
    return linear_cost(weight.shape[1], weight.shape[0], bias=has_bias, itemsize=weight.element_size())


def run(gm: fx.GraphModule, cfg: Factor, calib=None):
    """Factor `gm`'s linear layers. Returns (new GraphModule, FactorReport)."""
    if not isinstance(cfg, Factor):
        raise TypeError(f"factor needs a torchlite.Factor config, got {type(cfg).__name__}")
    check_calibration(cfg, calib)
    return apply(gm, cfg, None if calib is None else calibration_batches(calib, "factor"))


def apply(gm: fx.GraphModule, cfg: Factor, batches=None):
    """`run` on validated input (the pipeline validates a whole recipe once)."""
    new = clone(gm)
    sites = find_linears(new)
    shared = shared_weights(new, sites, tied_linears=False)
    layers = []
    for s in sites:
        reason = s.reason or (SHARED if id(s.weight_tensor) in shared else None)
        has_bias = s.bias is not None or s.bias_tensor(new) is not None
        layers.append((s.name, s.weight_tensor, has_bias, reason))
    stats = None
    if batches is not None:
        watch = {s.name: (s.x, s.weight_tensor.shape[1]) for s, (_, _, _, why) in zip(sites, layers) if why is None}
        stats = observe_graph(new, watch, batches, "factor")
    report = FactorReport(cfg)
    factors = factor_layers(layers, cfg, stats, report)
    for site, pair in zip(sites, factors):
        if pair is not None:
            _replace(new, site, *pair)
    drop_unused(new, gm)
    new.recompile()
    logger.debug("%s", report)
    return new, report


def _replace(gm: fx.GraphModule, site, a: torch.Tensor, b: torch.Tensor) -> None:
    bias = linear_part(gm, site, "bias")
    nodes = {}
    for part, tensor in (("lowrank_a", a), ("lowrank_b", b)):
        nodes[part] = new_constant(gm, f"{site.name}.{part}", tensor, site.node)
        nodes[part].meta[meta.NAME] = f"{site.name}.{part}.weight"
    with gm.graph.inserting_before(site.node):
        h = gm.graph.call_function(F.linear, (site.x, nodes["lowrank_a"], None))
        y = gm.graph.call_function(F.linear, (h, nodes["lowrank_b"], bias))
    copy_meta(site.node, h)
    replace_linear(gm, site, y)
