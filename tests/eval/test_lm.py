"""Greedy decoding, alone and in lockstep, and the per-step speedup."""
import pytest
import torch
import transformers

from torchlite.eval.lm import Decode, greedy_decode, lockstep_decode, step_speedup


def tiny_llama(seed):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


def test_lockstep_decodes_each_model_as_alone():
    models = {name: tiny_llama(seed) for name, seed in (("a", 0), ("b", 1), ("c", 2))}
    prompt = [3, 1, 4, 1, 5]
    together = lockstep_decode({n: (m, m.config, None) for n, m in models.items()}, prompt, 6, burst=2, max_cache_len=16)
    for name, m in models.items():
        alone = greedy_decode(m, m.config, prompt, 6, max_cache_len=16)
        assert together[name].token_ids == alone.token_ids
        assert len(alone.step_seconds) == 5  # positions 5..9
        assert len(together[name].step_seconds) == 3  # turns start at 0, 2, .., 8: positions 6 and 8 run cold
    assert together["a"].token_ids != together["b"].token_ids  # the models really differ


def test_lockstep_rejects_a_too_long_run():
    m = tiny_llama(0)
    with pytest.raises(ValueError, match="max_cache_len"):
        lockstep_decode({"a": (m, m.config, None)}, [1, 2, 3], 20, max_cache_len=16)
    with pytest.raises(ValueError, match="burst"):
        lockstep_decode({"a": (m, m.config, None)}, [1, 2, 3], 4, burst=1)


def test_step_speedup_is_the_median_of_per_step_ratios():
    base = Decode([], [2.0, 2.0, 4.0, 3.0])
    other = Decode([], [1.0, 4.0, 2.0, 1.0])  # ratios 2, 0.5, 2, 3
    assert step_speedup(base, other) == 2.0
    with pytest.raises(ValueError, match="same positions"):
        step_speedup(base, Decode([], [1.0]))
