"""Decode-shaped linear layers: every kernel path side by side, in one process.

Several distinct layers are called in turn so that no weight stays in cache between its calls: every
path's stack repeats its layers as distinct copies until it reads as many bytes per call as the fp32
stack, so a 2-bit copy exceeds the caches exactly as the fp32 weights do (a last-level cache of
hundreds of MB holds a whole int4 copy of a stack that only the fp32 one overflows).
Every path is compiled first; then rounds measure the read bandwidth and every path in turn (rotating
order), so a slow spell of the machine hits the roofline and the paths alike. Reports median ms per
layer, GB/s of weight bytes read, and % of the read bandwidth measured in the same round (the
roofline of a batch-1 decode step), as medians over the rounds.
"""
from __future__ import annotations

import argparse
import warnings

import torch

import torchlite
from common import compile_lite, header, markdown, measure, write_section
from models import Layers, copies, layer_stacks, own_class, replicated
from torchlite.eval.lm import weight_bytes
from torchlite.numerics.linear import quantize_weight

warnings.filterwarnings("ignore")


class Int8Expression(torch.nn.Module):
    """int8 weight-only written as a plain tensor expression, `(x * q.float()).sum(-1) * s`, for
    plain Inductor to compile: what Inductor's own code generation reaches without torchlite. The
    layers repeat as distinct copies until they read as many bytes per call as `model` (see `copies`)."""

    def __init__(self, model: Layers):
        super().__init__()
        qs = [quantize_weight(layer.weight, 8, None, True, "channel") for layer in model.layers]
        k = model.layers[0].in_features
        times = copies(weight_bytes(model), sum(q.qdata[:, :k].numel() for q in qs))
        param = lambda t: torch.nn.Parameter(t.clone(), requires_grad=False)  # noqa: E731
        self.q = torch.nn.ParameterList(param(q.qdata[:, :k]) for _ in range(times) for q in qs)
        self.s = torch.nn.ParameterList(param(q.scale[:, 0]) for _ in range(times) for q in qs)

    def forward(self, x):
        k = x.shape[-1]
        for q, s in zip(self.q, self.s):
            x = x + 1e-3 * ((x.unsqueeze(-2) * q.float()).sum(-1) * s)[..., :k]
        return x


CODEBOOK_ROWS = [
    ("lite log 4-bit", {"scheme": "log", "bits": 4}),
    ("lite VQ ~2 bit/w (d=4, 256 centroids)", {"scheme": "vector", "vector_dim": 4, "codebook_size": 256}),
    ("lite VQ ~2 bit/w (d=2, 16 centroids)", {"scheme": "vector", "vector_dim": 2, "codebook_size": 16}),
    ("lite VQ d=2, 64 centroids (byte codes: 4 bit/w)", {"scheme": "vector", "vector_dim": 2, "codebook_size": 64}),
]


def compiled_with(model, **inductor_config):
    """torch.compile(model) whose (first-call) compilation runs under the given Inductor config."""
    compiled = torch.compile(model)

    def run(x):
        with torch._inductor.config.patch(**inductor_config):
            return compiled(x)

    return run


LITE_RECIPES = [("lite int8", "int8"), ("lite int4 g128", "int4"), ("lite W8A8 (dynamic)", "w8a8")]


def compressed(model: Layers) -> dict:
    """Once per shape (k-means is slow): `model` compressed by each lite recipe and codebook scheme."""
    recipes = {label: torchlite.compress(model, recipe) for label, recipe in LITE_RECIPES}
    return recipes | {label: torchlite.compress(model, {"quantize": cfg}) for label, cfg in CODEBOOK_ROWS}


def variants(model: Layers, compressed_models: dict):
    """(name, callable, input dtype, weight bytes, layers called) for each kernel path."""
    count, fp32 = len(model.layers), weight_bytes(model)
    yield "fp32 eager", model, torch.float32, fp32, count
    yield "fp32 Inductor", torch.compile(own_class(model)), torch.float32, fp32, count
    yield "lite fp32 (no recipe)", compile_lite(own_class(model)), torch.float32, fp32, count
    bf16 = Layers(count, *model.layers[0].weight.shape)
    bf16.load_state_dict(model.state_dict())
    bf16, nbytes = replicated(bf16.to(torch.bfloat16), fp32, fp32 // 2)
    yield "bf16 Inductor (freezing)", compiled_with(bf16, freezing=True), torch.bfloat16, nbytes, len(bf16.layers)
    qdyn = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    qdyn, nbytes = replicated(qdyn, fp32, sum(l.weight().numel() for l in qdyn.layers))
    yield "quantize_dynamic int8", qdyn, torch.float32, nbytes, len(qdyn.layers)
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        ao = Layers(count, *model.layers[0].weight.shape)
        ao.load_state_dict(model.state_dict())
        quantize_(ao, Int8WeightOnlyConfig(set_inductor_config=False))
        ao, nbytes = replicated(ao, fp32, sum(l.weight.numel() for l in ao.layers))
        yield "torchao int8 weight-only + compile", torch.compile(ao), torch.float32, nbytes, len(ao.layers)
    except ImportError:
        print("torchao not installed: skipping its row")
    expression = Int8Expression(model)
    yield "Inductor, int8 as a tensor expression", torch.compile(expression), torch.float32, sum(
        q.numel() for q in expression.q
    ), len(expression.q)
    for label, small in compressed_models.items():  # compiled with the lite backend, no further recipe
        stack, nbytes = replicated(small, fp32, weight_bytes(small))
        yield label, compile_lite(stack), torch.float32, nbytes, len(stack.layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--fp32-bytes", type=float, default=0.5,
        help="GiB of fp32 weights per shape (sets the layer count; every path reads this much per call)",
    )
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--iters", type=int, default=5, help="calls per path and round (their median counts)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch._dynamo.config.recompile_limit = 64  # every path compiles the same forward
    torch._dynamo.config.accumulated_recompile_limit = 512
    torch._dynamo.config.automatic_dynamic_shapes = False  # x=[1, K] and x=[8, K] get static graphs
    sections = [header("Decode-shaped linear layers")]
    sections.append(
        f"Per shape, as many distinct layers as make {args.fp32_bytes:g} GiB of fp32 weights, each fed by the previous "
        "one's output; every other path repeats its layers as distinct copies (new memory, same values) until it "
        "reads as many bytes per call as the fp32 stack, so that no path's weights fit the caches where the fp32 "
        "ones do not. Compressed paths: `torchlite.compress` with the row's recipe, compiled with backend 'lite'. "
        f"Every path compiled first, then {args.rounds} rounds: the read bandwidth (best of `sum` and fp32 `mv` "
        f"over 1 GiB), then each path (median of {args.iters} calls) in rotating order. Weights are random (speed "
        "only). ms/layer: median over the rounds; GB/s = weight bytes read per second at that median (int8: 1 "
        "byte/weight, int4: 0.5 byte + scales); % roofline: median over the rounds of GB/s over that round's read "
        "bandwidth; speed: median per-round ratio to fp32 eager.\n"
    )
    for n, k, count, model in layer_stacks(args.fp32_bytes):
        compressed_models = compressed(model)
        for m in (1, 8):
            with torch.no_grad():
                entries = []
                for name, fn, dtype, nbytes, layers in variants(model, compressed_models):
                    x = torch.randn(m, k, dtype=dtype)
                    fn(x)  # compiles
                    entries.append((name, fn, x, nbytes, layers))
                    print(f"[{n}x{k}, x=[{m},{k}]] compiled {name} ({layers} layers)", flush=True)
                results, bandwidth = measure(entries, args.rounds, args.iters)
            rows = []
            for name, _, _, nbytes, layers in entries:
                t, share, speed = results[name]
                rows.append([name, str(layers), f"{t * 1e3:.3f}", f"{nbytes / layers / t / 1e9:.1f}", f"{100 * share:.0f}%", f"{speed:.2f}x"])
                print(rows[-1], flush=True)
            del entries
            torch._dynamo.reset()
            sections.append(
                f"### W=[{n},{k}], x=[{m},{k}] (read bandwidth, median of the rounds: {bandwidth:.0f} GB/s)\n\n"
                + markdown(["path", "layers", "ms/layer", "GB/s", "% roofline", "speed vs fp32 eager"], rows)
            )
    write_section("linear_decode", "\n".join(sections))


if __name__ == "__main__":
    main()
