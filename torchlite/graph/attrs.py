"""Copying GraphModules without copying weights, and reading/writing their attributes."""
from __future__ import annotations

import copy
import re

import torch
import torch.fx as fx


def clone(gm: fx.GraphModule) -> fx.GraphModule:
    """A new GraphModule with a copied graph that shares the weight tensors of `gm`.

    Passes edit the clone's graph and add attributes to it; `gm` itself is never changed.
    """
    graph = fx.Graph()
    copies: dict[fx.Node, fx.Node] = {}
    out = graph.graph_copy(gm.graph, copies)
    graph.output(out)
    for old, new_node in copies.items():
        if hasattr(old, "_dynamo_source"):  # AOTAutograd reads it on Dynamo graphs' placeholders
            new_node._dynamo_source = old._dynamo_source
    graph._codegen = copy.deepcopy(gm.graph._codegen)
    new = fx.GraphModule(gm, graph, class_name=type(gm).__name__)
    new.meta.update(gm.meta)
    return new


def get_attr_value(gm: fx.GraphModule, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def attr_name(gm: fx.GraphModule, base: str) -> str:
    """A fresh top-level attribute name derived from a dotted module path."""
    stem = re.sub(r"\W", "_", base.replace(".", "__")) or "attr"
    name, i = stem, 0
    while hasattr(gm, name):
        i += 1
        name = f"{stem}_{i}"
    return name


def set_attr(gm: fx.GraphModule, name: str, tensor: torch.Tensor) -> None:
    """Register `tensor` as a top-level buffer of `gm` (never on a submodule it may share)."""
    if "." in name:
        raise ValueError(f"set_attr takes a top-level name, got {name!r}")
    gm.register_buffer(name, tensor)


def readable_name(placeholder: str) -> str:
    """`L_self_modules_model_modules_layers_modules_0_modules_q_proj_parameters_weight_` ->
    `model.layers.0.q_proj.weight` (Dynamo's placeholder names encode the module path)."""
    name = re.sub(r"^L_(self_|fn_|model_|mod_)?", "", placeholder).rstrip("_")
    name = re.sub(r"_(modules|parameters|buffers)_", ".", "_" + name).lstrip("._")
    return name.replace("modules_", "", 1) if name.startswith("modules_") else name
