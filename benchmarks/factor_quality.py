"""Low-rank factorization of SmolLM2-135M: perplexity, size and speed at 10/20/30 % fewer linear parameters.

Methods: plain SVD, activation-aware (ASVD) and whitened (SVD-LLM-style) factorization, each with the
global parameter budget split across layers by torchlite; the whitened model again with int8 weights.
Calibration: WikiText-2 *valid*; perplexity: WikiText-2 *test* (first --tokens tokens, 512-token
windows). Speed: the compressed model under torch.compile (backend 'lite' without a recipe: Inductor + torchlite lowerings, float linears included), batch 1:
decode = greedy with a static KV cache (median step), prefill = one 512-token forward (median).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch

import torchlite
from common import compile_lite, header, markdown, write_section
from models import PROMPT, smollm2_and_wikitext
from torchlite import Factor, Quantize, Recipe
from torchlite.eval.lm import greedy_decode, perplexity, weight_bytes

warnings.filterwarnings("ignore")


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in list(model.parameters()) + list(model.buffers())}.values())


@torch.no_grad()
def speed(model, prompt, new_tokens: int, prefill_ids: torch.Tensor) -> tuple[float, float]:
    torch._dynamo.reset()
    compiled = compile_lite(model)
    greedy_decode(compiled, model.config, prompt, 2, desc="compile")
    decode = greedy_decode(compiled, model.config, prompt, new_tokens).tokens_per_second
    times = []
    for _ in range(4):  # the first call compiles the prefill graph
        start = time.perf_counter()
        compiled(input_ids=prefill_ids, use_cache=False)
        times.append(time.perf_counter() - start)
    return decode, prefill_ids.numel() / statistics.median(times[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=4096, help="WikiText-2 test tokens for perplexity")
    parser.add_argument("--calib", type=int, default=16, help="calibration sequences of 512 tokens (WikiText-2 valid)")
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = smollm2_and_wikitext(args.tokens, args.calib)
    if loaded is None:
        return 1
    model, tok, test_ids, calib = loaded
    prompt, prefill_ids = tok(PROMPT).input_ids, test_ids[:512].unsqueeze(0)

    variants = [("fp32", None), ("int8 (no factoring)", Recipe(quantize=Quantize(bits=8)))]
    for fewer in (0.1, 0.2, 0.3):
        for method in ("svd", "asvd", "whiten"):
            variants.append((f"{method}, {fewer:.0%} fewer", Recipe(factor=Factor(budget=1 - fewer, method=method))))
        variants.append((
            f"whiten, {fewer:.0%} fewer, then int8",
            Recipe(factor=Factor(budget=1 - fewer, method="whiten"), quantize=Quantize(bits=8)),
        ))
    rows, base_ppl = [], None
    for label, recipe in variants:
        start = time.perf_counter()
        small = model if recipe is None else torchlite.compress(model, recipe, calib=calib)
        seconds = time.perf_counter() - start
        linear = small.torchlite_report[0].after.params if recipe and recipe.factor else None
        ppl = perplexity(small, test_ids, desc=label)
        base_ppl = base_ppl or ppl
        decode, prefill = speed(small, prompt, args.new_tokens, prefill_ids)
        rows.append([
            label, f"{params(small) / 1e6:.1f}", "-" if linear is None else f"{linear / 1e6:.1f}",
            f"{weight_bytes(small) / 1e6:.0f}", f"{ppl:.2f}", f"{(ppl / base_ppl - 1) * 100:+.1f}",
            f"{decode:.1f}", f"{prefill:.0f}", f"{seconds:.0f}" if recipe else "-",
        ])
        print(rows[-1], flush=True)
        del small
    body = [header("Low-rank factorization (SmolLM2-135M)"), (
        f"SmolLM2-135M-Instruct; WikiText-2 test perplexity over the first {test_ids.numel() // 512 * 512} tokens "
        f"(512-token windows); calibration: {args.calib} x 512 tokens of WikiText-2 valid. \"x % fewer\" is "
        "`Factor(budget=1 - x)`: the factorable linear layers (all but the lm_head, which is tied to the "
        "embedding) keep 1 - x of their parameters, split across layers by torchlite. Params M (stored elements: "
        "int8 codes count one each) and weight MB are the whole model's (the 28 M-parameter tied embedding "
        "included); linear M = parameters of the "
        "linear layers after factoring (106.2 M factorable + 28.3 M tied lm_head before). Decode: batch-1 greedy "
        f"with a static KV cache, median of {args.new_tokens} steps; prefill: one 512-token forward, median of 3; "
        "both under torch.compile (backend 'lite' without a recipe: Inductor + torchlite's lowerings, float linears included). Compress s: calibration + factorization.\n"
    ), markdown(
        ["model", "params M", "linear M", "weight MB", "perplexity", "Δ %", "decode tok/s", "prefill tok/s", "compress s"],
        rows,
    )]
    write_section("factor_quality", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
