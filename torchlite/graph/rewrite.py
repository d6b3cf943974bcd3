"""Graph edits that every pass makes: adding constants, replacing a linear's node, telling which
layers a pass must leave alone, and dropping what the rewrite left unused."""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

from . import meta
from .attrs import attr_name, set_attr
from .linear import TRANSPOSES, LinearSite, weights_used_elsewhere


def new_constant(gm: fx.GraphModule, name: str, tensor: torch.Tensor, before: fx.Node) -> fx.Node:
    """A `get_attr` of a new top-level buffer holding `tensor` (its attribute named after the dotted
    `name`), inserted before `before`."""
    attr = attr_name(gm, name)
    set_attr(gm, attr, tensor)
    with gm.graph.inserting_before(before):
        return gm.graph.get_attr(attr)


def replace_constant(gm: fx.GraphModule, node: fx.Node, tensor: torch.Tensor, name: str) -> fx.Node:
    """Point every use of the `get_attr` node at a new constant holding `tensor`; the old one is erased
    (its tensor is not touched). The new node keeps the old one's metadata and records its shape."""
    new = new_constant(gm, name, tensor, node)
    new.meta.update(node.meta)
    new.meta[meta.NAME] = node.meta.get(meta.NAME, str(node.target))
    new.meta[meta.SHAPE] = tuple(tensor.shape)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


def linear_part(gm: fx.GraphModule, site: LinearSite, part: str) -> fx.Node | None:
    """The node of a linear's "weight" or "bias" for a replacement to read: the site's own node, or for an
    `nn.Linear` module (symbolic_trace) a new top-level constant holding the module's tensor."""
    if site.node.op != "call_module":
        return site.weight if part == "weight" else site.bias
    tensor = getattr(gm.get_submodule(str(site.node.target)), part)
    return None if tensor is None else new_constant(gm, f"{site.name}.{part}", tensor.detach(), site.node)


def replace_linear(gm: fx.GraphModule, site: LinearSite, new: fx.Node, keep: tuple[str, ...] = ()) -> None:
    """Make `new` stand for the layer of `site`: it takes the site's source metadata (and the `keep` keys)
    and its layer name, every use of the site's node, and the site's node is erased."""
    copy_meta(site.node, new, keep)
    new.meta[meta.NAME] = site.name
    site.node.replace_all_uses_with(new)
    gm.graph.erase_node(site.node)


def copy_meta(src: fx.Node, dst: fx.Node, keep: tuple[str, ...] = ()) -> None:
    """Copy the source-location metadata (and the `keep` keys) of `src` onto `dst`."""
    dst.meta.update({k: v for k, v in src.meta.items() if k in meta.SOURCE_KEYS or k in keep})


def shared_weights(gm: fx.GraphModule, sites: list[LinearSite], tied_linears: bool) -> set[int]:
    """ids of the linear weights that something else reads too: another op (e.g. a tied embedding)
    and, with `tied_linears`, another linear layer."""
    shared = weights_used_elsewhere(gm, sites)
    if tied_linears:
        seen: set[int] = set()
        for s in sites:
            if s.weight_tensor is not None:
                key = id(s.weight_tensor)
                (shared if key in seen else seen).add(key)
    return shared


def drop_unused(gm: fx.GraphModule, original: fx.GraphModule, ops=()) -> None:
    """Erase the nodes a rewrite left without users (constants, getitem, transposes and the pure `ops`
    it replaced) and detach the weights nothing refers to any more (such as replaced fp32 weights).

    Never a full dead-code elimination: it would drop in-place ops. Modules that `gm` shares with
    `original` are detached, never edited."""
    removable = {*ops, *TRANSPOSES, operator.getitem}
    for node in reversed(list(gm.graph.nodes)):
        if not node.users and (node.op == "get_attr" or (node.op == "call_function" and node.target in removable)):
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


def replace_by_nm(gm: fx.GraphModule, site: LinearSite, nmw) -> None:
    """Replace the layer of `site` by `torchlite::nm_linear` over the N:M storage `nmw` (an NMWeight)."""
    nodes = [None if t is None else new_constant(gm, f"{site.name}.{part}", t, site.node)
             for part, t in (("nm_values", nmw.values), ("nm_indices", nmw.indices), ("nm_scale", nmw.scale))]
    bias = linear_part(gm, site, "bias")
    with gm.graph.inserting_before(site.node):
        y = gm.graph.call_function(torch.ops.torchlite.nm_linear.default, (site.x, *nodes, bias, nmw.n, nmw.m, nmw.in_features))
    replace_linear(gm, site, y, keep=(meta.SHAPE,))
