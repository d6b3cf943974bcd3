"""A sympy cost model of a graph's linear layers: parameters, weight bytes and FLOPs.

FLOPs are symbolic in the batch size and sequence length (inputs [batch, seq, features]): a linear
layer costs 2 * in * out multiply-adds per token. Parameters and bytes count weights and biases.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy
import torch.fx as fx

from .linear import find_linears

BATCH, SEQ = sympy.symbols("batch seq", integer=True, positive=True)
TOKENS = BATCH * SEQ


@dataclass(frozen=True)
class Cost:
    params: int = 0
    bytes: int = 0
    flops: sympy.Expr = sympy.Integer(0)

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.bytes + other.bytes, sympy.expand(self.flops + other.flops))

    def flops_at(self, batch: int = 1, seq: int = 1) -> int:
        return int(self.flops.subs({BATCH: batch, SEQ: seq}))


def linear_cost(in_features: int, out_features: int, *, rank: int | None = None, bias: bool = False, itemsize: int = 4) -> Cost:
    """A dense linear layer (rank None) or its factored pair B @ A of `rank`."""
    weights = in_features * out_features if rank is None else rank * (in_features + out_features)
    params = weights + (out_features if bias else 0)
    return Cost(params, params * itemsize, 2 * weights * TOKENS)


def total(costs) -> Cost:
    out = Cost()
    for c in costs:
        out = out + c
    return out


def graph_cost(gm: fx.GraphModule) -> dict[str, Cost]:
    """Cost of every linear-like op of `gm` whose weight is a graph constant, by node name."""
    out = {}
    for site in find_linears(gm):
        if site.weight_tensor is None:
            continue
        out_f, in_f = site.weight_tensor.shape
        has_bias = site.bias is not None or site.bias_tensor(gm) is not None
        out[site.node.name] = linear_cost(in_f, out_f, bias=has_bias, itemsize=site.weight_tensor.element_size())
    return out
