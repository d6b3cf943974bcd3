"""Hypothesis properties of low-rank factorization: the numerics and the factor pass."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchlite
from torchlite.numerics.stats import InputStats, output_error
from torchlite.graph.cost import graph_cost, total
from torchlite.numerics.lowrank import allocate_budget, best_asvd, decompose, max_paying_rank, params, weight_error
from torchlite.recipe import Factor

from slow_budget import rerun_slow


@st.composite
def layers(draw):
    """(W [out, in], activation statistics of inputs with uneven, correlated features)."""
    out_f, in_f = draw(st.integers(2, 40)), draw(st.integers(2, 40))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    w = torch.randn(out_f, in_f, generator=g) * draw(st.floats(1e-2, 1e2))
    mix = torch.randn(in_f, in_f, generator=g) * torch.logspace(-1, 1, in_f)
    x = torch.randn(in_f + 16, in_f, generator=g) @ mix
    stats = InputStats(in_f)
    stats.update(x)
    return w, stats


def _approx(dec, rank):
    a, b = dec.factors(rank)
    return b.double() @ a.double()


@settings(max_examples=60, deadline=None)
@given(layers(), st.sampled_from(["svd", "asvd", "whiten"]))
def test_full_rank_reproduces_the_layer(layer, method):
    w, stats = layer
    dec = decompose(w, method, stats)
    assert dec.max_rank == min(w.shape)
    assert weight_error(w, _approx(dec, dec.max_rank)) < 1e-5


@settings(max_examples=60, deadline=None)
@given(layers())
def test_error_never_increases_with_rank(layer):
    w, stats = layer
    svd, white = decompose(w, "svd"), decompose(w, "whiten", stats)
    weight_errs = [weight_error(w, _approx(svd, r)) for r in range(1, svd.max_rank + 1)]
    output_errs = [output_error(w, _approx(white, r), stats) for r in range(1, white.max_rank + 1)]
    for errs in (weight_errs, output_errs):  # relative errors of float32 factors: rounding moves them by ~1e-8
        assert all(b <= a + 1e-6 for a, b in zip(errs, errs[1:])), [b - a for a, b in zip(errs, errs[1:])]


@settings(max_examples=60, deadline=None)
@given(layers(), st.data())
def test_activation_aware_output_error_not_above_plain_svd(layer, data):
    w, stats = layer
    rank = data.draw(st.integers(1, min(w.shape)))
    plain = output_error(w, _approx(decompose(w, "svd"), rank), stats)
    whitened = output_error(w, _approx(decompose(w, "whiten", stats), rank), stats)
    asvd, _ = best_asvd(w, stats, rank)
    assert whitened <= plain * (1 + 1e-6) + 1e-6
    assert output_error(w, _approx(asvd, rank), stats) <= plain * (1 + 1e-6) + 1e-6


class MLP(torch.nn.Module):
    def __init__(self, widths, bias):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b, bias=bias) for a, b in zip(widths, widths[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == 0 else layer(torch.relu(x))
        return x


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(8, 48), min_size=2, max_size=4), st.booleans(), st.floats(0.05, 0.9), st.booleans(),
       st.sampled_from([1, 4, 16]))
def test_pass_parameter_count_and_numerics(widths, bias, ratio, symbolic, multiple):
    model = MLP(widths, bias).eval()
    x = torch.randn(3, widths[0])
    gm = torch.fx.symbolic_trace(model) if symbolic else torchlite.trace(model, (x,))
    new, report = torchlite.passes.factor(gm, Factor(ratio=ratio, min_saving=0.0, rank_multiple=multiple))
    expected = 0
    for layer in model.layers:
        in_f, out_f = layer.in_features, layer.out_features
        r = max(1, int(ratio * in_f * out_f // (in_f + out_f)))
        r = r if r < multiple else r // multiple * multiple  # a ratio is an upper bound: rounded down
        factored = r * (in_f + out_f) <= in_f * out_f
        expected += (r * (in_f + out_f) if factored else in_f * out_f) + (out_f if bias else 0)
    assert report.after.params == expected == total(graph_cost(new).values()).params
    factors = _factors(new)
    assert sorted(factors) == sorted(r.name for r in report.layers)
    reference = x
    for i, layer in enumerate(model.layers):  # eager reference: a factored layer is x @ (B A)^T + b
        h = reference if i == 0 else torch.relu(reference)
        a, b = factors.get(f"layers.{i}", (None, None))
        reference = layer(h) if a is None else torch.nn.functional.linear(h, b @ a, layer.bias)
    torch.testing.assert_close(new(x), reference, rtol=1e-4, atol=1e-4)


def _factors(gm):
    """{layer name: (A, B)} from the constants the factor pass inserted."""
    out = {}
    for node in gm.graph.nodes:
        name = node.meta.get("torchlite_name", "")
        if node.op == "get_attr" and ".lowrank_" in name:
            layer, part = name.removesuffix(".weight").rsplit(".lowrank_", 1)
            out.setdefault(layer, {})[part] = getattr(gm, node.target)
    return {k: (v["a"], v["b"]) for k, v in out.items()}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(16, 160), st.integers(16, 160), st.integers(0, 2**16)), min_size=1, max_size=5),
       st.floats(0.2, 0.9), st.sampled_from([1, 8, 16]))
def test_budget_ranks_fit_and_are_multiples(shapes, budget, multiple):
    spectra = []
    for i, o, seed in shapes:
        g = torch.Generator().manual_seed(seed)
        spectra.append((i, o, torch.rand(min(i, o), generator=g, dtype=torch.float64).sort(descending=True).values))
    target = budget * sum(i * o for i, o, _ in shapes)  # >= 20 %: rank 1 everywhere always fits
    ranks = allocate_budget(spectra, target, 0.1, multiple)
    assert sum(params(i, o, r) for (i, o, _), r in zip(spectra, ranks)) <= target
    for (i, o, _), r in zip(spectra, ranks):
        assert r is None or (1 <= r <= max_paying_rank(i, o, 0.1) and (r < multiple or r % multiple == 0))


@settings(max_examples=20, deadline=None)
@given(st.integers(20, 64), st.integers(20, 64), st.floats(0.3, 0.99), st.sampled_from([1, 8, 16]))
def test_energy_ranks_keep_at_least_the_energy(in_f, out_f, energy, multiple):
    model = MLP([in_f, out_f], False).eval()
    _, report = torchlite.passes.factor(
        torchlite.trace(model, (torch.randn(2, in_f),)), Factor(energy=energy, min_saving=0.0, rank_multiple=multiple)
    )
    for layer in report.layers:
        assert layer.energy >= energy - 1e-9


# Reruns with the slow suite's budget (`make test-slow`; slow_budget.py).
test_error_never_increases_with_rank_slow = rerun_slow(test_error_never_increases_with_rank, layers())
test_activation_aware_output_error_not_above_plain_svd_slow = rerun_slow(test_activation_aware_output_error_not_above_plain_svd, layers(), st.data())
