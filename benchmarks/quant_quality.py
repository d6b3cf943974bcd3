"""Quantization of SmolLM2-135M: round-to-nearest, GPTQ, AWQ, W8A8, mixed precision, log and vector
quantization, in one run.

Perplexity on WikiText-2 *test* (first --tokens tokens, 512-token windows); calibration on WikiText-2
*valid* only (--calib sequences of 512 tokens). Decode: batch-1 greedy with a static KV cache under
torch.compile (backend 'lite' without a recipe), median step.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch

import torchlite
from common import DOCS, compile_lite, header, markdown, quantize_dynamic_bytes, write_section
from models import smollm2_and_wikitext
from torchlite import Quantize, Recipe
from torchlite.eval.lm import greedy_decode, perplexity, weight_bytes

warnings.filterwarnings("ignore")
PROMPT = "The history of the city of Paris"
DOCS_DIR = DOCS.parent

VARIANTS = [
    ("fp32", None),
    ("int8 RTN", Quantize(bits=8)),
    ("int4 g128 RTN", Quantize(bits=4, group_size=128)),
    ("int4 g128 GPTQ", Quantize(bits=4, group_size=128, method="gptq")),
    ("int4 g128 GPTQ act-order", Quantize(bits=4, group_size=128, method="gptq", act_order=True)),
    ("int4 g128 AWQ", Quantize(bits=4, group_size=128, method="awq")),
    ("W8A8 dynamic", Quantize(bits=8, activations="dynamic")),
    ("W8A8 static", Quantize(bits=8, activations="static")),
    ("W8A8 dynamic SmoothQuant", Quantize(bits=8, activations="dynamic", method="smoothquant")),
    ("int4 g128 RTN, lm_head int8", Quantize(bits=4, group_size=128, overrides={"lm_head": Quantize(bits=8)})),
    ("log 4-bit", Quantize(scheme="log", bits=4)),
    ("log 4-bit g128", Quantize(scheme="log", bits=4, group_size=128)),
    ("log 4-bit g128 GPTQ", Quantize(scheme="log", bits=4, group_size=128, method="gptq")),
    ("VQ ~2 bit/w (d=4, 256 centroids)", Quantize(scheme="vector", vector_dim=4, codebook_size=256)),
    ("VQ ~2 bit/w (d=4, 256 centroids) GPTQ", Quantize(scheme="vector", vector_dim=4, codebook_size=256, method="gptq")),
    ("VQ ~3 bit/w (d=3, 256 centroids)", Quantize(scheme="vector", vector_dim=3, codebook_size=256)),
    ("VQ ~3 bit/w (d=3, 256 centroids) GPTQ", Quantize(scheme="vector", vector_dim=3, codebook_size=256, method="gptq")),
]
CODEBOOK_ROWS = (
    "fp32", "int4 g128 RTN", "log 4-bit", "log 4-bit g128", "log 4-bit g128 GPTQ", "VQ ~2 bit/w (d=4, 256 centroids)",
    "VQ ~2 bit/w (d=4, 256 centroids) GPTQ", "VQ ~3 bit/w (d=3, 256 centroids)", "VQ ~3 bit/w (d=3, 256 centroids) GPTQ",
)
AUTO_SCHEMES = {"int4 g128": Quantize(bits=4, group_size=128), "int8": Quantize(bits=8)}


def linear_bits_per_weight(model: torch.nn.Module) -> float:
    """Stored bits per weight of the linear layers (codes, scales, zero points, input scales, codebooks)."""
    bits = params = 0
    for m in model.modules():
        if isinstance(m, torchlite.QuantizedLinear):
            stored = [t for name, t in m.named_buffers() if name not in ("bias", "x_scale")]  # codes, scales, codebooks...
            bits += 8 * sum(t.numel() * t.element_size() for t in stored)
            params += m.in_features * m.out_features
        elif type(m) is torch.nn.Linear:
            bits += 8 * m.weight.numel() * m.weight.element_size()
            params += m.weight.numel()
    return bits / params


@torch.no_grad()
def decode_speed(model, prompt, new_tokens: int) -> float:
    torch._dynamo.reset()
    compiled = compile_lite(model)
    greedy_decode(compiled, model.config, prompt, 2, desc="compile")
    return greedy_decode(compiled, model.config, prompt, new_tokens).tokens_per_second


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=4096, help="WikiText-2 test tokens for perplexity")
    parser.add_argument("--calib", type=int, default=128, help="calibration sequences of 512 tokens (WikiText-2 valid)")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--auto-size", type=float, default=0.25, help="mixed-precision budget, x fp32 linear bytes (0: skip)")
    parser.add_argument("--codebooks-only", action="store_true",
                        help="only the fp32, int4 RTN, log and VQ rows, written to a section of their own")
    args = parser.parse_args()
    if args.codebooks_only:
        args.auto_size = 0
    torch.manual_seed(0)
    loaded = smollm2_and_wikitext(args.tokens, args.calib)
    if loaded is None:
        return 1
    model, tok, test_ids, calib = loaded
    prompt = tok(PROMPT).input_ids
    variants = [v for v in VARIANTS if v[0] in CODEBOOK_ROWS] if args.codebooks_only else list(VARIANTS)
    if args.auto_size:
        from torchlite.eval.sensitivity import sensitivity

        start = time.perf_counter()
        report = sensitivity(model, AUTO_SCHEMES, calib[:16], lambda m: perplexity(m, test_ids[:512], desc="eval"))
        report.plot(DOCS_DIR / "sensitivity.png")
        print(report)
        auto = report.mixed_precision(args.auto_size)
        print(f"sensitivity + pick: {time.perf_counter() - start:.0f} s; {len(auto.overrides)} layer(s) differ from the default")
        variants.append((f"auto mixed (int4 g128 / int8) at {args.auto_size} x fp32 linear bytes", auto))
    rows, base, qdyn_row = [], None, None
    if not args.codebooks_only:
        qdyn = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        qdyn_ppl = perplexity(qdyn, test_ids, desc="quantize_dynamic")
        qdyn_tps = greedy_decode(qdyn, model.config, prompt, args.new_tokens, desc="quantize_dynamic").tokens_per_second
        qdyn_row = ["quantize_dynamic int8 (eager, fbgemm; the peer)", "8 + scales", f"{quantize_dynamic_bytes(qdyn) / 1e6:.0f}",
                    f"{qdyn_ppl:.2f}", None, f"{qdyn_tps:.1f}", "-"]
        del qdyn
    for label, cfg in variants:
        start = time.perf_counter()
        small = model if cfg is None else torchlite.compress(model, Recipe(quantize=cfg), calib=calib if cfg.needs_calibration else None)
        seconds = time.perf_counter() - start
        ppl = perplexity(small, test_ids, desc=label)
        base = base or ppl
        tps = decode_speed(small, prompt, args.new_tokens)
        rows.append([
            label, f"{linear_bits_per_weight(small):.2f}", f"{weight_bytes(small) / 1e6:.0f}", f"{ppl:.2f}",
            f"{(ppl / base - 1) * 100:+.1f}", f"{tps:.1f}",
            f"{seconds:.0f}" if cfg is not None and (cfg.needs_calibration or cfg.scheme == "vector") else "-",
        ])
        print(rows[-1], flush=True)
        del small
        if label == "fp32" and qdyn_row:
            qdyn_row[4] = f"{(qdyn_ppl / base - 1) * 100:+.1f}"
            rows.append(qdyn_row)
    title = "Log and vector quantization" if args.codebooks_only else "Weight quantization: RTN, GPTQ, AWQ"
    body = [header(f"{title} (SmolLM2-135M)"), (
        f"SmolLM2-135M-Instruct, WikiText-2 test perplexity over the first {test_ids.numel() // 512 * 512} tokens "
        f"(512-token windows); GPTQ (for linear, log and vector codes) and AWQ calibrate on {args.calib} x 512 tokens of WikiText-2 valid. Bits/weight: "
        "stored bits of the linear layers per weight (codes, scales, zero points, AWQ input scales, VQ codebooks and row scales); weight MB: the "
        "whole model, with the 113 MB fp32 embedding. Decode: batch-1 greedy with a static KV cache, median of "
        f"{args.new_tokens} steps, under torch.compile (backend 'lite' without a recipe: Inductor + torchlite lowerings, float linears included). Calib s: compress time "
        "(activation statistics through the model, then the method; for VQ the k-means, then GPTQ's sweep if asked). The lm_head (tied to the embedding) is quantized "
        "as its own copy, as in every int8/int4 row. W8A8 static: one activation scale per layer from the "
        "calibration data. Auto mixed: per-layer int4 g128 or int8 from the sensitivity report (each layer "
        "quantized alone, perplexity on the first 512 test tokens, 16 calibration sequences), chosen greedily "
        "under the size budget; the per-layer plot is [sensitivity.png](sensitivity.png).\n"
    ), markdown(["model", "bits/weight", "weight MB", "perplexity", "Δ %", "decode tok/s", "calib s"], rows)]
    write_section("quant_quality_codebooks" if args.codebooks_only else "quant_quality", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
