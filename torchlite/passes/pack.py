"""Packing N:M-pruned layers into `torchlite::nm_linear`, after the passes that ran on their zeros.

N:M pruning followed by other passes (a recipe with prune n:m and quantize) keeps the zeros in dense
weights while those passes run; this pass then stores the layers still N:M sparse compressed: float
linears, and int8 per-channel `qlinear`s whose codes are N:M sparse (int8 N:M values).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from .. import ops as _ops  # noqa: F401  (registers torch.ops.torchlite)
from ..graph import clone, find_linears, get_attr_value, meta
from ..graph.cost import TOKENS, Cost
from ..graph.linear import LinearSite
from ..graph.rewrite import drop_unused, replace_by_nm
from ..log import logger
from ..numerics.nm import NMWeight, codes_packable, pack_nm, pack_nm_codes
from ..report import Report

QLINEAR = torch.ops.torchlite.qlinear.default


@dataclass
class PackedLayer:
    name: str
    before: Cost
    after: Cost


def _layer(name: str, nmw: NMWeight, before_bytes: int, bias) -> PackedLayer:
    """Costs of one layer: its dense storage (`before_bytes` of weights) and its N:M storage."""
    bias_params, bias_bytes = (0, 0) if bias is None else (bias.numel(), bias.numel() * bias.element_size())
    dense = nmw.in_features * nmw.out_features
    before = Cost(dense + bias_params, before_bytes + bias_bytes, 2 * dense * TOKENS)
    after = Cost(nmw.values.numel() + bias_params, nmw.nbytes + bias_bytes, 2 * nmw.values.numel() * TOKENS)
    return PackedLayer(name, before, after)


def run(gm: fx.GraphModule, names: set[str], n: int, m: int) -> tuple[fx.GraphModule, Report]:
    """Pack the layers `names` (N:M sparse float linears, or int8 per-channel qlinears whose codes are
    N:M sparse) into `torchlite::nm_linear`. Returns (new GraphModule, Report); `gm` is not changed."""
    new = clone(gm)
    report = Report({"names": sorted(names), "n": n, "m": m})
    for site in find_linears(new):
        if site.name in names and site.weight_tensor is not None:
            w = site.weight_tensor.detach()
            nmw = pack_nm(w, n, m)
            replace_by_nm(new, site, nmw)
            report.layers.append(_layer(site.name, nmw, w.numel() * w.element_size(), site.bias_tensor(new)))
    for node in list(new.graph.nodes):
        if node.target is not QLINEAR or node.meta.get(meta.NAME) not in names:
            continue
        x, q, s, z, b, bits, group_size, k = node.args
        if q.op != "get_attr" or s.op != "get_attr":
            continue
        codes, scale = get_attr_value(new, str(q.target)), get_attr_value(new, str(s.target))
        if not codes_packable(bits, z, group_size, scale, codes.shape[0]):
            report.skipped.append((node.meta[meta.NAME], "quantized codes are not 8-bit symmetric per channel"))
            continue
        site = LinearSite(node, 0, q, b, node.meta[meta.NAME], None)
        nmw = pack_nm_codes(codes[:, :k], scale, n, m)
        replace_by_nm(new, site, nmw)
        bias = get_attr_value(new, str(b.target)) if isinstance(b, fx.Node) and b.op == "get_attr" else None
        report.layers.append(_layer(site.name, nmw, codes.numel() + scale.numel() * 4, bias))
    drop_unused(new, gm, {QLINEAR})
    new.recompile()
    logger.debug("pack: %d layer(s) packed %d:%d", len(report.layers), n, m)
    return new, report
