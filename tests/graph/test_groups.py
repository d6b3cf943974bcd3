"""Channel-dependency groups (torchlite.graph.groups) on small traced graphs: which linears are coupled,
on which axes, with how many units, and why a group cannot be pruned. `llama_graph`: tests/conftest.py."""
import operator

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F

import torchlite
from torchlite import Prune
from torchlite.graph import find_linears
from torchlite.graph.groups import Group, dependency_groups, op_name, record_shapes, set_size, shape


class GatedMLP(torch.nn.Module):
    def __init__(self, d=16, h=40):
        super().__init__()
        self.gate = torch.nn.Linear(d, h, bias=False)
        self.up = torch.nn.Linear(d, h)
        self.down = torch.nn.Linear(h, d)

    def forward(self, x):
        return x + self.down(F.silu(self.gate(x)) * self.up(x))


class Attention(torch.nn.Module):
    """Attention with literal head counts; with kv_heads < heads, K and V are repeated as in HF's repeat_kv."""

    def __init__(self, d=32, heads=4, kv_heads=2, head_dim=8):
        super().__init__()
        self.h, self.kv, self.hd = heads, kv_heads, head_dim
        self.q = torch.nn.Linear(d, heads * head_dim, bias=False)
        self.k = torch.nn.Linear(d, kv_heads * head_dim, bias=False)
        self.v = torch.nn.Linear(d, kv_heads * head_dim, bias=False)
        self.o = torch.nn.Linear(heads * head_dim, d, bias=False)

    def forward(self, x):
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.h, self.hd).transpose(1, 2)
        k = self.k(x).view(b, s, self.kv, self.hd).transpose(1, 2)
        v = self.v(x).view(b, s, self.kv, self.hd).transpose(1, 2)
        if self.kv != self.h:
            rep = self.h // self.kv
            k = k[:, :, None].expand(b, self.kv, rep, s, self.hd).reshape(b, self.h, s, self.hd)
            v = v[:, :, None].expand(b, self.kv, rep, s, self.hd).reshape(b, self.h, s, self.hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.o(y.transpose(1, 2).reshape(b, s, self.h * self.hd))


class BlockScaled(torch.nn.Module):
    """The hidden axis reshaped into 4 blocks of 10 (a literal size in the graph), each block scaled by a
    parameter [4, 1], and merged back with -1."""

    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(16, 40)
        self.down = torch.nn.Linear(40, 16)
        self.scale = torch.nn.Parameter(torch.rand(4, 1) + 0.5)

    def forward(self, x):
        b, s, _ = x.shape
        h = F.gelu(self.up(x)).view(b, s, 4, 10) * self.scale
        return x + self.down(h.reshape(b, s, -1))


def _groups(model, x):
    gm = torchlite.trace(model.eval(), (x,))
    return gm, {g.name: g for g in dependency_groups(gm, find_linears(gm))}


def _names(sites):
    return sorted(s.name for s in sites)


def test_llama_groups(llama_graph):
    """MLP neurons, KV groups of heads; the residual stream and the tied lm_head are not resolvable."""
    _, gm, _ = llama_graph
    groups = dependency_groups(gm, find_linears(gm))
    ok = [g for g in groups if g.reason is None]
    assert sorted((g.attention, g.units) for g in ok) == [(False, 48), (False, 48), (True, 3), (True, 3)]
    for g in ok:
        kinds = {s.name.rsplit(".", 1)[-1] for s in g.producers + g.consumers}
        assert kinds in ({"gate_proj", "up_proj", "down_proj"}, {"q_proj", "k_proj", "v_proj", "o_proj"})
    assert any(g.reason and "normal" not in g.reason for g in groups)


def test_every_producer_is_in_exactly_one_group(llama_graph):
    _, gm, _ = llama_graph
    sites = [s for s in find_linears(gm) if s.weight_tensor is not None]
    producers = [s.name for g in dependency_groups(gm, sites) for s in g.producers]
    grown_from = {g.name.split("+")[0] for g in dependency_groups(gm, sites)}
    assert len(producers) == len(set(producers))
    assert set(producers) | grown_from == {s.name for s in sites}


def test_mlp_hidden_couples_gate_and_up_with_down():
    gm, groups = _groups(GatedMLP(), torch.randn(2, 5, 16))
    g = groups["gate+up"]
    assert g.reason is None and not g.attention and g.units == 40
    assert _names(g.producers) == ["gate", "up"] and _names(g.consumers) == ["down"]
    assert {op_name(n) for n in g.members} == {"linear", "silu", "mul"}
    assert set(g.members.values()) == {2} and not g.constants  # the feature axis of [B, S, 40]
    down = groups["down"]  # its output is the residual stream: it reaches the graph output
    assert down.reason == "the channels reach the graph output" and _names(down.producers) == ["down"]


@pytest.mark.parametrize("heads, kv_heads", [(4, 2), (6, 3), (8, 2), (4, 4)])
def test_attention_heads_are_kv_groups(heads, kv_heads):
    """q, k, v and o share one group; its unit is a KV head with its query heads (a head without GQA)."""
    gm, groups = _groups(Attention(d=32, heads=heads, kv_heads=kv_heads, head_dim=8), torch.randn(2, 5, 32))
    g = next(g for g in groups.values() if g.attention)
    assert g.reason is None and g.units == kv_heads
    assert _names(g.producers) == ["k", "q", "v"] and _names(g.consumers) == ["o"]
    sdpa = next(n for n in g.members if op_name(n) == "scaled_dot_product_attention")
    assert g.members[sdpa] == 1 and shape(sdpa)[1] == heads  # the head axis of [B, H, S, D]
    views = {tuple(n.args[1]): g.members[n] for n in g.members if op_name(n) == "view"}
    assert views[(2, 5, heads, 8)] == 2 and views[(2, 5, kv_heads, 8)] == 2  # the literal head counts


def test_block_reshape_with_a_literal_size():
    """A reshape into blocks names the block count literally: the unit is a block (gcd 4), the view and the
    scale constant carry it, and `set_size` writes the pruned count into the literal (a -1 stays -1)."""
    gm, groups = _groups(BlockScaled(), torch.randn(2, 5, 16))
    g = groups["up"]
    assert g.reason is None and g.units == 4 and _names(g.consumers) == ["down"]
    view = next(n for n in g.members if op_name(n) == "view")
    merge = next(n for n in g.members if op_name(n) == "reshape")
    assert list(view.args[1]) == [2, 5, 4, 10] and g.members[view] == 2
    assert list(merge.args[1]) == [2, 5, -1] and g.members[merge] == 2
    assert [(str(n.target), axis) for n, axis in g.constants.items()] == [("scale", 0)]
    assert Group.indices(40, [0, 2], 4).tolist() == list(range(0, 10)) + list(range(20, 30))
    set_size(view, 2, 2)
    set_size(merge, 2, 20)
    assert list(view.args[1]) == [2, 5, 2, 10] and list(merge.args[1]) == [2, 5, -1]


def test_channel_pruning_rewrites_the_literal_size():
    """The pass keeps the 2 loudest blocks and the graph equals the model with the other blocks zeroed."""
    model, x = BlockScaled().eval(), torch.randn(2, 5, 16)
    with torch.no_grad():
        model.up.weight[10:20] *= 0.01  # blocks 1 and 3 nearly silent: the least important
        model.up.weight[30:40] *= 0.01
    gm = torchlite.trace(model, (x,))
    new, report = torchlite.passes.prune(gm, Prune(structure="channel", sparsity=0.5))
    assert [(g.units, g.kept, g.removed) for g in report.groups] == [(4, 2, [1, 3])]
    views = [list(n.args[1]) for n in new.graph.nodes if op_name(n) == "view"]
    assert views == [[2, 5, 2, 10]]
    keep = torch.cat([torch.arange(0, 10), torch.arange(20, 30)])
    with torch.no_grad():
        h = F.gelu(F.linear(x, model.up.weight[keep], model.up.bias[keep])).view(2, 5, 2, 10) * model.scale[[0, 2]]
        ref = x + F.linear(h.reshape(2, 5, 20), model.down.weight[:, keep], model.down.bias)
    torch.testing.assert_close(new(x), ref)


class RuntimeSize(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(16, 40)
        self.down = torch.nn.Linear(40, 16)

    def forward(self, x):
        h = self.up(x)
        return self.down(h.view(h.size(0), h.size(1), h.size(-1) // 10, 10).relu().reshape(h.size(0), h.size(1), 40))


class Normed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(16, 40)
        self.norm = torch.nn.LayerNorm(40)
        self.down = torch.nn.Linear(40, 16)

    def forward(self, x):
        return self.down(self.norm(self.up(x))).sum(-1)


class Concat(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(16, 20)
        self.b = torch.nn.Linear(16, 20)
        self.down = torch.nn.Linear(40, 16)

    def forward(self, x):
        return self.down(torch.cat([self.a(x), self.b(x)], -1)).sum(-1)


class HeadMask(torch.nn.Module):
    """Attention whose additive mask differs per head: its heads cannot be pruned."""

    def __init__(self):
        super().__init__()
        self.inner = Attention(d=32, heads=4, kv_heads=4, head_dim=8)
        self.register_buffer("mask", torch.randn(1, 4, 5, 5))

    def forward(self, x):
        a, b, s = self.inner, x.shape[0], x.shape[1]
        q, k, v = (lin(x).view(b, s, a.h, a.hd).transpose(1, 2) for lin in (a.q, a.k, a.v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)
        return a.o(y.transpose(1, 2).reshape(b, s, a.h * a.hd)).sum(-1)


@pytest.mark.parametrize("model, name, words", [
    (Normed(), "up", ["layer_norm", "not supported"]),
    (Concat(), "a", ["cat", "concatenates along the pruned axis"]),
    (Concat(), "b", ["cat", "concatenates along the pruned axis"]),
    (HeadMask(), "inner.q", ["attention mask differs per head"]),
    (GatedMLP(), "down", ["graph output"]),
])
def test_groups_that_cannot_be_pruned_say_why(model, name, words):
    x = torch.randn(2, 5, 32 if isinstance(model, HeadMask) else 16)
    _, groups = _groups(model, x)
    reason = next(g.reason for g in groups.values() if name in [s.name for s in g.producers] or g.name == name)
    assert reason is not None and all(w in reason for w in words), reason


def test_a_size_computed_at_run_time_is_a_reason():
    """torch.fx.symbolic_trace keeps `h.size(-1) // 10` in the graph: the pruned size is not a literal to rewrite."""
    gm = fx.symbolic_trace(RuntimeSize())
    assert shape(next(iter(gm.graph.nodes))) is None  # no shapes until record_shapes runs the graph
    record_shapes(gm, (torch.randn(2, 5, 16),))
    groups = {g.name: g for g in dependency_groups(gm, find_linears(gm))}
    assert groups["up"].reason == "view computes the pruned size at run time"
    assert shape(next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == "up")) == (2, 5, 40)


def test_op_name_is_the_same_for_every_form_of_an_op():
    g = fx.Graph()
    x = g.placeholder("x")
    nodes = [g.call_function(torch.ops.aten.mul.Tensor, (x, x)), g.call_function(operator.mul, (x, x)),
             g.call_function(torch.mul, (x, x)), g.call_method("mul", (x, x))]
    assert [op_name(n) for n in nodes] == ["mul"] * 4 and op_name(x) == "placeholder"
