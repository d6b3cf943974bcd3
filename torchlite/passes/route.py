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

`fuse_shared_inputs`: linears that read the same input (a layer's q/k/v projections, an MLP's gate and
up) become one call over their weights concatenated along the output rows, whose result is sliced
back: one kernel call, one pass over the activations (and one activation quantization for the
hand-written kernels) instead of several. Any scheme whose stored tensors are per output row fuses:
float weights, integer and log codes with per-channel or per-group scales (and zero points), W8A8 with
one shared activation scale; per-tensor scales, codebooks and N:M storage stay apart. Weights must be
graph constants (the backend lifts them); a weight another op also reads is left alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..graph.attrs import clone, get_attr_value
from ..graph import meta
from ..graph.cost import Cost
from ..graph.linear import LINEAR_FUNCTIONS, find_linears
from ..graph.rewrite import copy_meta, drop_unused, new_constant
from ..inductor.decode import FUSED_MAX_ROWS
from ..ops import dense as _dense_ops  # noqa: F401  (torchlite::linear must exist before we route to it)
from ..ops import quant as _quant_ops  # noqa: F401  (the quantized ops fuse_shared_inputs rewrites)
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


@dataclass(frozen=True)
class _RowSpec:
    rows: tuple[int, ...]  # argument positions of per-output-row tensors (None allowed)
    same: tuple[int, ...]  # argument positions that must be equal across the fused calls


_ROW_SPECS = {
    **{f: _RowSpec(rows=(1, 2), same=()) for f in LINEAR_FUNCTIONS},
    torch.ops.torchlite.linear.default: _RowSpec(rows=(1, 2), same=()),
    torch.ops.torchlite.qlinear.default: _RowSpec(rows=(1, 2, 3, 4), same=(5, 6, 7)),
    torch.ops.torchlite.qlinear_log.default: _RowSpec(rows=(1, 2, 3), same=(4, 5, 6)),
    torch.ops.torchlite.qlinear_a8.default: _RowSpec(rows=(1, 2, 3), same=(4, 5)),
}


def _fusable_key(gm: fx.GraphModule, node: fx.Node, readers: dict):
    """What calls must share to fuse with `node` (None: it cannot fuse): op, input, equal arguments,
    and per row tensor its presence, dtype and trailing shape; every row tensor a constant with one
    row per output feature that nothing else reads."""
    spec = _ROW_SPECS.get(node.target) if node.op == "call_function" else None
    if spec is None or node.kwargs:
        return None
    args = _padded_args(node, spec)
    rows = None
    signature = []
    for i in spec.rows:
        arg = args[i]
        if arg is None:
            signature.append(None)
            continue
        t = get_attr_value(gm, str(arg.target)) if isinstance(arg, fx.Node) and arg.op == "get_attr" else None
        if not isinstance(t, torch.Tensor) or t.dim() == 0 or readers[arg] != 1:
            return None
        rows = t.shape[0] if rows is None else rows
        if t.shape[0] != rows or rows < 2:  # a per-tensor scale has one row
            return None
        signature.append((t.dtype, tuple(t.shape[1:])))
    if rows is None:
        return None
    return (node.target, args[0], tuple(args[i] for i in spec.same), tuple(signature))


def _padded_args(node: fx.Node, spec: _RowSpec) -> list:
    """The call's arguments, trailing optional ones (a linear's bias) filled in as None."""
    return list(node.args) + [None] * (max(spec.rows + spec.same) + 1 - len(node.args))


def fuse_shared_inputs(gm: fx.GraphModule) -> tuple[fx.GraphModule, Report]:
    """A copy of `gm` in which linears that share their input (and fuse, see the module docstring) are one
    call sliced back into their outputs; the report names each fused group (`a+b+c`)."""
    new = clone(gm)
    report = Report("fused linears")
    readers = {n: len(n.users) for n in new.graph.nodes}
    layer_names = {site.node: site.name for site in find_linears(new)}
    groups: dict = {}
    for node in new.graph.nodes:
        key = _fusable_key(new, node, readers)
        if key is not None:
            groups.setdefault(key, []).append(node)
    for key, nodes in groups.items():
        if len(nodes) < 2:
            continue
        spec, first = _ROW_SPECS[key[0]], nodes[0]
        names = [layer_names.get(n) or n.meta.get(meta.NAME, n.name) for n in nodes]
        args = _padded_args(first, spec)
        for i in spec.rows:
            if args[i] is None:
                continue
            tensors = [get_attr_value(new, str(_padded_args(n, spec)[i].target)) for n in nodes]
            args[i] = new_constant(new, f"{names[0]}.fused{i}", torch.cat(tensors, 0), first)
        with new.graph.inserting_before(first):
            fused = new.graph.call_function(key[0], tuple(args))
            copy_meta(first, fused)
            fused.meta[meta.NAME] = "+".join(names)
            offset = 0
            for n in nodes:
                out_rows = get_attr_value(new, str(n.args[spec.rows[0]].target)).shape[0]
                part = new.graph.call_function(torch.narrow, (fused, -1, offset, out_rows))
                offset += out_rows
                n.replace_all_uses_with(part)
        for n in nodes:
            new.graph.erase_node(n)
        report.layers.append(Routed("+".join(names)))
    drop_unused(new, gm)
    new.recompile()
    return new, report
