"""Speed of structured and 2:4 pruning on a model whose batch-1 decode is bound by its weight bytes.

The 1.1 B Llama of model_decode.py with random weights (speed depends on shapes only; quality is
prune_quality.py's job, on SmolLM2). Each pruned model is measured in a pair with its dense
baseline (fp32, or int8 for 2:4 with int8 values): both compiled (backend 'lite', no recipe), then
--rounds rounds visit the two in turn (decode: batch-1 greedy steps with a static KV cache; prefill:
one 512-token forward); medians over rounds. One pair at a time keeps two 1.1 B models in memory,
not nine. Target (issue 4), structured rows: (decode speedup - 1) >= 0.8 * (bytes ratio - 1) and
(prefill speedup - 1) >= 0.8 * (linear FLOPs ratio - 1).
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import warnings

import torch

import torchlite
from common import compile_lite, header, llama_1b, markdown, write_section
from prune_quality import kv_heads, linear_macs
from torchlite import Prune, Quantize, Recipe
from torchlite.eval.lm import greedy_decode, weight_bytes

warnings.filterwarnings("ignore")
STRUCTURED = (0.1, 0.2, 0.3)


def variants():
    """(label, baseline, recipe): importance by weight magnitude (random weights: speed only)."""
    for s in STRUCTURED:
        yield f"MLP neurons {s:.0%}", "fp32", Recipe(prune=Prune(structure="neuron", sparsity=s, importance="l2", round_to=64))
    for s in STRUCTURED:
        yield f"heads (KV groups) {s:.0%}", "fp32", Recipe(prune=Prune(structure="head", sparsity=s, importance="l2", scope="global"))
    yield "2:4, fp32 values", "fp32", Recipe(prune=Prune(structure="n:m"))
    yield "2:4, int8 values", "int8", Recipe(prune=Prune(structure="n:m"), quantize=Quantize(bits=8))


def measure(models: dict, prompt, prefill_ids, rounds: int, new_tokens: int) -> dict:
    """Median decode tok/s and prefill tok/s of each model, the models visited in turn each round."""
    compiled = {}
    with torch.no_grad():
        for name, m in models.items():
            compiled[name] = compile_lite(m)
            greedy_decode(compiled[name], m.config, prompt, 2, desc=f"compile {name}", kv_heads=kv_heads(m))
            compiled[name](input_ids=prefill_ids, use_cache=False)
        decode, prefill = {n: [] for n in models}, {n: [] for n in models}
        for _ in range(rounds):
            for name, m in models.items():
                step = greedy_decode(compiled[name], m.config, prompt, new_tokens, desc=name, kv_heads=kv_heads(m))
                decode[name].append(step.tokens_per_second)
                start = time.perf_counter()
                compiled[name](input_ids=prefill_ids, use_cache=False)
                prefill[name].append(512 / (time.perf_counter() - start))
    return {n: (statistics.median(decode[n]), statistics.median(prefill[n])) for n in models}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.automatic_dynamic_shapes = False  # each model gets its own static-shape graph
    model = llama_1b()
    torch.manual_seed(0)
    calib = [{"input_ids": torch.randint(1, 32000, (1, 64)), "use_cache": False}]
    prefill_ids, prompt = torch.randint(1, 32000, (1, 512)), list(range(1, 9))
    baselines = {"fp32": lambda: model, "int8": lambda: torchlite.compress(model, "int8")}
    rows = []
    for label, base_name, recipe in variants():
        pruned = torchlite.compress(model, recipe, calib=calib)
        base = baselines[base_name]()
        torch._dynamo.reset()
        speed = measure({base_name: base, label: pruned}, prompt, prefill_ids, args.rounds, args.new_tokens)
        (d0, p0), (d, p) = speed[base_name], speed[label]
        bytes_ratio, flops_ratio = weight_bytes(base) / weight_bytes(pruned), linear_macs(base) / linear_macs(pruned)
        met = "-"
        if "2:4" not in label:
            met = "yes" if d / d0 - 1 >= 0.8 * (bytes_ratio - 1) and p / p0 - 1 >= 0.8 * (flops_ratio - 1) else "no"
        rows.append([
            label, base_name, f"{weight_bytes(pruned) / 1e6:.0f}", f"{bytes_ratio:.3f}x", f"{flops_ratio:.3f}x",
            f"{d0:.2f} → {d:.2f}", f"{d / d0:.3f}x", f"{p0:.0f} → {p:.0f}", f"{p / p0:.3f}x", met,
        ])
        print(rows[-1], flush=True)
        del pruned, base
        gc.collect()
    body = [header("Pruning speed on a weight-bound model (Llama 1.1 B shapes, random weights)"), (
        "The 1.1 B Llama of model_decode.py (22 layers, hidden 2048, MLP 5632, 32 query / 4 KV heads, untied "
        f"lm_head) with random weights, pruned by `torchlite.compress` (weight-magnitude importance; MLP widths kept a "
        "multiple of 64 with `round_to=64`: 5632 → 5056 / 4480 / 3968). Each row is one "
        f"pair measured in the same rounds: its dense baseline and the pruned model, both compiled (backend 'lite', no "
        f"recipe), {args.rounds} rounds of {args.new_tokens} greedy decode steps (batch 1, static KV cache; tok/s from "
        "the median step) and one 512-token prefill; medians over rounds. Heads: whole KV groups (a KV head and its 8 "
        "query heads) ranked across layers. Bytes: every stored weight (the 262 MB embedding table included, though "
        "a decode step reads one row of it); FLOPs: linear layers, lm_head included. Target (issue 4), structured "
        "rows: (decode speedup − 1) ≥ 0.8 × (bytes ratio − 1) and (prefill speedup − 1) ≥ 0.8 × (FLOPs ratio − 1).\n"
    ), markdown(["pruned", "baseline", "weight MB", "bytes ratio", "FLOPs ratio", "decode tok/s", "decode speedup",
                 "prefill tok/s", "prefill speedup", "target met"], rows)]
    write_section("prune_speed", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
