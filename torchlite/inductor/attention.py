"""Decode-shaped attention as plain tensor ops, so Inductor fuses it into the layer's kernel.

At batch-1 decode a query holds one position, and ATen's CPU flash attention kernel spends more on
its call than on the few hundred keys it reads: SmolLM2's 30 calls took ~1.2 ms of a ~20 ms step
(torch.profiler, 2026-11-30; docs/design.md).
`route_decode_attention` rewrites every `scaled_dot_product_attention` whose query has at most
FUSED_MAX_ROWS positions (known at compile time) into `decode_attention`: products and sums that
Inductor generates as reductions inside the surrounding kernel, with grouped (GQA) key/value heads
read in place rather than repeated. Longer queries (prefill) keep the flash kernel.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..graph.attrs import clone
from .quant import FUSED_MAX_ROWS

SDPA_FUNCTIONS = {F.scaled_dot_product_attention, torch._C._nn.scaled_dot_product_attention}


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


def route_decode_attention(gm: fx.GraphModule) -> tuple[fx.GraphModule, int]:
    """A copy of `gm` in which every decode-shaped `scaled_dot_product_attention` calls
    `decode_attention`; and how many were rewritten. `gm` itself is left as it was."""
    new = clone(gm)
    count = 0
    for node in new.graph.nodes:
        if node.op != "call_function" or node.target not in SDPA_FUNCTIONS:
            continue
        args = _sdpa_args(node)
        if not _decode_shaped(args):
            continue
        node.target = decode_attention
        node.args = (args["query"], args["key"], args["value"])
        node.kwargs = {"attn_mask": args.get("attn_mask"), "scale": args.get("scale")}
        count += 1
    new.recompile()
    return new, count
