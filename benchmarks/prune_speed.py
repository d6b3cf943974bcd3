"""Speed of structured pruning on a model whose batch-1 decode is bound by its weight bytes.

The 1.1 B Llama of model_decode.py with random weights (speed depends on shapes only; quality is
prune_quality.py's job, on SmolLM2). Each pruned model is measured in a pair with the dense fp32
model: both compiled (backend 'lite', no recipe), then --rounds rounds of common.measure_interleaved
(decode: batch-1 greedy steps with a static KV cache, the two models taking turns of 8 positions;
prefill: one 512-token forward each, in alternating order); the speedups are medians of the paired
ratios. One pair at a time keeps two 1.1 B models in memory, not seven. 2:4 is measured by
nm_decode.py (decode-shaped layers) and prune_quality.py (SmolLM2).
Target (issue 4): (decode speedup - 1) >= 0.8 * (bytes ratio - 1) and
(prefill speedup - 1) >= 0.8 * (linear FLOPs ratio - 1).
"""
from __future__ import annotations

import argparse
import gc
import sys
import warnings

import torch

import torchlite
from common import compile_lite, header, markdown, measure_interleaved, write_section
from models import kv_heads, linear_macs, llama_1b
from torchlite import Prune, Recipe
from torchlite.eval.lm import weight_bytes

warnings.filterwarnings("ignore")
STRUCTURED = (0.1, 0.2, 0.3)


def variants():
    """(label, recipe): importance by weight magnitude (random weights: speed only)."""
    for s in STRUCTURED:
        yield f"MLP neurons {s:.0%}", Recipe(prune=Prune(structure="neuron", sparsity=s, importance="l2", round_to=64))
    for s in STRUCTURED:
        yield f"heads (KV groups) {s:.0%}", Recipe(prune=Prune(structure="head", sparsity=s, importance="l2", scope="global"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.automatic_dynamic_shapes = False  # each model gets its own static-shape graph
    model = llama_1b()
    torch.manual_seed(0)
    calib = [{"input_ids": torch.randint(1, 32000, (1, 64)), "use_cache": False}]
    prefill_ids, prompt = torch.randint(1, 32000, (1, 512)), list(range(1, 9))
    rows = []
    for label, recipe in variants():
        pruned = torchlite.compress(model, recipe, calib=calib)
        torch._dynamo.reset()
        pair = {name: (compile_lite(m), m.config, kv_heads(m)) for name, m in (("fp32", model), ("pruned", pruned))}
        t = measure_interleaved(pair, prompt, args.new_tokens, args.rounds, prefill_ids)
        decode, prefill = t.decode_speedup("pruned", "fp32"), t.prefill_speedup("pruned", "fp32")
        bytes_ratio, flops_ratio = weight_bytes(model) / weight_bytes(pruned), linear_macs(model) / linear_macs(pruned)
        met = "yes" if decode - 1 >= 0.8 * (bytes_ratio - 1) and prefill - 1 >= 0.8 * (flops_ratio - 1) else "no"
        rows.append([
            label, f"{weight_bytes(pruned) / 1e6:.0f}", f"{bytes_ratio:.3f}x", f"{flops_ratio:.3f}x",
            f"{t.decode_tps('fp32'):.2f} → {t.decode_tps('pruned'):.2f}", f"{decode:.3f}x",
            f"{t.prefill_tps('fp32', 512):.0f} → {t.prefill_tps('pruned', 512):.0f}", f"{prefill:.3f}x", met,
        ])
        print(rows[-1], flush=True)
        del pruned, pair
        torch._dynamo.reset()  # the compiled graphs hold the pruned model: free it before the next one
        gc.collect()
    body = [header("Structured pruning speed on a weight-bound model (Llama 1.1 B shapes, random weights)"), (
        "The 1.1 B Llama of model_decode.py (22 layers, hidden 2048, MLP 5632, 32 query / 4 KV heads, untied "
        f"lm_head) with random weights, pruned by `torchlite.compress` (weight-magnitude importance; MLP widths kept a "
        "multiple of 64 with `round_to=64`: 5632 → 5056 / 4480 / 3968). Each row is one "
        "pair measured in the same rounds: the dense fp32 model and the pruned one, both compiled (backend 'lite', no "
        f"recipe), {args.rounds} rounds of `common.measure_interleaved`: {args.new_tokens} greedy decode tokens (batch 1, "
        "static KV cache) with the two models taking turns of 8 positions (the first position of a turn untimed), then "
        "one 512-token prefill each. Decode speedup: median over all positions of the per-position step-time ratio; "
        "prefill speedup: median of the per-round ratios (tok/s columns: median step, median prefill). Heads: whole KV groups (a KV head and its 8 query heads) ranked "
        "across layers. Bytes: every stored weight (the 262 MB embedding table included, though a decode step reads "
        "one row of it); FLOPs: linear layers, lm_head included. Target (issue 4): (decode speedup "
        "− 1) ≥ 0.8 × (bytes ratio − 1) and (prefill speedup − 1) ≥ 0.8 × (FLOPs ratio − 1).\n"
    ), markdown(["pruned", "weight MB", "bytes ratio", "FLOPs ratio", "decode tok/s (fp32 → pruned)", "decode speedup",
                 "prefill tok/s (fp32 → pruned)", "prefill speedup", "target met"], rows)]
    write_section("prune_speed", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
