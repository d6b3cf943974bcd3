"""Whole-model batch-1 decode: tokens/s, weight bytes and cold compile time, in one process.

Models: SmolLM2-135M-Instruct (real weights, if installed) and a ~1.1 B-parameter Llama with random
weights (speed only: its bytes are what a decode step reads). Paths: plain Inductor fp32,
`quantize_dynamic` int8 (eager, the fbgemm peer), lite int8 and lite int4 (g128, symmetric).
Compile time is measured cold: Inductor's caches point at a fresh temporary folder.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="torchlite-bench-")  # cold compiles

import torch  # noqa: E402

import torchlite  # noqa: E402
from common import compile_lite, header, markdown, quantize_dynamic_bytes, write_section  # noqa: E402
from models import PROMPT, llama_1b  # noqa: E402
from torchlite.eval.lm import greedy_decode, weight_bytes  # noqa: E402

warnings.filterwarnings("ignore")


def smollm2():
    from torchlite.eval.models import load_smollm2, smollm2_dir

    if smollm2_dir() is None:
        return None
    model, tok = load_smollm2()
    return model.requires_grad_(False), tok(PROMPT).input_ids


def paths(model):
    yield "fp32 Inductor", lambda: torch.compile(model), weight_bytes(model)
    yield "lite fp32 (no recipe)", lambda: compile_lite(model), weight_bytes(model)
    qdyn = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    yield "quantize_dynamic int8 (eager)", lambda: qdyn, quantize_dynamic_bytes(qdyn)
    for label, recipe in [("lite int8", "int8"), ("lite int4 g128", "int4")]:
        small = torchlite.compress(model, recipe)
        nbytes = weight_bytes(small)
        del small
        yield label, (lambda r=recipe: torch.compile(model, backend="lite", options={"recipe": r})), nbytes


def run_model(name, model, prompt, new_tokens):
    rows, base_tps, base_compile = [], None, None
    for label, make, nbytes in paths(model):
        torch._dynamo.reset()
        fn = make()
        start = time.perf_counter()
        greedy_decode(fn, model.config, prompt, 2, desc=f"{label} warm-up")
        compile_s = time.perf_counter() - start
        run = greedy_decode(fn, model.config, prompt, new_tokens, desc=label)
        tps = run.tokens_per_second
        base_tps = base_tps or tps
        compiled = label.startswith(("fp32 Inductor", "lite"))
        if label == "fp32 Inductor":
            base_compile = compile_s
        rows.append([
            label, f"{nbytes / 1e6:.0f}", f"{tps:.1f}", f"{tps / base_tps:.2f}x",
            f"{compile_s:.0f}" if compiled else "-", f"{compile_s / base_compile:.2f}x" if compiled else "-",
        ])
        print(f"[{name}] {label}: {tps:.1f} tok/s, compile {compile_s:.0f}s", flush=True)
        del fn
    return f"### {name}\n\n" + markdown(
        ["path", "weight MB", "decode tok/s", "vs fp32 Inductor", "compile s (cold)", "compile vs Inductor"], rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--skip-1b", action="store_true")
    args = parser.parse_args()
    body = [header("Whole-model decode"), (
        f"Greedy batch-1 decode of {args.new_tokens} tokens with a static KV cache (one compiled graph reused "
        "every step); tok/s from the median step time. Compile s = wall time of the first two decode steps "
        "(Dynamo + AOT + Inductor + C++ build, cold caches). Weight MB = bytes of all distinct weights the "
        "path holds (embeddings stay fp32 in every path).\n"
    )]
    real = smollm2()
    if real is not None:
        body.append(run_model("SmolLM2-135M-Instruct (real weights)", real[0], real[1], args.new_tokens))
        del real
    if not args.skip_1b:
        model, prompt = llama_1b(), list(range(1, 9))
        body.append(run_model("Llama 1.1 B (random weights)", model, prompt, args.new_tokens))
    write_section("model_decode", "\n".join(body))


if __name__ == "__main__":
    main()
