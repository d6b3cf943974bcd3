"""The prune pass, torchlite.compress and the backend with Recipe(prune=...)."""
import pytest
import torch
import transformers

import torchlite
from torchlite import Factor, Prune, Quantize, Recipe, Schedule, TorchliteError
from torchlite.graph import find_linears
from torchlite.graph.groups import dependency_groups
from torchlite.pipeline import apply_recipe

NM_LINEAR = torch.ops.torchlite.nm_linear.default


def tiny_llama(tie=True):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=48, intermediate_size=48, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=3, head_dim=8, tie_word_embeddings=tie,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


class Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(ids, use_cache=False).logits


@pytest.fixture(scope="module")
def llama_graph():
    model = tiny_llama()
    ids = torch.randint(0, 64, (1, 7))
    return model, torchlite.trace(Logits(model), (ids,)), ids


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


def test_compress_matches_the_pass(llama_graph):
    model, gm, ids = llama_graph
    cfg = Prune(structure="channel", sparsity=1 / 3, importance="wanda")
    new, _ = torchlite.passes.prune(gm, cfg, calib=[ids])
    small = torchlite.compress(model, Recipe(prune=cfg), calib=[{"input_ids": ids, "use_cache": False}])
    assert small.model.layers[0].self_attn.q_proj.out_features == 32
    assert small.model.layers[0].mlp.down_proj.in_features == 32
    assert model.model.layers[0].mlp.down_proj.in_features == 48  # the input model is untouched
    with torch.no_grad():
        torch.testing.assert_close(small(ids, use_cache=False).logits, new(ids), atol=1e-5, rtol=1e-5)
        small.generate(ids, max_new_tokens=3, do_sample=False)  # the KV cache follows the pruned heads


def test_backend_prunes_heads(llama_graph):
    model, gm, ids = llama_graph
    cfg = {"structure": "head", "sparsity": 1 / 3}
    new, _ = torchlite.passes.prune(gm, Prune(**cfg))
    compiled = torch.compile(model, backend="lite", options={"recipe": {"prune": cfg}})
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids, use_cache=False).logits, new(ids), atol=1e-4, rtol=1e-4)


def test_nm_then_int8_packs_int8_values(llama_graph):
    model, gm, ids = llama_graph
    new, reports = apply_recipe(gm, Recipe(prune=Prune(structure="n:m"), quantize=Quantize(bits=8)))
    sparse = [n for n in new.graph.nodes if n.target is NM_LINEAR]
    assert len(sparse) == 14 and all(getattr(new, n.args[1].target).dtype == torch.int8 for n in sparse)
    small = torchlite.compress(model, Recipe(prune=Prune(structure="n:m"), quantize=Quantize(bits=8)), calib=[{"input_ids": ids, "use_cache": False}])
    assert isinstance(small.model.layers[1].mlp.down_proj, torchlite.SparseLinear)
    assert small.model.layers[1].mlp.down_proj.scale is not None
    with torch.no_grad():
        torch.testing.assert_close(small(ids, use_cache=False).logits, new(ids), atol=1e-4, rtol=1e-4)
        compiled = torch.compile(small)
        torch.testing.assert_close(compiled(ids, use_cache=False).logits, new(ids), atol=1e-4, rtol=1e-4)


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


def test_iterative_schedule_calls_back_and_keeps_zeros():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    x = torch.randn(8, 16)
    seen = []

    def finetune(m, step):
        seen.append((step, torch.rand(1).item()))
        with torch.no_grad():
            for lin in (m[0], m[2]):
                lin.weight.add_(1.0)  # moves every weight, pruned ones included

    cfg = Prune(sparsity=0.75, schedule=Schedule(steps=3, kind="cubic", seed=5))
    small = torchlite.compress(model, Recipe(prune=cfg), calib=[x], callback=finetune)
    assert [s for s, _ in seen] == [0, 1, 2]
    torch.manual_seed(5)
    assert seen[0][1] == torch.rand(1).item()  # seeded before each call
    report = small.torchlite_report[0]
    assert report.steps == pytest.approx([0.75 * (1 - (1 - t / 3) ** 3) for t in (1, 2, 3)])
    for lin in (small[0], small[2]):
        assert int((lin.weight == 0).sum()) == round(0.75 * lin.weight.numel())


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


@pytest.mark.parametrize("kwargs, message", [
    ({"structure": "neuron", "round_to": 0}, "positive"),
    ({"round_to": 16}, "structured"),
    ({"sparsity": 1.0}, "[0, 1)"),
    ({"sparsity": -0.1}, "[0, 1)"),
    ({"structure": "rows"}, "allowed"),
    ({"importance": "random"}, "allowed"),
    ({"structure": "n:m", "n": 4, "m": 4}, "0 < n < m"),
    ({"structure": "n:m", "sparsity": 0.3}, "contradicts"),
    ({"structure": "n:m", "scope": "global"}, "global"),
    ({"schedule": {"steps": 0}}, "positive"),
    ({"schedule": {"kind": "exp"}}, "allowed"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(TorchliteError, match=message.replace("[", r"\[").replace(")", r"\)")):
        Prune(**kwargs)


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


def test_recipe_dict_round_trip():
    recipe = torchlite.parse_recipe({"prune": {"structure": "head", "sparsity": 0.25, "schedule": {"steps": 2}}})
    assert recipe.prune == Prune(structure="head", sparsity=0.25, schedule=Schedule(steps=2))
    with pytest.raises(TorchliteError, match="unknown prune option"):
        torchlite.parse_recipe({"prune": {"ratio": 0.5}})
