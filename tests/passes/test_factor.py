import pytest
import sympy
import torch
import torch.nn.functional as F

import torchlite
from torchlite import Factor, Quantize, Recipe, TorchliteError
from torchlite.graph.cost import BATCH, SEQ, graph_cost, total
from torchlite.passes.factor import SHARED

QLINEAR = torch.ops.torchlite.qlinear.default


class Block(torch.nn.Module):
    """A gated MLP whose activations have a few large input features, as in LLMs."""

    def __init__(self, d=48, h=96):
        super().__init__()
        self.gate, self.up, self.down = torch.nn.Linear(d, h), torch.nn.Linear(d, h), torch.nn.Linear(h, d, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


def _batch(seed, d=48):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 16, d, generator=g)
    x[..., :4] *= 20  # outlier features
    return x


CALIB = [_batch(i) for i in range(4)]


def _trace(model=None):
    model = model or Block().eval()
    return model, torchlite.trace(model, (CALIB[0],))


def _out_error(model, gm, batches):
    return sum(((gm(x) - model(x)).norm() / model(x).norm()).item() for x in batches) / len(batches)


def test_input_graph_untouched_and_layers_replaced_by_pairs():
    model, gm = _trace()
    code = gm.code
    new, report = torchlite.passes.factor(gm, Factor(ratio=0.5))
    assert gm.code == code
    linears = [n for n in new.graph.nodes if n.target in (F.linear, torch.ops.aten.linear.default)]
    assert len(linears) == 6 and len(report.layers) == 3
    for r in report.layers:
        assert r.rank == int(0.5 * r.in_features * r.out_features // (r.in_features + r.out_features))
        assert 0 < r.energy < 1 and r.weight_error > 0
    assert "48x96" not in str([tuple(t.shape) for t in new.buffers()]), "the dense weights are gone"


def test_activation_aware_methods_beat_svd_on_held_out_data():
    model, gm = _trace()
    held_out = [_batch(100 + i) for i in range(3)]
    errors = {}
    for method in ("svd", "asvd", "whiten"):
        new, report = torchlite.passes.factor(gm, Factor(ratio=0.5, method=method), CALIB)
        errors[method] = _out_error(model, new, held_out)
        assert all(r.output_error is not None for r in report.layers)
    assert errors["whiten"] < errors["svd"] and errors["asvd"] < errors["svd"]


def test_budget_is_met_and_split_by_sensitivity():
    model, gm = _trace()
    new, report = torchlite.passes.factor(gm, Factor(budget=0.6, method="whiten", min_saving=0.0), CALIB)
    assert report.after.params - 96 * 2 <= 0.6 * (48 * 96 * 3)  # biases of gate and up are not budgeted
    assert len({r.rank for r in report.layers}) > 1, "ranks differ across layers"
    assert all(r.rank % 16 == 0 for r in report.layers if r.rank >= 16), "ranks are multiples of rank_multiple=16"
    assert total(graph_cost(new).values()).params == report.after.params


def test_energy_picks_the_smallest_rank_reaching_it():
    _, gm = _trace()
    _, report = torchlite.passes.factor(gm, Factor(energy=0.8, min_saving=0.0))
    for r in report.layers:
        assert r.energy >= 0.8
    _, lower = torchlite.passes.factor(gm, Factor(energy=0.5, min_saving=0.0))
    assert all(a.rank <= b.rank for a, b in zip(lower.layers, report.layers))


def test_layers_that_do_not_pay_stay_dense():
    _, gm = _trace()
    new, report = torchlite.passes.factor(gm, Factor(rank=30, min_saving=0.1))  # 30*(48+96) > 0.9*48*96
    assert not report.layers and len(report.skipped) == 3
    assert report.after.params == report.before.params
    assert "does not save 10%" in report.skipped[0][1]


def test_cost_model_is_symbolic_in_batch_and_sequence():
    _, gm = _trace()
    cost = total(graph_cost(gm).values())
    assert cost.params == 3 * 48 * 96 + 2 * 96
    assert sympy.simplify(cost.flops - 2 * 3 * 48 * 96 * BATCH * SEQ) == 0
    assert cost.flops_at(batch=2, seq=16) == 2 * 3 * 48 * 96 * 32


def test_factor_then_quantize_quantizes_the_factors():
    model, gm = _trace()
    recipe = Recipe(factor=Factor(ratio=0.5, method="whiten"), quantize=Quantize(bits=8))
    from torchlite.pipeline import apply_recipe

    new, (freport, qreport) = apply_recipe(gm, recipe, CALIB)
    assert [n.target for n in new.graph.nodes].count(QLINEAR) == 6
    assert {r.name for r in qreport.layers} == {f"{n}.lowrank_{p}" for n in ("gate", "up", "down") for p in "ab"}
    factored, _ = torchlite.passes.factor(gm, Factor(ratio=0.5, method="whiten"), CALIB)
    x = CALIB[1]
    assert (new(x) - factored(x)).norm() / factored(x).norm() < 0.02  # int8 adds a small error


class TiedLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(100, 32)
        self.proj = torch.nn.Linear(32, 32)
        self.head = torch.nn.Linear(32, 100, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.proj(self.embed(ids)))


def test_weights_tied_to_an_embedding_stay_dense():
    model, ids = TiedLM().eval(), torch.randint(0, 100, (2, 8))
    gm = torchlite.trace(model, (ids,))
    _, report = torchlite.passes.factor(gm, Factor(rank=4))
    assert [r.name for r in report.layers] == ["proj"]
    assert ("head", SHARED) in report.skipped
    small = torchlite.compress(model, Recipe(factor=Factor(rank=4)))
    assert isinstance(small.head, torch.nn.Linear) and isinstance(small.proj, torchlite.LowRankLinear)


def test_compress_matches_the_pass():
    model, gm = _trace()
    recipe = Recipe(factor=Factor(budget=0.5, method="asvd"))
    small = torchlite.compress(model, recipe, calib=CALIB)
    new, report = torchlite.passes.factor(gm, recipe.factor, CALIB)
    assert isinstance(model.up, torch.nn.Linear), "compress does not modify its input"
    assert [type(m).__name__ for m in (small.gate, small.up, small.down)] == ["LowRankLinear"] * 3
    assert [r.rank for r in small.torchlite_report[0].layers] == [r.rank for r in report.layers]
    torch.testing.assert_close(small(CALIB[2]), new(CALIB[2]), rtol=1e-4, atol=1e-4)
    n_params = sum(p.numel() for p in small.parameters())
    assert n_params == report.after.params


@pytest.mark.parametrize(
    "cfg, calib, match",
    [
        (dict(rank=0), None, "positive int"),
        (dict(ratio=0.5, rank_multiple=0), None, "rank_multiple=0 must be a positive int"),
        (dict(rank=4, ratio=0.5), None, "exactly one"),
        (dict(ratio=1.5), None, "between 0 and 1"),
        (dict(budget=0.5, method="pca"), None, "unknown; allowed: svd, asvd, whiten"),
        (dict(rank=49), None, "exceeds min\\(in, out\\)=48"),
        (dict(ratio=0.5, method="whiten"), None, "needs calibration data"),
        (dict(ratio=0.5, method="whiten"), [], "empty"),
        (dict(ratio=0.5, method="whiten"), [torch.randn(2, 16, 7)], "could not run"),
        (dict(ratio=0.5, method="whiten"), CALIB[0], "not a single Tensor"),
        (dict(ratio=0.5, method="whiten"), [CALIB[0], torch.ones(2, 16, dtype=torch.long)], "same structure"),
        (dict(budget=0.001, min_saving=0.5), None, "budget cannot be met"),
    ],
)
def test_bad_input_is_refused_before_anything_changes(cfg, calib, match):
    model, gm = _trace()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TorchliteError, match=match):
        torchlite.passes.factor(gm, Factor(**cfg), calib)
    with pytest.raises(TorchliteError, match=match):
        torchlite.compress(model, {"factor": cfg}, calib=calib, inplace=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.up, torch.nn.Linear)


def test_nan_weights_are_refused():
    model, gm = _trace()
    with torch.no_grad():
        model.up.weight[0, 0] = float("nan")
    with pytest.raises(TorchliteError, match="NaN"):
        torchlite.passes.factor(torchlite.trace(model, (CALIB[0],)), Factor(ratio=0.5))
