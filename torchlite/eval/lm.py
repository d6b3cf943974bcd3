"""Language-model measurements: greedy decoding speed, perplexity, KL divergence, weight bytes."""
from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

T = TypeVar("T")


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of every distinct parameter and buffer (tied weights counted once)."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.shape)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


@dataclass
class Decode:
    token_ids: list[int]
    step_seconds: list[float]  # one per generated token, after the first (compile) step

    @property
    def tokens_per_second(self) -> float:
        return 1.0 / statistics.median(self.step_seconds)


class GreedyStepper:
    """One model's greedy decoding, one position per `step()`, with a static KV cache of
    `max_cache_len` (every step has the same shapes and reuses one compiled graph). The prompt is
    fed token by token through the same graph."""

    def __init__(self, forward, config, prompt_ids, max_cache_len, dtype, kv_heads):
        from transformers import StaticCache

        self.forward, self.tokens, self.prompt_len, self.pos = forward, list(prompt_ids), len(prompt_ids), 0
        self.seconds, self.cold = [], set()  # cold: positions run right after another model's
        self.cache = StaticCache(config=config, max_cache_len=max_cache_len)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        # initialized up front, so the first step compiles the same graph as every later one
        self.cache.early_initialization(1, kv_heads or config.num_key_value_heads, head_dim, dtype, torch.device("cpu"))

    def step(self) -> None:
        pos = self.pos
        start = time.perf_counter()
        with torch.compiler.set_stance("default", skip_guard_eval_unsafe=pos >= 2):
            logits = self.forward(
                input_ids=torch.tensor([[self.tokens[pos]]]), past_key_values=self.cache, cache_position=torch.tensor([pos])
            ).logits
        nxt = int(logits[0, -1].argmax())
        self.seconds.append(time.perf_counter() - start)
        if pos >= self.prompt_len - 1:
            self.tokens.append(nxt)
        self.pos += 1

    def result(self) -> Decode:
        timed = range(self.prompt_len, len(self.seconds))
        return Decode(self.tokens, [self.seconds[i] for i in timed if i not in self.cold])


def _check_length(prompt_ids, new_tokens, max_cache_len):
    if len(prompt_ids) + new_tokens > max_cache_len:
        raise ValueError(f"prompt + new tokens ({len(prompt_ids) + new_tokens}) exceed max_cache_len={max_cache_len}")
    return len(prompt_ids) + new_tokens - 1


@torch.no_grad()
def greedy_decode(
    forward, config, prompt_ids: list[int], new_tokens: int, max_cache_len: int = 256, desc: str = "decode",
    dtype: torch.dtype = torch.float32, kv_heads: list[int] | None = None,
) -> Decode:
    """Greedy decoding one token per call through `forward` (a compiled or eager HF causal LM) with
    a static KV cache of `max_cache_len`, so every step has the same shapes and reuses one compiled
    graph. The prompt is fed token by token through the same graph. `kv_heads`: the KV heads of each
    layer when they differ from the config's (after head pruning). Steps after the first two skip
    Dynamo's guard evaluation (`skip_guard_eval_unsafe`): nothing a guard checks changes between
    steps, and on a small model evaluating them is a visible part of a step."""
    steps = _check_length(prompt_ids, new_tokens, max_cache_len)
    stepper = GreedyStepper(forward, config, prompt_ids, max_cache_len, dtype, kv_heads)
    for _ in tqdm(range(steps), desc=desc, leave=False):
        stepper.step()
    return stepper.result()


def rotations(items: Sequence[T], rounds: int) -> Iterator[list[T]]:
    """The order of `items` in each of `rounds` rounds: every item once, round r (from 0) starting at
    item r (mod the count) and going on cyclically (round 1 of a, b, c: b, c, a), so that no item
    always runs first while the machine's speed drifts."""
    items = list(items)
    for r in range(rounds):
        shift = r % len(items) if items else 0
        yield items[shift:] + items[:shift]


@torch.no_grad()
def lockstep_decode(
    models: dict[str, tuple], prompt_ids: list[int], new_tokens: int, burst: int = 8, max_cache_len: int = 256,
    desc: str = "lockstep decode", dtype: torch.dtype = torch.float32,
) -> dict[str, Decode]:
    """Greedy decoding of several models side by side, as `greedy_decode` does one: `models` maps a
    name to `(forward, config, kv_heads or None)`. The models take turns, `burst` positions each, in
    an order that rotates from turn to turn, so a drift of the machine's speed (its memory bandwidth
    swings by tens of percent here) hits the same positions of every model alike: compare them with
    `step_speedup`, not with tokens/s from separate runs. The first position of each turn runs with
    caches left cold by the previous model (a cost that decoding one model does not pay) and is not
    timed, for any model."""
    steps = _check_length(prompt_ids, new_tokens, max_cache_len)
    if burst < 2:
        raise ValueError(f"burst={burst}: a turn needs at least 2 positions (its first one is not timed)")
    steppers = [GreedyStepper(f, config, prompt_ids, max_cache_len, dtype, kv) for f, config, kv in models.values()]
    turns = list(range(0, steps, burst))
    for start, order in zip(tqdm(turns, desc=desc, leave=False), rotations(steppers, len(turns))):
        for stepper in order:
            if len(steppers) > 1:
                stepper.cold.add(start)
            for _ in range(start, min(start + burst, steps)):
                stepper.step()
    return {name: s.result() for name, s in zip(models, steppers)}


def step_speedup(base: Decode, other: Decode) -> float:
    """Median over positions of base's step time / other's step time (the runs of `lockstep_decode`)."""
    if len(base.step_seconds) != len(other.step_seconds):
        raise ValueError("step_speedup compares runs of the same positions (one lockstep_decode call)")
    return statistics.median(b / o for b, o in zip(base.step_seconds, other.step_seconds))


@torch.no_grad()
def perplexity(forward, ids: torch.Tensor, window: int = 512, desc: str = "perplexity") -> float:
    """exp(mean next-token NLL) over non-overlapping windows of `window` tokens of the 1-D `ids`."""
    n = (ids.numel() // window) * window
    if n == 0:
        raise ValueError(f"need at least {window} tokens for perplexity, got {ids.numel()}")
    nll, count = 0.0, 0
    for start in tqdm(range(0, n, window), desc=desc, leave=False):
        chunk = ids[start : start + window].unsqueeze(0)
        logits = forward(input_ids=chunk, use_cache=False).logits.float()
        nll += F.cross_entropy(logits[0, :-1], chunk[0, 1:], reduction="sum").item()
        count += window - 1
    return float(torch.exp(torch.tensor(nll / count)))


@torch.no_grad()
def kl_divergence(forward, reference, ids: torch.Tensor) -> float:
    """Mean KL(reference || forward) of next-token distributions over the 1-D `ids`."""
    chunk = ids.unsqueeze(0)
    p = F.log_softmax(reference(input_ids=chunk, use_cache=False).logits.float(), -1)
    q = F.log_softmax(forward(input_ids=chunk, use_cache=False).logits.float(), -1)
    return float(F.kl_div(q, p, log_target=True, reduction="none").sum(-1).mean())
