"""Where a decode step goes, fp32 against factorizations, and what issue 5's decode target leaves the
low-rank pairs: SmolLM2-135M with whitened factorizations, or the 1.1 B Llama of model_decode.py with
random rank pairs (`--model llama-1b`, as in factor_speed.py).

Per model: the step time (unprofiled rounds, models in turn), the time inside the compiled C++ kernels
(torch.profiler with Inductor's kernel profiling) and the rest of the step (the graph's wrapper,
Dynamo, the Hugging Face forward around the graph, the step's argmax). The target, decode speedup
- 1 >= 0.8 x (bytes ratio - 1), allows a factored model at most (K + F) / (1 + 0.8 (rho - 1)) - F of
kernel time when its rest F stays fp32's; weight streaming alone would take K / rho (fp32's kernels
at fp32's rate). The difference is all that the model's low-rank pairs may cost beyond their bytes.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import warnings

import torch
import torch._inductor.config as inductor_config

from common import FRESH_COPY, compile_lite, header, markdown, write_section
from models import PROMPT, llama_1b, llama_rank_pairs, smollm2_and_wikitext, whitened_models
from torchlite import LowRankLinear
from torchlite.eval.lm import GreedyStepper, greedy_decode, rotations, weight_bytes

warnings.filterwarnings("ignore")
ABOUT_LLAMA = (
    "The 1.1 B Llama of model_decode.py (22 layers, hidden 2048, MLP 5632, untied lm_head) with random weights; each "
    "linear layer but the lm_head replaced by a random rank-r pair keeping 90 / 80 / 70 % of its parameters, r rounded "
    "down to a multiple of 16 (`models.llama_rank_pairs`). Speed depends on the shapes only.\n"
)


def profiled_steps(forward, model, prompt, steps: int) -> tuple[float, float, float]:
    """(median step ms, ms per step inside the compiled C++ kernels, ms per step in the graph's Python
    wrapper outside them) over `steps` decode steps under torch.profiler (Inductor's kernel profiling
    names one event per generated C++ function), after the prompt and two warm steps unprofiled."""
    stepper = GreedyStepper(forward, model.config, prompt, 256, torch.float32, None)
    with torch.no_grad():
        for _ in range(len(prompt) + 2):
            stepper.step()
        warm = len(stepper.seconds)
        with torch.profiler.profile() as prof:
            for _ in range(steps):
                stepper.step()
    events = prof.key_averages()
    kernels = sum(e.self_cpu_time_total for e in events if e.key.startswith("graph_") and "_cpp_" in e.key)
    wrapper = sum(e.self_cpu_time_total for e in events if e.key.startswith("## Call CompiledFxGraph"))
    return statistics.median(stepper.seconds[warm:]) * 1e3, kernels / steps / 1e3, wrapper / steps / 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--calib", type=int, default=8, help="calibration sequences of 512 tokens (WikiText-2 valid)")
    parser.add_argument("--model", choices=["smollm2", "llama-1b"], default="smollm2")
    args = parser.parse_args()
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.automatic_dynamic_shapes = False
    inductor_config.cpp.enable_kernel_profile = True  # a named profiler event per generated C++ function
    if args.model == "llama-1b":
        model = llama_1b()
        models = {"fp32": model} | {f"rank pairs, {f:.0%} fewer": llama_rank_pairs(model, f) for f in (0.1, 0.2, 0.3)}
        prompt, about = list(range(1, 9)), ABOUT_LLAMA
    else:
        loaded = smollm2_and_wikitext(512, args.calib)
        if loaded is None:
            return 1
        model, tok, _, calib = loaded
        models = whitened_models(model, calib)
        prompt = tok(PROMPT).input_ids
        about = f"Whitened factorization calibrated on {args.calib} x 512 tokens of WikiText-2 valid. {FRESH_COPY}\n"
    compiled = {name: compile_lite(m) for name, m in models.items()}
    steps = {name: [] for name in models}
    with torch.no_grad():
        for name, fn in compiled.items():
            greedy_decode(fn, models[name].config, prompt, 2, desc=f"compile {name}")
        for order in rotations(list(models), args.rounds):
            for name in order:
                run = greedy_decode(compiled[name], models[name].config, prompt, args.new_tokens, desc=name)
                steps[name].append(statistics.median(run.step_seconds) * 1e3)
        profiled = {name: [] for name in models}
        for order in rotations(list(models), args.rounds):
            for name in order:
                profiled[name].append(profiled_steps(compiled[name], models[name], prompt, 20))
    step, kernel, wrapper = ({name: statistics.median(t[i] for t in p) for name, p in profiled.items()} for i in range(3))
    rest_fp32 = step["fp32"] - kernel["fp32"]
    rows = []
    for name, m in models.items():
        rho = weight_bytes(models["fp32"]) / weight_bytes(m)
        speedup = statistics.median(b / s for b, s in zip(steps["fp32"], steps[name]))
        pairs = sum(isinstance(mod, LowRankLinear) for mod in m.modules())
        if name == "fp32":
            rows.append([name, "1.000x", f"{step[name]:.2f}", f"{kernel[name]:.2f}", f"{step[name] - kernel[name]:.2f}",
                         f"{wrapper[name]:.2f}", "1.000x", "-", "-", "-", "-", "-"])
            continue
        target = 1 + 0.8 * (rho - 1)
        allowed = (kernel["fp32"] + rest_fp32) / target - rest_fp32
        ideal = kernel["fp32"] / rho
        rows.append([name, f"{rho:.3f}x", f"{step[name]:.2f}", f"{kernel[name]:.2f}", f"{step[name] - kernel[name]:.2f}",
                     f"{wrapper[name]:.2f}", f"{speedup:.3f}x", f"{target:.3f}x", f"{ideal:.2f}", f"{allowed:.2f}", str(pairs),
                     f"{(allowed - ideal) / pairs * 1e3:.1f}"])
        print(rows[-1], flush=True)
    title = "whitened factorizations (SmolLM2-135M)" if args.model == "smollm2" else "random rank pairs (Llama 1.1 B)"
    body = [header(f"Decode step breakdown, fp32 against {title}"), (
        f"Each model compiled once (backend 'lite' without a recipe, Inductor's kernel profiling on). Decode "
        f"speedup: median of the per-round ratios of the round's median step to fp32's, over {args.rounds} unprofiled "
        f"rounds of {args.new_tokens} greedy tokens (static KV cache), the models decoding in turn in rotating order. "
        f"Then {args.rounds} rounds of 20 steps per model under torch.profiler, in the same rotation: step, kernels (time "
        "inside the compiled C++ functions) and the graph's Python wrapper around them (Inductor's `call`, its "
        "buffer allocations, views, input asserts and kernel calls) are medians over those rounds; rest = step − "
        "kernels (the wrapper, Dynamo, the forward's Python around the graph, the step's argmax, the profiler's "
        "own events). Target: (speedup − 1) ≥ 0.8 × (bytes ratio − 1). Kernels at the bytes: fp32's kernel time / "
        "bytes ratio. Kernels allowed: the most kernel time that meets the target if the rest stays fp32's. Slack "
        "per pair: (allowed − at the bytes) / low-rank pairs: all that a pair may cost beyond its bytes.\n"
    ), about,
        markdown(["model", "bytes ratio", "step ms", "kernels ms", "rest ms", "of it wrapper ms", "decode speedup", "target",
                  "kernels at the bytes ms", "kernels allowed ms", "low-rank pairs", "slack per pair µs"], rows)]
    write_section(f"decode_breakdown_{args.model}", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
