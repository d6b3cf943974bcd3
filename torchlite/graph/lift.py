"""Turn Dynamo's lifted weight inputs back into graph constants so passes can rewrite them."""
from __future__ import annotations

import torch
import torch.fx as fx

from .linear import find_linears
from .attrs import attr_name, clone, readable_name, set_attr


TRAINABLE = "weight requires grad (training): left in floating point"


def lift_linear_weights(gm: fx.GraphModule, example_inputs, keep_trainable: bool):
    """Copy of `gm` whose linear weights are `get_attr` constants instead of graph inputs.

    Returns (new_gm, kept_input_indices, notes): the new graph takes only the kept inputs, in
    order; `notes` lists (layer, reason) for weights left as inputs. A weight that requires grad
    is left as an input when `keep_trainable` (it is being trained).
    """
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    index = {n: i for i, n in enumerate(placeholders)}
    lift, notes = {}, []
    for site in find_linears(gm):
        w = site.weight
        if not isinstance(w, fx.Node) or w.op != "placeholder" or w in lift:
            continue
        tensor = example_inputs[index[w]]
        if not isinstance(tensor, torch.nn.Parameter):
            notes.append((readable_name(str(w.target)), "weight is a runtime input, not a parameter"))
        elif keep_trainable and tensor.requires_grad:
            notes.append((readable_name(str(w.target)), TRAINABLE))
        else:
            lift[w] = tensor
    new = clone(gm)
    new_placeholders = [n for n in new.graph.nodes if n.op == "placeholder"]
    first_op = next(n for n in new.graph.nodes if n.op != "placeholder")
    for old in lift:
        node = new_placeholders[index[old]]
        name = readable_name(str(old.target))
        attr = attr_name(new, name)
        set_attr(new, attr, lift[old].detach())
        with new.graph.inserting_before(first_op):
            const = new.graph.get_attr(attr)
        const.meta.update(node.meta)
        const.meta["torchlite_name"] = name
        node.replace_all_uses_with(const)
        new.graph.erase_node(node)
    new.recompile()
    kept = [index[p] for p in placeholders if p not in lift]
    return new, kept, notes
