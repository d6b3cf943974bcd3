"""Finding linear-like ops in every form that tracing produces.

Recognised forms (x: activations, W: weight [out, in], b: optional bias):
- `call_module` of an `nn.Linear` (torch.fx.symbolic_trace)
- `F.linear` / `torch._C._nn.linear` (Dynamo) and `aten.linear.default` (torch.export)
- `aten.addmm(b, x, W.t())` and `aten.mm(x, W.t())` (decomposed graphs), where the transpose is
  `aten.t`, `aten.permute(W, [1, 0])` or `aten.transpose(W, 0, 1)`.
A site is quantizable when W is a constant of the graph (a `get_attr`); `reason` says why not.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F

from .attrs import get_attr_value, readable_name

aten = torch.ops.aten
LINEAR_FUNCTIONS = {F.linear, torch._C._nn.linear, aten.linear.default}
TRANSPOSES = {aten.t.default, aten.permute.default, aten.transpose.int, aten.numpy_T.default}


@dataclass
class LinearSite:
    node: fx.Node
    x_at: int | str  # where the node holds its input x: an args index or a kwargs key
    weight: fx.Node | None  # the get_attr (or other) node producing W [out, in]
    bias: fx.Node | None
    name: str  # module path of the layer, for reports and `exclude`
    weight_tensor: torch.Tensor | None
    reason: str | None = None  # why this site cannot be rewritten, or None

    def bias_tensor(self, gm: fx.GraphModule) -> torch.Tensor | None:
        """The bias tensor when it is a constant of the graph (or of the nn.Linear module), else None."""
        if self.node.op == "call_module":
            return gm.get_submodule(str(self.node.target)).bias
        if isinstance(self.bias, fx.Node) and self.bias.op == "get_attr":
            return get_attr_value(gm, str(self.bias.target))
        return None

    @property
    def x(self) -> fx.Node:
        """The input node, read from the graph now (a rewrite of the layer before may have replaced it)."""
        return self.node.kwargs[self.x_at] if isinstance(self.x_at, str) else self.node.args[self.x_at]


def _is_plain_transpose(node) -> fx.Node | None:
    if not isinstance(node, fx.Node) or node.op != "call_function" or node.target not in TRANSPOSES:
        return None
    if node.target is aten.permute.default and list(node.args[1]) != [1, 0]:
        return None
    if node.target is aten.transpose.int and sorted(int(a) % 2 for a in node.args[1:3]) != [0, 1]:
        return None
    return node.args[0]


def _layer_name(weight: fx.Node | None, fallback: str) -> str:
    if weight is not None and weight.op == "get_attr":
        t = weight.meta.get("torchlite_name") or str(weight.target)
        return t[: -len(".weight")] if t.endswith(".weight") else t
    if weight is not None and weight.op == "placeholder":
        t = readable_name(str(weight.target))
        return t[: -len(".weight")] if t.endswith(".weight") else t
    return fallback


def _site(gm, node, x_at, w, b, name=None) -> LinearSite:
    tensor, reason = None, None
    if not isinstance(w, fx.Node) or w.op != "get_attr":
        reason = "weight is not a constant of the graph (a graph input or computed); trace with torchlite.trace"
    else:
        tensor = get_attr_value(gm, str(w.target))
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2:
            reason, tensor = "weight is not a 2-D tensor", None
        elif not tensor.is_floating_point():
            reason, tensor = f"weight dtype {tensor.dtype} is not floating point", None
    return LinearSite(node, x_at, w, b, name or _layer_name(w, node.name), tensor, reason)


def find_linears(gm: fx.GraphModule) -> list[LinearSite]:
    sites = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = gm.get_submodule(str(node.target))
            if type(mod) is torch.nn.Linear:
                site = LinearSite(node, 0, None, None, str(node.target), mod.weight)
                sites.append(site)
        elif node.op == "call_function" and node.target in LINEAR_FUNCTIONS:
            args = list(node.args) + [None] * (3 - len(node.args))
            w = node.kwargs.get("weight", args[1])
            b = node.kwargs.get("bias", args[2])
            sites.append(_site(gm, node, "input" if "input" in node.kwargs else 0, w, b))
        elif node.op == "call_function" and node.target in (aten.addmm.default, aten.mm.default):
            if node.target is aten.addmm.default:
                if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
                    continue
                b, _, wt = node.args[:3]
                if not isinstance(b, fx.Node) or len(b.meta.get("val", torch.empty(0)).shape) != 1:
                    continue  # only a 1-D bias is a linear's bias
                x_at = 1
            else:
                b, wt, x_at = None, node.args[1], 0
            w = _is_plain_transpose(wt)
            if w is not None:
                sites.append(_site(gm, node, x_at, w, b))
    return sites


def weights_used_elsewhere(gm: fx.GraphModule, sites) -> set[int]:
    """ids of constant tensors read by some node other than as a linear layer's weight."""
    site_nodes = {s.node for s in sites}

    def weight_use(user: fx.Node) -> bool:
        if user in site_nodes:
            return True
        return user.target in TRANSPOSES and all(u in site_nodes for u in user.users)

    return {
        id(get_attr_value(gm, str(node.target)))
        for node in gm.graph.nodes
        if node.op == "get_attr" and not all(weight_use(u) for u in node.users)
    }
