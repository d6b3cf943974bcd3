"""Graph rewrites that route calls to what torchlite's Inductor lowerings compile best at decode shapes.

Each is pure, `(gm) -> (new_gm, Report)`: it rewrites a clone of `gm` (left as it was); the report
lists the calls it rewrote (a route changes no parameter, byte or FLOP: their costs are zero).

`route_float_linears`: every `F.linear` with a 2-D floating-point weight calls `torchlite::linear`,
whose lowering (`torchlite.inductor.dense`) runs decode shapes as a bandwidth-bound reduction instead
of BLAS GEMV (which reaches well under the machine's read bandwidth there).

`route_decode_attention`: at batch-1 decode a query holds one position, and ATen's CPU flash attention
kernel spends more on its call than on the few hundred keys it reads: SmolLM2's 30 calls took ~1.2 ms
of a ~20 ms step (torch.profiler, 2026-11-30, ad hoc). Every `scaled_dot_product_attention`
whose query has at most FUSED_MAX_ROWS positions (known at compile time) is rewritten into
`decode_attention`: plain tensor ops (products and sums) that Inductor generates as reductions inside
the surrounding kernel, with grouped (GQA) key/value heads read in place rather than repeated. Longer
queries (prefill) keep the flash kernel.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..graph.attrs import clone, get_attr_value
from ..graph.cost import Cost
from ..graph.linear import LINEAR_FUNCTIONS
from ..inductor.decode import FUSED_MAX_ROWS
from ..ops import dense as _dense_ops  # noqa: F401  (torchlite::linear must exist before we route to it)
from ..report import Report

SDPA_FUNCTIONS = {F.scaled_dot_product_attention, torch._C._nn.scaled_dot_product_attention}


@dataclass
class Routed:
    name: str  # the node rewritten
    before: Cost = field(default_factory=Cost)
    after: Cost = field(default_factory=Cost)


def _weight(gm: fx.GraphModule, node) -> torch.Tensor | None:
    if not isinstance(node, fx.Node):
        return None
    if node.op == "get_attr":
        value = get_attr_value(gm, str(node.target))
    else:
        value = node.meta.get("val", node.meta.get("example_value"))
    return value if isinstance(value, torch.Tensor) else None


def route_float_linears(gm: fx.GraphModule) -> tuple[fx.GraphModule, Report]:
    """A copy of `gm` in which every `F.linear(x, W, b)` with a 2-D floating-point W calls
    `torchlite::linear`; and the report of the calls rewritten."""
    new = clone(gm)
    report = Report("torchlite::linear")
    for node in new.graph.nodes:
        if node.op != "call_function" or node.target not in LINEAR_FUNCTIONS or node.kwargs:
            continue
        x, w, b = (list(node.args) + [None] * 3)[:3]
        wt = _weight(new, w)
        if wt is None or wt.dim() != 2 or not wt.is_floating_point() or not isinstance(wt.shape[1], int):
            continue
        node.target, node.args = torch.ops.torchlite.linear.default, (x, w, b)
        report.layers.append(Routed(node.name))
    new.recompile()
    return new, report


def decode_attention(query, key, value, attn_mask=None, scale=None):
    """softmax(q kᵀ · scale + mask) v for q [B, H, L, D] and k, v [B, Hkv, S, D] with H a multiple of
    Hkv (query head h reads key/value head h // (H / Hkv)); a bool mask keeps the True positions.
    Computed in float32, returned in the query's dtype."""
    b, h, l, d = query.shape
    hkv, s = key.shape[1], key.shape[2]
    rows = h // hkv * l
    scale = d**-0.5 if scale is None else scale
    q = query.reshape(b, hkv, rows, 1, d).float()
    scores = (q * key.unsqueeze(2).float()).sum(-1) * scale  # [B, Hkv, rows, S]
    if attn_mask is not None:
        mask = attn_mask.expand(b, h, l, s).reshape(b, hkv, rows, s)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    probs = scores.softmax(-1)
    out = (probs.unsqueeze(-1) * value.unsqueeze(2).float()).sum(-2)  # [B, Hkv, rows, D]
    return out.reshape(b, h, l, d).to(query.dtype)


def _value(node):
    return node.meta.get("val", node.meta.get("example_value")) if isinstance(node, fx.Node) else None


def _sdpa_args(node) -> dict:
    """The call's arguments by name (SDPA's positional order, then its keywords)."""
    return {**dict(zip(("query", "key", "value", "attn_mask", "dropout_p", "is_causal"), node.args)), **node.kwargs}


def _decode_shaped(args: dict) -> bool:
    """A call this rewrite computes exactly as SDPA does: no dropout or causal flag, 4-D tensors with
    a static query length of at most FUSED_MAX_ROWS, query heads a multiple of key/value heads (and
    grouped only where the call asks for it)."""
    q, k, v = (_value(args.get(n)) for n in ("query", "key", "value"))
    if not all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in (q, k, v)):
        return False
    if args.get("dropout_p", 0.0) != 0.0 or args.get("is_causal", False) or set(args) - {
        "query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"
    }:
        return False
    shapes = [*q.shape, *k.shape, *v.shape]
    if not all(isinstance(n, int) for n in shapes) or q.shape[2] > FUSED_MAX_ROWS:
        return False
    h, hkv = q.shape[1], k.shape[1]
    grouped_ok = h == hkv or (args.get("enable_gqa", False) and h % hkv == 0)
    return grouped_ok and v.shape[1] == hkv and k.shape[2] == v.shape[2] and q.shape[3] == k.shape[3] == v.shape[3]


def route_decode_attention(gm: fx.GraphModule) -> tuple[fx.GraphModule, Report]:
    """A copy of `gm` in which every decode-shaped `scaled_dot_product_attention` calls
    `decode_attention`; and the report of the calls rewritten. `gm` itself is left as it was."""
    new = clone(gm)
    report = Report("decode_attention")
    for node in new.graph.nodes:
        if node.op != "call_function" or node.target not in SDPA_FUNCTIONS:
            continue
        args = _sdpa_args(node)
        if not _decode_shaped(args):
            continue
        node.target = decode_attention
        node.args = (args["query"], args["key"], args["value"])
        node.kwargs = {"attn_mask": args.get("attn_mask"), "scale": args.get("scale")}
        report.layers.append(Routed(node.name))
    new.recompile()
    return new, report
