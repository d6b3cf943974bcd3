import pytest
import torch

import torchlite
from torchlite import Prune, Quantize, QuantizedLinear, Recipe, Schedule, TorchliteError
from torchlite.pipeline import apply_recipe

NM_LINEAR = torch.ops.torchlite.nm_linear.default


def _model():
    return torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64, bias=False))


@pytest.mark.parametrize("recipe, container, ratio", [("int8", torch.int8, 3.5), ("int4", torch.uint8, 6.0)])
def test_compress_stores_real_low_bit_weights(recipe, container, ratio):
    model, x = _model(), torch.randn(5, 128)
    small = torchlite.compress(model, recipe)
    assert isinstance(model[0], torch.nn.Linear), "the input model is not modified"
    assert isinstance(small[0], QuantizedLinear) and small[0].qdata.dtype == container
    report = small.torchlite_report[0]
    assert report.bytes_before / report.bytes_after > ratio
    tol = 0.05 if recipe == "int8" else 0.5
    assert (small(x) - model(x)).abs().max() < tol


def test_compress_then_plain_inductor_uses_the_lowering():
    small, x = torchlite.compress(_model(), "int4"), torch.randn(1, 128)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(small)(x), small(x), rtol=1e-4, atol=1e-4)


def test_failed_compress_leaves_the_model_as_it_was():
    model = _model()
    with torch.no_grad():
        model[2].weight[1, 1] = float("nan")
    with pytest.raises(TorchliteError, match="'2'"):
        torchlite.compress(model, "int8", inplace=True)
    assert isinstance(model[0], torch.nn.Linear) and isinstance(model[2], torch.nn.Linear)


def test_exclusion_by_name():
    small = torchlite.compress(_model(), {"quantize": {"bits": 8, "exclude": ["2"]}})
    assert isinstance(small[0], QuantizedLinear) and isinstance(small[2], torch.nn.Linear)


# Pruning through compress (`llama_graph`: tests/conftest.py).


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
