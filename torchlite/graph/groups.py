"""Channel-dependency groups: the tensors whose channels must be pruned together.

A group starts at a linear layer's output features and follows that axis through the graph, forward
and backward: elementwise ops (activations, gates, adds, broadcast scales), reshapes that split or
merge it (into heads and back), transposes, slices and concatenations along other axes, and
scaled-dot-product attention (q, k, v and its output share the head axis), up to the linear layers
that read it. Its members are (node, axis) pairs; producers are linears whose output features are
in the group, consumers linears whose input features are.

The group's unit count U is the gcd of the axis sizes of all members, so unit u is the u-th 1/U
slice of the axis in every member: one neuron of an MLP, one head of multi-head attention, one KV
group (a KV head with its query heads) under grouped-query attention. A group with anything the
rules do not understand (a normalization over the axis, the graph output, an embedding: the residual
stream) has a `reason` and must be left alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from . import meta
from .linear import TRANSPOSES, LinearSite

ELEMENTWISE = {
    "mul", "add", "sub", "div", "truediv", "neg", "silu", "gelu", "relu", "sigmoid", "tanh", "exp", "abs",
    "to", "type", "float", "contiguous", "clone", "alias", "dropout", "_to_copy", "pow", "where", "clamp",
    "square", "sqrt", "erf", "mish", "leaky_relu", "hardswish",
}
RESHAPES = {"view", "reshape", "_unsafe_view"}
SLICES = {"slice", "narrow", "getitem"}
METADATA = {"size", "dim", "_assert_tensor_metadata", "sym_size", "stride", "numel"}
SDPA = "scaled_dot_product_attention"


def op_name(node: fx.Node) -> str:
    """`mul` for aten.mul.Tensor, operator.mul, torch.mul and the `mul` method alike."""
    if node.op == "call_method":
        return str(node.target)
    if node.op != "call_function":
        return node.op
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return target._opname
    return getattr(target, "__name__", str(target))


def shape(node) -> tuple[int, ...] | None:
    """The static shape of a node's tensor value (recorded by `record_shapes` or the tracer)."""
    if not isinstance(node, fx.Node):
        return None
    for key in (meta.SHAPE, "val", "example_value"):
        v = node.meta.get(key)
        if isinstance(v, torch.Tensor):
            try:
                return tuple(int(d) for d in v.shape)
            except TypeError:  # symbolic sizes
                return None
        if isinstance(v, tuple) and key == meta.SHAPE:
            return v
    return None


class _ShapeRecorder(fx.Interpreter):
    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            n.meta[meta.SHAPE] = tuple(out.shape)
        return out


def record_shapes(gm: fx.GraphModule, inputs: tuple) -> None:
    """Run `gm` on `inputs` and record every tensor's shape in node.meta (raises if it cannot run)."""
    with torch.no_grad():
        _ShapeRecorder(gm).run(*inputs)


@dataclass
class Group:
    members: dict[fx.Node, int] = field(default_factory=dict)  # node -> axis of the units
    producers: list[LinearSite] = field(default_factory=list)
    consumers: list[LinearSite] = field(default_factory=list)
    constants: dict[fx.Node, int] = field(default_factory=dict)  # get_attr -> its axis of the units
    reason: str | None = None
    attention: bool = False

    @property
    def name(self) -> str:
        return "+".join(s.name for s in self.producers)

    @property
    def units(self) -> int:
        sizes = [shape(n)[a] for n, a in self.members.items()]
        sizes += [s.weight_tensor.shape[0] for s in self.producers] + [s.weight_tensor.shape[1] for s in self.consumers]
        return math.gcd(*sizes) if sizes else 0

    @staticmethod
    def indices(size: int, kept: list[int], units: int) -> torch.Tensor:
        """Indices along an axis of `size` (split in `units` equal slices) that the kept units cover."""
        block = size // units
        return torch.cat([torch.arange(u * block, (u + 1) * block) for u in kept])


def _dim(d: int, rank: int) -> int:
    return d % rank if rank else 0


def _map_reshape(src: tuple[int, ...], axis: int, dst: tuple[int, ...]) -> int | None:
    """The axis of `dst` that holds `src[axis]`'s slices after a reshape: the one whose tail product
    equals the product of src[axis:] (the largest such, skipping size-1 axes)."""
    tail = math.prod(src[axis:])
    for j in range(len(dst) - 1, -1, -1):
        if math.prod(dst[j:]) == tail and dst[j] > 1:
            return j
        if math.prod(dst[j:]) > tail:
            return None
    return None


def _getitem_axes(node: fx.Node, in_rank: int) -> dict[int, int] | None:
    """For `x[index]` with basic indexing: input axis -> output axis of the axes kept whole or
    sliced (None when the index holds tensors or is not understood)."""
    index = node.args[1]
    index = index if isinstance(index, tuple) else (index,)
    if any(not (i is None or i is Ellipsis or isinstance(i, (int, slice))) for i in index):
        return None
    consumed = sum(1 for i in index if i is not None and i is not Ellipsis)
    expanded = []
    for i in index:
        expanded += [slice(None)] * (in_rank - consumed) if i is Ellipsis else [i]
    expanded += [slice(None)] * (in_rank - sum(1 for i in expanded if i is not None))
    mapping, src, dst = {}, 0, 0
    for i in expanded:
        if i is None:
            dst += 1
        elif isinstance(i, int):
            src += 1
        else:
            mapping[src] = dst
            src, dst = src + 1, dst + 1
    return mapping


def _slice_source(node: fx.Node, axis: int, xs, out_shape) -> int | None:
    """The input axis of a slicing op's output `axis`, when that axis is kept whole."""
    if xs is None:
        return None
    if op_name(node) == "getitem":
        mapping = _getitem_axes(node, len(xs))
        src = next((a for a, b in (mapping or {}).items() if b == axis), None)
    else:
        src = axis if len(xs) == len(out_shape) else None
    return src if src is not None and xs[src] == out_shape[axis] else None


def _shape_list(node: fx.Node) -> list | None:
    """The literal target shape of a view/reshape/expand node (method form may pass it unpacked)."""
    rest = list(node.args[1:])
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        return list(rest[0])
    return rest or (list(node.kwargs.get("size", node.kwargs.get("shape", []))) or None)


def set_size(node: fx.Node, axis: int, size: int) -> None:
    """Write `size` into the literal target shape of a view/reshape/expand node at `axis` (a -1 stays -1)."""
    literal = _shape_list(node)
    if literal is None or len(literal) <= axis or literal[axis] == -1:
        return
    literal[axis] = size
    packed = len(node.args) == 2 and isinstance(node.args[1], (list, tuple))
    node.args = (node.args[0], literal) if packed else (node.args[0], *literal)


def _permutation(node: fx.Node, rank: int) -> list[int] | None:
    op = op_name(node)
    if op in ("transpose", "t", "numpy_T"):
        d0, d1 = (0, 1) if op != "transpose" else (_dim(node.args[1], rank), _dim(node.args[2], rank))
        perm = list(range(rank))
        perm[d0], perm[d1] = perm[d1], perm[d0]
        return perm
    if op == "permute":
        dims = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (list, tuple)) else node.args[1:]
        return [_dim(d, rank) for d in dims]
    return None


class _Finder:
    """Grows one group from a producer by following the unit axis through the graph."""

    def __init__(self, gm: fx.GraphModule, sites: dict[fx.Node, LinearSite]):
        self.gm, self.sites = gm, sites

    def grow(self, seed: LinearSite) -> Group:
        g = Group()
        todo: list[tuple[fx.Node, int]] = [(seed.node, len(shape(seed.node) or (0,)) - 1)]
        while todo and g.reason is None:
            node, axis = todo.pop()
            if node in g.members:
                if g.members[node] != axis:
                    g.reason = f"{node.name} carries the units on two different axes"
                continue
            if shape(node) is None:
                g.reason = f"no static shape for {node.name}"
                break
            g.members[node] = axis
            todo += self._backward(g, node, axis)
            todo += self._forward(g, node, axis)
        return g

    def _fail(self, g: Group, why: str) -> list:
        g.reason = g.reason or why
        return []

    def _backward(self, g: Group, node: fx.Node, axis: int) -> list[tuple[fx.Node, int]]:
        """The inputs of `node` that carry its units, and on which axis."""
        out_shape = shape(node)
        rank = len(out_shape)
        site = self.sites.get(node)
        if site is not None:
            if axis != rank - 1:
                return self._fail(g, f"{site.name}'s output features are not on the pruned axis")
            if site not in g.producers:
                g.producers.append(site)
            return []
        op = op_name(node)
        if node.op == "get_attr":
            g.constants[node] = axis
            return []
        if node.op == "placeholder":
            return self._fail(g, f"graph input {node.name} carries the channels (e.g. the residual stream)")
        if op in ELEMENTWISE:
            found = []
            for arg in node.all_input_nodes:
                s = shape(arg)
                if s is None:
                    continue
                a = axis - (rank - len(s))
                if a >= 0 and s[a] != 1:
                    found.append((arg, a))
            return found
        x = node.args[0] if node.args else None
        xs = shape(x)
        if op in RESHAPES:
            literal = _shape_list(node)
            if literal is not None and len(literal) == rank and not isinstance(literal[axis], int):
                return self._fail(g, f"{node.name} computes the pruned size at run time")
            a = _map_reshape(out_shape, axis, xs)
            return [(x, a)] if a is not None else self._fail(g, f"{node.name} reshapes the pruned axis irregularly")
        perm = _permutation(node, rank)
        if perm is not None:
            return [(x, perm[axis])]
        if op == "unsqueeze":
            d = _dim(node.args[1], rank)
            return [(x, axis - (d < axis))] if d != axis else self._fail(g, f"{node.name} adds the pruned axis")
        if op == "expand":
            a = axis - (rank - len(xs))
            return [(x, a)] if a >= 0 and xs[a] == out_shape[axis] else self._fail(g, f"{node.name} expands the pruned axis")
        if op in SLICES:
            src = _slice_source(node, axis, xs, out_shape)
            return [(x, src)] if src is not None else self._fail(g, f"{node.name} slices the pruned axis")
        if op == "cat":
            parts = node.args[0]
            if _dim(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0), rank) == axis:
                return self._fail(g, f"{node.name} concatenates along the pruned axis")
            return [(p, axis) for p in parts]
        if op == SDPA:
            return self._attention(g, node, axis)
        return self._fail(g, f"{op} ({node.name}) on the pruned axis is not supported")

    def _attention(self, g: Group, node: fx.Node, axis: int) -> list[tuple[fx.Node, int]]:
        rank = len(shape(node))
        if axis != rank - 3:
            return self._fail(g, f"{node.name}: only the head axis of attention can be pruned")
        mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
        ms = shape(mask)
        if ms is not None and len(ms) >= 3 and ms[len(ms) - 3] != 1:
            return self._fail(g, f"{node.name}: the attention mask differs per head")
        g.attention = True
        return [(t, axis) for t in node.args[:3]]

    def _forward(self, g: Group, node: fx.Node, axis: int) -> list[tuple[fx.Node, int]]:
        """The users of `node` and the axis of their output that carries the units."""
        found = []
        xs = shape(node)
        for user in node.users:
            op = op_name(user)
            if op in METADATA:
                continue
            if user.op == "output":
                return self._fail(g, "the channels reach the graph output")
            site = self.sites.get(user)
            if site is not None and site.x is node:
                if axis != len(xs) - 1:
                    return self._fail(g, f"{site.name} reads the pruned axis as something other than its input features")
                if site not in g.consumers:
                    g.consumers.append(site)
                continue
            if site is not None or (user.target in TRANSPOSES and any(u in self.sites for u in user.users)):
                return self._fail(g, f"{node.name} is used as a linear layer's weight or bias")
            us = shape(user)
            if us is None:
                return self._fail(g, f"no static shape for {user.name}")
            a = self._forward_axis(user, op, node, axis, xs, us)
            if a is None:
                return self._fail(g, g.reason or f"{op} ({user.name}) on the pruned axis is not supported")
            found.append((user, a))
        return found

    def _forward_axis(self, user, op, node, axis, xs, us) -> int | None:
        rank = len(us)
        if op in ELEMENTWISE or op == "expand":
            return axis + rank - len(xs)
        if user.args and user.args[0] is not node and op not in ("cat", SDPA):
            return None  # e.g. the node is a shape or index argument
        if op in RESHAPES:
            return _map_reshape(xs, axis, us)
        perm = _permutation(user, rank)
        if perm is not None:
            return perm.index(axis)
        if op == "unsqueeze":
            d = _dim(user.args[1], rank)
            return axis + (d <= axis)
        if op in SLICES:
            if op == "getitem" and not isinstance(user.args[1], (int, slice, tuple, type(None), type(Ellipsis))):
                return None
            dst = (_getitem_axes(user, len(xs)) or {}).get(axis) if op == "getitem" else (axis if len(us) == len(xs) else None)
            return dst if dst is not None and us[dst] == xs[axis] else None
        if op == "cat":
            return axis if node in user.args[0] else None
        if op == SDPA:
            return axis if node in user.args[:3] else None
        return None


def dependency_groups(gm: fx.GraphModule, sites: list[LinearSite]) -> list[Group]:
    """One group per set of linear layers whose output features are coupled (each producer appears
    in exactly one group). Needs static shapes in node.meta (see `record_shapes`)."""
    by_node = {s.node: s for s in sites if s.weight_tensor is not None}
    finder = _Finder(gm, by_node)
    groups, seen = [], set()
    for site in by_node.values():
        if site.node in seen:
            continue
        g = finder.grow(site)
        if g.reason is None and site not in g.producers:
            g.producers.insert(0, site)
        seen.update(s.node for s in g.producers)
        seen.add(site.node)
        if g.reason is None and g.units < 2:
            g.reason = "the coupled axes share no common unit size"
        groups.append(g)
    return groups
