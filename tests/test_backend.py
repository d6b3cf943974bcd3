import logging
import re

import pytest
import torch
import torch.nn.functional as F
from torch._inductor.utils import run_and_get_code

import torchlite
from torchlite import Prune, Quantize, Recipe


class Block(torch.nn.Module):
    def __init__(self, d=64, h=192):
        super().__init__()
        self.norm = torch.nn.LayerNorm(d)
        self.gate = torch.nn.Linear(d, h, bias=False)
        self.up = torch.nn.Linear(d, h, bias=False)
        self.down = torch.nn.Linear(h, d)

    def forward(self, x):
        y = self.norm(x)
        return x + self.down(F.silu(self.gate(y)) * self.up(y))


def test_registered_through_the_entry_point():
    assert "lite" in torch._dynamo.list_backends()


@pytest.mark.parametrize(
    "options, bits",
    [
        (None, 8),
        ({"recipe": "int4"}, 4),
        ({"recipe": {"quantize": {"bits": 8, "symmetric": False}}}, 8),
        ({"recipe": Recipe(quantize=Quantize(bits=4, group_size=32))}, 4),
    ],
)
def test_compiled_model_matches_eager_reference(options, bits):
    model, x = Block().eval(), torch.randn(2, 5, 64)
    recipe = torchlite.parse_recipe((options or {}).get("recipe"))
    reference = torchlite.compress(model, recipe)  # eager torchlite ops: the oracle
    with torch.no_grad():
        out = torch.compile(model, backend="lite", options=options)(x)
        torch.testing.assert_close(out, reference(x), rtol=1e-4, atol=1e-4)
        assert (out - model(x)).abs().max() < (0.05 if bits == 8 else 0.5)


def test_recipe_none_lowers_float_linears_for_inference_only():
    model, x = Block().eval(), torch.randn(1, 64)
    with torch.no_grad():
        out, codes = run_and_get_code(torch.compile(model, backend="lite", options={"recipe": "none"}), x)
    call = "\n".join(codes).split("def call")[1]
    assert "extern_kernels" not in call, "decode-shaped float linears run as torchlite reductions, not GEMM calls"
    torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
    _, codes = run_and_get_code(torch.compile(model, backend="lite", options={"recipe": "none"}), x)
    assert "extern_kernels" in "\n".join(codes), "under grad mode the linears stay Inductor's"


def test_compiled_graph_holds_no_fp32_weight():
    model, x = Block(d=128, h=256).eval(), torch.randn(1, 128)
    with torch.no_grad():
        _, codes = run_and_get_code(torch.compile(model, backend="lite"), x)
    code = "\n".join(codes)
    for shape in ["(512, 128)", "(128, 256)"]:  # gate and up fused (fuse_shared_inputs), down
        assert not re.search(rf"rand_strided\({re.escape(shape)}, \(\d+, 1\), device='cpu', dtype=torch.float32\)", code)
        assert re.search(rf"rand_strided\({re.escape(shape)}, \(\d+, 1\), device='cpu', dtype=torch.int8\)", code)
    assert "cpp_fused" in code and "torch.ops.torchlite" not in code


def test_unknown_option_is_a_clear_error():
    with pytest.raises(Exception, match="unknown option.*'recipie'.*allowed: recipe"):
        torch.compile(Block(), backend="lite", options={"recipie": "int8"})(torch.randn(2, 64))


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(Exception, match="unknown recipe preset 'int5'"):
        torch.compile(Block(), backend="lite", options={"recipe": "int5"})(torch.randn(2, 64))


def test_model_without_linears_compiles():
    model = torch.nn.Sequential(torch.nn.LayerNorm(8), torch.nn.ReLU())
    x = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="lite")(x), model(x))


def test_nan_weights_raise_naming_the_layer():
    model = Block().eval()
    with torch.no_grad():
        model.up.weight[0, 0] = float("inf")
        with pytest.raises(Exception, match="up.*NaN/Inf"):
            torch.compile(model, backend="lite")(torch.randn(2, 64))


def test_pass_failure_falls_back_to_inductor(monkeypatch, caplog):
    import torchlite.backend as backend

    def broken(gm, recipe, calib=None):
        raise RuntimeError("simulated pass bug")

    monkeypatch.setattr(backend, "apply_recipe", broken)
    model, x = Block().eval(), torch.randn(2, 64)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="torchlite"):
        out = torch.compile(model, backend="lite")(x)
    torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)
    assert "simulated pass bug" in caplog.text and "plain Inductor" in caplog.text


def test_training_keeps_trainable_weights_and_quantizes_frozen_ones(caplog):
    model, x = Block(), torch.randn(4, 64)
    with caplog.at_level(logging.WARNING, logger="torchlite"):
        torch.compile(model, backend="lite")(x).sum().backward()
    assert model.up.weight.grad is not None and "require grad" in caplog.text

    torch._dynamo.reset()
    model.zero_grad(set_to_none=True)
    model.requires_grad_(False)
    model.down.bias.requires_grad_(True)
    xg = x.clone().requires_grad_(True)
    compiled = torch.compile(model, backend="lite")
    compiled(xg).square().sum().backward()
    reference = torchlite.compress(model, "int8")
    reference.down.bias.requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    reference(x2).square().sum().backward()
    torch.testing.assert_close(xg.grad, x2.grad, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(model.down.bias.grad, reference.down.bias.grad, rtol=1e-3, atol=1e-3)


def test_kv_cache_decode_keeps_in_place_cache_updates():
    """HF decoding with a StaticCache mutates graph inputs in place; the rewrite must keep those ops."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=100, tie_word_embeddings=True,
    )
    model = transformers.LlamaForCausalLM(config).eval().requires_grad_(False)
    oracle = torchlite.compress(model, "int8")
    compiled = torch.compile(model, backend="lite")
    caches = [transformers.StaticCache(config=config, max_cache_len=8) for _ in range(2)]
    with torch.no_grad():
        for pos, token in enumerate([5, 7, 9]):
            step = dict(input_ids=torch.tensor([[token]]), cache_position=torch.tensor([pos]))
            out = compiled(past_key_values=caches[0], **step).logits
            ref = oracle(past_key_values=caches[1], **step).logits
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_factor_with_calibration_matches_compress():
    model, x = Block().eval(), torch.randn(2, 5, 64)
    calib = [torch.randn(2, 5, 64) for _ in range(3)]
    recipe = {"factor": {"budget": 0.7, "method": "whiten"}, "quantize": {"bits": 8}}
    reference = torchlite.compress(model, recipe, calib=calib)
    with torch.no_grad():
        compiled = torch.compile(model, backend="lite", options={"recipe": recipe, "calib": calib})
        torch.testing.assert_close(compiled(x), reference(x), rtol=1e-4, atol=1e-4)
        by_name = torch.compile(model, backend="lite", options={"recipe": recipe, "calib": [{"x": t} for t in calib]})
        torch.testing.assert_close(by_name(x), reference(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "calib, match",
    [
        ([torch.randn(2, 7, 64)], "compiled for \\(2, 5, 64\\)"),
        ([{"y": torch.randn(2, 5, 64)}], "lacks input\\(s\\) \\['x'\\]"),
        ([], "empty"),
    ],
)
def test_bad_calibration_is_a_clear_error(calib, match):
    model, x = Block().eval(), torch.randn(2, 5, 64)
    options = {"recipe": {"factor": {"ratio": 0.5, "method": "whiten"}}, "calib": calib}
    with torch.no_grad(), pytest.raises(Exception, match=match):
        torch.compile(model, backend="lite", options=options)(x)


def test_two_instances_of_one_class_keep_their_own_weights():
    """Dynamo reuses a graph across instances of a module class (it guards on weight shapes); the
    weights lifted into the compiled graph must still be each instance's own."""
    a, b = Block().eval(), Block().eval()
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        ca, cb = torch.compile(a, backend="lite"), torch.compile(b, backend="lite")
        for _ in range(2):
            torch.testing.assert_close(ca(x), a(x), rtol=0.05, atol=0.05)
            torch.testing.assert_close(cb(x), b(x), rtol=0.05, atol=0.05)


def test_backend_prunes_heads(llama_graph):
    model, gm, ids = llama_graph
    cfg = {"structure": "head", "sparsity": 1 / 3}
    new, _ = torchlite.passes.prune(gm, Prune(**cfg))
    compiled = torch.compile(model, backend="lite", options={"recipe": {"prune": cfg}})
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids, use_cache=False).logits, new(ids), atol=1e-4, rtol=1e-4)
