"""Hypothesis properties of the prune pass on generated MLP and attention graphs."""
import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import torchlite
from torchlite import Prune

from slow_budget import rerun_slow


class GatedMLP(torch.nn.Module):
    def __init__(self, d: int, h: int, bias: bool):
        super().__init__()
        self.gate = torch.nn.Linear(d, h, bias=bias)
        self.up = torch.nn.Linear(d, h, bias=bias)
        self.down = torch.nn.Linear(h, d, bias=bias)

    def forward(self, x):
        return x + self.down(F.silu(self.gate(x)) * self.up(x))


class Attention(torch.nn.Module):
    """Grouped-query attention written with literal head counts (so the pass must rewrite them)."""

    def __init__(self, d: int, heads: int, kv_heads: int, head_dim: int):
        super().__init__()
        self.h, self.kv, self.hd = heads, kv_heads, head_dim
        self.q = torch.nn.Linear(d, heads * head_dim)
        self.k = torch.nn.Linear(d, kv_heads * head_dim)
        self.v = torch.nn.Linear(d, kv_heads * head_dim)
        self.o = torch.nn.Linear(heads * head_dim, d)

    def forward(self, x):
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.h, self.hd).transpose(1, 2)
        k = self.k(x).view(b, s, self.kv, self.hd).transpose(1, 2)
        v = self.v(x).view(b, s, self.kv, self.hd).transpose(1, 2)
        rep = self.h // self.kv
        k = k[:, :, None].expand(b, self.kv, rep, s, self.hd).reshape(b, self.h, s, self.hd)
        v = v[:, :, None].expand(b, self.kv, rep, s, self.hd).reshape(b, self.h, s, self.hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.o(y.transpose(1, 2).reshape(b, s, self.h * self.hd))


@st.composite
def models(draw):
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    d = draw(st.integers(2, 12))
    if draw(st.booleans()):
        model, consumer = GatedMLP(d, draw(st.integers(2, 24)), draw(st.booleans())), "down"
    else:
        kv = draw(st.integers(2, 3))
        model, consumer = Attention(d, kv * draw(st.integers(1, 3)), kv, draw(st.integers(1, 4))), "o"
    x = torch.randn(2, draw(st.integers(1, 5)), d)
    return model.eval(), x, consumer


def _prune(model, x, cfg):
    gm = torchlite.trace(model, (x,))
    return torchlite.passes.prune(gm, cfg, calib=[x] if cfg.needs_calibration else None)


def _group_units(model, consumer):
    """Neurons of the MLP; KV groups (a KV head with its query heads) of the attention."""
    return model.kv if consumer == "o" else model.gate.out_features


@settings(max_examples=40, deadline=None)
@given(models(), st.floats(0.0, 0.9), st.sampled_from(["l1", "l2", "wanda", "taylor"]))
def test_shrunk_equals_masked(case, sparsity, importance):
    """The smaller dense graph computes what the original does with the removed units' consumer
    columns set to zero; shapes stay consistent across every coupled layer."""
    model, x, consumer = case
    units = _group_units(model, consumer)
    if round(units * sparsity) >= units:
        return
    new, report = _prune(model, x, Prune(structure="channel", sparsity=sparsity, importance=importance))
    (group,) = report.groups
    assert group.units == units and group.kept == units - round(units * sparsity)
    masked = copy.deepcopy(model)
    lin = getattr(masked, consumer)
    block = lin.in_features // units
    with torch.no_grad():
        for u in group.removed:
            lin.weight[:, u * block:(u + 1) * block] = 0
        torch.testing.assert_close(new(x), masked(x), atol=1e-5, rtol=1e-5)
    for layer in report.layers:
        assert layer.after.params <= layer.before.params


@settings(max_examples=30, deadline=None)
@given(models(), st.data())
def test_pruning_zero_importance_units_is_exact(case, data):
    """Units whose weights (and biases) are all zero have zero importance; removing them changes nothing."""
    model, x, consumer = case
    units = _group_units(model, consumer)
    dead = data.draw(st.sets(st.integers(0, units - 1), max_size=units - 1))
    producers = ("gate", "up") if consumer == "down" else ("q", "k", "v")
    with torch.no_grad():
        for name in producers + (consumer,):
            lin = getattr(model, name)
            axis = 1 if name == consumer else 0
            block = lin.weight.shape[axis] // units
            for u in dead:
                lin.weight.narrow(axis, u * block, block).zero_()
                if axis == 0 and lin.bias is not None:
                    lin.bias.narrow(0, u * block, block).zero_()
    importance = data.draw(st.sampled_from(["l1", "l2"]))
    new, report = _prune(model, x, Prune(structure="channel", sparsity=len(dead) / units, importance=importance))
    assert set(report.groups[0].removed) == dead or round(len(dead) / units * units) != len(dead)
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), atol=1e-5, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 24), st.integers(1, 24), st.floats(0.0, 0.95), st.sampled_from(["layer", "global"]), st.integers(0, 2**16))
def test_unstructured_sparsity_is_exact(out_f, in_f, sparsity, scope, seed):
    """round(sparsity * size) weights become exact zeros: per layer, or in total for a global ranking."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(in_f, out_f), torch.nn.ReLU(), torch.nn.Linear(out_f, 3))
    x = torch.randn(2, in_f)
    new, report = _prune(model, x, Prune(sparsity=sparsity, scope=scope))
    sizes = [lay.shape_before[0] * lay.shape_before[1] for lay in report.layers]
    weights = [t for name, t in new.named_buffers() if t.dim() == 2]
    counts = [int((w == 0).sum()) for w in weights]
    if scope == "layer":
        assert counts == [round(sparsity * n) for n in sizes]
    else:
        assert sum(counts) == round(sparsity * sum(sizes))
    assert [lay.sparsity for lay in report.layers] == pytest.approx([c / n for c, n in zip(counts, sizes)])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.sampled_from([(1, 4), (2, 4), (2, 8), (4, 8)]), st.integers(1, 6), st.integers(0, 2**16))
def test_nm_keeps_the_n_largest_of_every_m(out_f, nm, groups, seed):
    n, m = nm
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(groups * m, out_f, bias=False))
    x = torch.randn(3, groups * m)
    new, report = _prune(model, x, Prune(structure="n:m", n=n, m=m))
    w = model[0].weight.detach()
    kept = torch.topk(w.abs().reshape(out_f, groups, m), n, dim=-1).indices
    dense = torch.zeros_like(w).reshape(out_f, groups, m).scatter_(-1, kept, w.reshape(out_f, groups, m).gather(-1, kept))
    with torch.no_grad():
        torch.testing.assert_close(new(x), x @ dense.reshape(out_f, -1).T, atol=1e-5, rtol=1e-5)
    assert report.layers[0].after.bytes < report.layers[0].before.bytes


# Reruns with the slow suite's budget (`make test-slow`; slow_budget.py).
test_shrunk_equals_masked_slow = rerun_slow(test_shrunk_equals_masked, models(), st.floats(0.0, 0.9), st.sampled_from(["l1", "l2", "wanda", "taylor"]))
test_unstructured_sparsity_is_exact_slow = rerun_slow(test_unstructured_sparsity_is_exact, st.integers(1, 24), st.integers(1, 24), st.floats(0.0, 0.95), st.sampled_from(["layer", "global"]), st.integers(0, 2**16))
