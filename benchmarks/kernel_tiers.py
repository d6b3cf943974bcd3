"""The hand-written decode kernels on every kernel tier this CPU runs, side by side in one process.

Each tier (torchlite/inductor/tiers.py) is forced in turn while its copy of the compressed stack
compiles; a CPU with AVX-512 also runs the AVX2 kernels, so one machine measures what an AVX2-only
CPU's kernels do per byte (at this machine's bandwidth). The portable tier (forced only) is left out. Rows: each tier x recipe, the
generated reduction (`none`), and `quantize_dynamic` (fbgemm, AVX2 and AVX-512 kernels) as the peer.
Rounds, roofline and distinct layer copies as in linear_decode.py.
"""
from __future__ import annotations

import argparse
import warnings

import torch

import torchlite
from common import compile_lite, header, markdown, measure, write_section
from models import layer_stacks, replicated
from torchlite.eval.lm import weight_bytes
from torchlite.inductor import tiers

warnings.filterwarnings("ignore")

RECIPES = [
    ("int8", "int8"),
    ("int4 g128", "int4"),
    ("int4 g32", {"quantize": {"bits": 4, "group_size": 32}}),
    ("W8A8", "w8a8"),
]


def entries(model, m: int, k: int, compressed: dict) -> list:
    """(name, compiled fn, x, weight bytes, layers) per tier x recipe, `none` and quantize_dynamic."""
    fp32 = weight_bytes(model)
    x = torch.randn(m, k)
    out = []
    for tier in [*(t for t in tiers.runnable() if t.requires), None]:  # portable: forced only, far slower
        for label, small in compressed.items():
            if tier is None and label != "int8":
                continue
            stack, nbytes = replicated(small, fp32, weight_bytes(small))
            fn = compile_lite(stack)
            with tiers.forced(tier.name if tier else "none"):
                fn(x)  # compiles for this tier
            out.append((f"{tier.name if tier else 'none (generated)'} {label}", fn, x, nbytes, len(stack.layers)))
            print(f"compiled {out[-1][0]}", flush=True)
    qdyn = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    qdyn, nbytes = replicated(qdyn, fp32, sum(layer.weight().numel() for layer in qdyn.layers))
    out.append(("quantize_dynamic int8 (fbgemm)", qdyn, x, nbytes, len(qdyn.layers)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fp32-bytes", type=float, default=0.35, help="GiB of fp32 weights per stack")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8], help="activation rows (batch) per call")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 512
    torch._dynamo.config.automatic_dynamic_shapes = False
    n, k, count, model = next(layer_stacks(args.fp32_bytes))
    compressed = {label: torchlite.compress(model, recipe) for label, recipe in RECIPES}
    sections = [header("Kernel tiers: decode-shaped layers on every instruction set"), (
        f"{count} distinct Linear({k}, {n}) layers; each path repeats them as distinct copies until it reads as "
        f"many bytes per call as the fp32 stack ({args.fp32_bytes:g} GiB). Every path compiled first (its tier "
        f"forced with `TORCHLITE_KERNEL_TIER`'s `tiers.forced`), then {args.rounds} rounds of the read bandwidth and "
        f"every path in rotating order (median of {args.iters} calls). % roofline: median over the rounds of the "
        "weight bytes read per second over that round's read bandwidth; speed: median per-round ratio to the "
        "first row.\n"
    )]
    for m in args.rows:
        with torch.no_grad():
            paths = entries(model, m, k, compressed)
            results, bandwidth = measure(paths, args.rounds, args.iters)
        rows = []
        for name, _, _, nbytes, layers in paths:
            t, share, speed = results[name]
            rows.append([name, f"{t * 1e3:.3f}", f"{nbytes / layers / t / 1e9:.1f}", f"{100 * share:.0f}%", f"{speed:.2f}x"])
            print(rows[-1], flush=True)
        del paths
        torch._dynamo.reset()
        sections.append(
            f"### W=[{n},{k}], x=[{m},{k}] (read bandwidth, median of the rounds: {bandwidth:.0f} GB/s)\n\n"
            + markdown(["tier and recipe", "ms/layer", "GB/s", "% roofline", "speed vs first row"], rows)
        )
    write_section("kernel_tiers", "\n".join(sections))


if __name__ == "__main__":
    main()
