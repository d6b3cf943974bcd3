"""The prune pass (torchlite.passes.prune): structured shrinking, schedules, rounding, importance
criteria against masks worked out by hand, and bad input. Compress, backend and recipe tests of pruning
live in tests/test_compress.py, tests/test_backend.py and tests/test_recipe.py; the dependency groups in
tests/graph/test_groups.py. The `llama_graph` fixture is in tests/conftest.py."""
import pytest
import torch
import torch.nn.functional as F

import torchlite
from torchlite import Factor, Prune, Quantize, Recipe, TorchliteError
from torchlite.graph import find_linears
from torchlite.pipeline import apply_recipe


@pytest.mark.parametrize("structure, shrunk", [("neuron", "mlp.up_proj"), ("head", "self_attn.k_proj")])
def test_structured_pass_shrinks_and_runs(llama_graph, structure, shrunk):
    model, gm, ids = llama_graph
    new, report = torchlite.passes.prune(gm, Prune(structure=structure, sparsity=1 / 3))
    layer = next(lay for lay in report.layers if lay.name.endswith(f"layers.0.{shrunk}"))
    assert layer.shape_after[0] == layer.shape_before[0] * 2 // 3
    assert report.after.params < report.before.params
    assert new(ids).shape == (1, 7, 64)
    assert "left unpruned" in str(report)
    if structure == "head":
        assert report.after.flops_at(1, 100) < report.before.flops_at(1, 100)  # attention FLOPs shrink too


def test_prune_then_factor_factors_the_pruned_layers(llama_graph):
    """Issue 5: factorization composes with pruning before it (and quantization after it)."""
    _, gm, ids = llama_graph
    recipe = Recipe(prune=Prune(structure="neuron", sparsity=0.5), factor=Factor(rank=4), quantize=Quantize(bits=8))
    new, (pruned, factored, quantized) = apply_recipe(gm, recipe)
    shapes = {lay.name: (lay.out_features, lay.in_features) for lay in factored.layers}
    assert shapes["model.model.layers.0.mlp.up_proj"] == (24, 48)
    assert shapes["model.model.layers.0.mlp.down_proj"] == (48, 24)
    assert len(quantized.layers) == 2 * len(factored.layers) + 1  # both factors, and the tied lm_head's own copy
    assert new(ids).shape == (1, 7, 64)


def test_iterative_structured_reaches_the_target():
    torch.manual_seed(0)
    gm = torchlite.trace(torch.nn.Sequential(torch.nn.Linear(8, 40), torch.nn.GELU(), torch.nn.Linear(40, 8)), (torch.randn(2, 8),))
    steps = []
    new, report = torchlite.passes.prune(gm, Prune(structure="neuron", sparsity=0.5, schedule={"steps": 4}), callback=lambda g, s: steps.append(s))
    assert steps == [0, 1, 2, 3] and report.groups[0].units == 40 and report.groups[0].kept == 20
    assert report.layers[0].shape_before == (40, 8) and report.layers[0].shape_after == (20, 8)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_round_to_keeps_whole_multiples_and_equals_masking(scope):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 100), torch.nn.GELU(), torch.nn.Linear(100, 8))
    x = torch.randn(3, 8)
    gm = torchlite.trace(model, (x,))
    new, report = torchlite.passes.prune(gm, Prune(structure="neuron", sparsity=0.3, round_to=16, scope=scope))
    (group,) = report.groups
    assert group.kept == 64  # 70 kept units rounded to the nearest multiple of 16
    assert report.layers[0].shape_after == (64, 8) and report.layers[1].shape_after == (8, 64)
    with torch.no_grad():
        masked = torch.nn.Sequential(*(torch.nn.Linear(a.in_features, a.out_features) for a in (model[0], model[2])))
        masked.load_state_dict({k.replace("2.", "1."): v for k, v in model.state_dict().items()})
        masked[0].weight[group.removed] = 0
        masked[0].bias[group.removed] = 0
        ref = masked[1](torch.nn.functional.gelu(masked[0](x)))
    torch.testing.assert_close(new(x), ref)


def test_bad_input_leaves_the_graph_alone():
    model = torch.nn.Sequential(torch.nn.Linear(6, 4))
    x = torch.randn(2, 6)
    gm = torchlite.trace(model, (x,))
    code = gm.code
    with pytest.raises(TorchliteError, match="does not divide"):
        torchlite.passes.prune(gm, Prune(structure="n:m"))
    with pytest.raises(TorchliteError, match="calibration"):
        torchlite.passes.prune(gm, Prune(importance="wanda"))
    two = torchlite.trace(torch.nn.Sequential(torch.nn.Linear(6, 2), torch.nn.ReLU(), torch.nn.Linear(2, 3)), (x,))
    with pytest.raises(TorchliteError, match="every unit"):
        torchlite.passes.prune(two, Prune(structure="neuron", sparsity=0.9))
    with pytest.raises(TorchliteError, match="calib"):
        torchlite.compress(model, Recipe(prune=Prune()))
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(TorchliteError, match="NaN"):
        torchlite.passes.prune(torchlite.trace(model, (x,)), Prune())
    assert gm.code == code




# Importance criteria at the pass level: masks worked out by hand on inputs where they differ from magnitude.

LOUD = torch.tensor([10.0, 0.1] * 4)  # input features 0, 2, 4, 6 carry 100x the activation of the others


def _keep_per_row(scores, n_keep):
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.argsort(1, descending=True)[:, :n_keep], True)


def _keep_in_layer(scores, n_keep):
    flat = torch.zeros(scores.numel(), dtype=torch.bool)
    flat[scores.reshape(-1).argsort(descending=True)[:n_keep]] = True
    return flat.reshape(scores.shape)


def _one_linear(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4, bias=False)).eval()
    calib = [torch.randn(3, 5, 8) * LOUD for _ in range(2)]
    return model, calib, model[0].weight.detach().clone()


def _pruned_weight(model, calib, cfg):
    new, _ = torchlite.passes.prune(torchlite.trace(model, (calib[0],)), cfg, calib=calib)
    (site,) = find_linears(new)
    return site.weight_tensor


def test_wanda_mask_weighs_weights_by_their_inputs_norms():
    """Wanda keeps, per output row, the weights with the largest |w_ij| * ||x_j||_2 (norm over all calibration
    tokens): more of the loud inputs' weights than the magnitude (L1) mask keeps."""
    model, calib, w = _one_linear()
    norms = torch.cat(calib).reshape(-1, 8).square().sum(0).sqrt()
    wanda = _keep_per_row(w.abs() * norms, 4)
    l1 = _keep_per_row(w.abs(), 4)
    ranked = (w.abs() * norms).sort(1, descending=True).values
    assert (ranked[:, 3] > 1.05 * ranked[:, 4]).all(), "a clear gap at each row's cut"
    assert (wanda != l1).sum() >= 4 and (wanda & LOUD.gt(1)).sum() > (l1 & LOUD.gt(1)).sum()
    assert torch.equal(_pruned_weight(model, calib, Prune(sparsity=0.5, importance="wanda")), w * wanda)
    assert torch.equal(_pruned_weight(model, calib, Prune(sparsity=0.5, importance="l1")), w * _keep_in_layer(w.abs(), 16))


def test_taylor_mask_follows_the_gradient():
    """Taylor keeps the weights with the largest |g_ij * w_ij|, g the gradient of the loss (half the mean square
    of the output, summed over the calibration batches), computed here with autograd: not the L1 mask."""
    model, calib, w = _one_linear()
    leaf = w.clone().requires_grad_(True)
    for x in calib:
        (0.5 * F.linear(x, leaf).square().mean()).backward()
    scores = (leaf.grad * w).abs()
    taylor, l1 = _keep_in_layer(scores, 16), _keep_in_layer(w.abs(), 16)
    ranked = scores.reshape(-1).sort(descending=True).values
    assert ranked[15] > 1.05 * ranked[16], "a clear gap at the cut, so float rounding cannot reorder it"
    assert (taylor != l1).sum() >= 4
    assert torch.equal(_pruned_weight(model, calib, Prune(sparsity=0.5, importance="taylor")), w * taylor)


def test_structured_wanda_and_taylor_rank_units_by_their_inputs_and_gradients():
    """Neuron pruning of Linear(8, 6) -> Linear(6, 3), half the neurons quiet (small rows in the first layer)
    with large columns in the second. Wanda scores a neuron by its consumer column weighted by the neuron's
    activation norm; Taylor by |sum of g * w| over the neuron's row and column. Each keeps another set of
    neurons than magnitude (L1), or than these criteria would without activations or gradients."""
    torch.manual_seed(0)
    up = torch.randn(6, 8) * torch.tensor([1.0, 0.05] * 3)[:, None]
    down = torch.randn(3, 6) * torch.tensor([0.3, 3.0] * 3)
    calib = [torch.randn(4, 8) for _ in range(2)]
    model = torch.nn.Sequential(torch.nn.Linear(8, 6, bias=False), torch.nn.Linear(6, 3, bias=False)).eval()
    with torch.no_grad():
        model[0].weight.copy_(up)
        model[1].weight.copy_(down)
    hidden = torch.cat(calib) @ up.T
    leaves = [up.clone().requires_grad_(True), down.clone().requires_grad_(True)]
    for x in calib:
        (0.5 * F.linear(F.linear(x, leaves[0]), leaves[1]).square().mean()).backward()
    scores = {
        "l1": up.abs().sum(1) + down.abs().sum(0),
        "wanda": (down.abs() * hidden.square().sum(0).sqrt()).sum(0),
        "taylor": ((leaves[0].grad * up).sum(1) + (leaves[1].grad * down).sum(0)).abs(),
        "wanda without norms": down.abs().sum(0),
        "taylor without gradients": (up.sum(1) + down.sum(0)).abs(),
    }
    kept = {}
    for name, s in scores.items():
        top = s.argsort(descending=True)
        assert s[top[2]] > 1.1 * s[top[3]], f"{name}: a clear gap at the cut"
        kept[name] = sorted(top[:3].tolist())
    assert kept["wanda"] not in (kept["l1"], kept["wanda without norms"])
    assert kept["taylor"] not in (kept["l1"], kept["taylor without gradients"])
    for name in ("l1", "wanda", "taylor"):
        gm = torchlite.trace(model, (calib[0],))
        _, report = torchlite.passes.prune(gm, Prune(structure="neuron", sparsity=0.5, importance=name), calib=calib)
        assert sorted(set(range(6)) - set(report.groups[0].removed)) == kept[name], name
