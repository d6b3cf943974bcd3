"""Decode-shaped linear layers: every kernel path side by side, in one process.

Several distinct layers are called in turn so that no weight stays in cache between its calls.
Reports median ms per layer, GB/s of weight bytes read, and % of the read bandwidth measured in the
same run (the roofline of a batch-1 decode step).
"""
from __future__ import annotations

import argparse
import warnings

import torch

import torchlite
from common import compile_lite, header, markdown, median_seconds, read_bandwidth_gbs, write_section
from torchlite.eval.lm import weight_bytes
from torchlite.quant.linear import quantize_weight

warnings.filterwarnings("ignore")


class Layers(torch.nn.Module):
    """`count` distinct Linear(k, n) layers (n >= k), each fed by the previous one's output, as in a
    model: no compiler can fuse them into one pass over the input."""

    def __init__(self, count: int, n: int, k: int):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(k, n, bias=False) for _ in range(count))

    def forward(self, x):
        k = x.shape[-1]
        for layer in self.layers:
            x = x + 1e-3 * layer(x)[..., :k]
        return x


class Int8Expression(torch.nn.Module):
    """int8 weight-only written as a plain tensor expression, `(x * q.float()).sum(-1) * s`, for
    plain Inductor to compile: what Inductor's own code generation reaches without torchlite."""

    def __init__(self, model: Layers):
        super().__init__()
        qs = [quantize_weight(layer.weight, 8, None, True, "channel") for layer in model.layers]
        k = model.layers[0].in_features
        self.q = torch.nn.ParameterList(torch.nn.Parameter(q.qdata[:, :k], requires_grad=False) for q in qs)
        self.s = torch.nn.ParameterList(torch.nn.Parameter(q.scale[:, 0], requires_grad=False) for q in qs)

    def forward(self, x):
        k = x.shape[-1]
        for q, s in zip(self.q, self.s):
            x = x + 1e-3 * ((x.unsqueeze(-2) * q.float()).sum(-1) * s)[..., :k]
        return x


CODEBOOK_ROWS = [
    ("lite log 4-bit", {"scheme": "log", "bits": 4}),
    ("lite VQ ~2 bit/w (d=4, 256 centroids)", {"scheme": "vector", "vector_dim": 4, "codebook_size": 256}),
    ("lite VQ d=2, 64 centroids (byte codes: 4 bit/w)", {"scheme": "vector", "vector_dim": 2, "codebook_size": 64}),
]


def layer_stacks(fp32_gib: float):
    """(n, k, count, Layers) per decode shape: as many Linear(k, n) layers as make `fp32_gib` GiB."""
    for n, k in [(11008, 4096), (4096, 4096)]:
        count = max(2, round(fp32_gib * 2**30 / (n * k * 4)))
        yield n, k, count, Layers(count, n, k).eval().requires_grad_(False)


def compiled_with(model, **inductor_config):
    """torch.compile(model) whose (first-call) compilation runs under the given Inductor config."""
    compiled = torch.compile(model)

    def run(x):
        with torch._inductor.config.patch(**inductor_config):
            return compiled(x)

    return run


def codebook_models(model: Layers) -> dict:
    """The log- and vector-quantized copies of `model` (quantized once per shape: k-means is slow)."""
    return {label: torchlite.compress(model, {"quantize": cfg}) for label, cfg in CODEBOOK_ROWS}


def variants(model: Layers, codebooks: dict):
    """(name, callable, input dtype, weight bytes) for each kernel path."""
    yield "fp32 eager", model, torch.float32, weight_bytes(model)
    torch._dynamo.reset()
    yield "fp32 Inductor", torch.compile(model), torch.float32, weight_bytes(model)
    torch._dynamo.reset()
    yield "lite fp32 (no recipe)", compile_lite(model), torch.float32, weight_bytes(model)
    bf16 = Layers(len(model.layers), *model.layers[0].weight.shape)
    bf16.load_state_dict(model.state_dict())
    bf16 = bf16.to(torch.bfloat16)
    torch._dynamo.reset()
    yield "bf16 Inductor (freezing)", compiled_with(bf16, freezing=True), torch.bfloat16, weight_bytes(bf16)
    qdyn = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    yield "quantize_dynamic int8", qdyn, torch.float32, sum(l.weight().numel() for l in qdyn.layers)
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        ao = Layers(len(model.layers), *model.layers[0].weight.shape)
        ao.load_state_dict(model.state_dict())
        quantize_(ao, Int8WeightOnlyConfig(set_inductor_config=False))
        torch._dynamo.reset()
        yield "torchao int8 weight-only + compile", torch.compile(ao), torch.float32, sum(
            l.weight.numel() for l in ao.layers
        )
    except ImportError:
        print("torchao not installed: skipping its row")
    torch._dynamo.reset()
    expression = Int8Expression(model)
    yield "Inductor, int8 as a tensor expression", torch.compile(expression), torch.float32, sum(
        q.numel() for q in expression.q
    )
    for label, recipe in [("lite int8", "int8"), ("lite int4 g128", "int4"), ("lite W8A8 (dynamic)", "w8a8")]:
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="lite", options={"recipe": recipe})
        yield label, compiled, torch.float32, weight_bytes(torchlite.compress(model, recipe))
    for label, small in codebooks.items():  # compiled with torchlite's lowerings
        torch._dynamo.reset()
        yield label, torch.compile(small), torch.float32, weight_bytes(small)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fp32-bytes", type=float, default=1.0, help="GiB of fp32 weights per shape (sets the layer count)")
    parser.add_argument("--iters", type=int, default=25)
    args = parser.parse_args()
    torch.manual_seed(0)
    sections = [header("Decode-shaped linear layers")]
    sections.append(
        f"Per shape, as many distinct layers as make {args.fp32_bytes:g} GiB of fp32 weights (so even the int4 "
        "copies exceed the caches), each fed by the previous one's output; median of "
        f"{args.iters} calls. Weights are random (speed only). GB/s = weight bytes read per second (int8: 1 "
        "byte/weight, int4: 0.5 byte + scales); % roofline = that over the read bandwidth measured in the same "
        "run (best of `sum` and fp32 `mv` over 1 GiB).\n"
    )
    for n, k, count, model in layer_stacks(args.fp32_bytes):
        codebooks = codebook_models(model)
        for m in (1, 8):
            rows = []
            with torch.no_grad():
                bandwidth = read_bandwidth_gbs()
                base = None
                for name, fn, dtype, nbytes in variants(model, codebooks):
                    x = torch.randn(m, k, dtype=dtype)
                    seconds = median_seconds(fn, x, iters=args.iters) / count
                    per_layer = nbytes / count
                    gbs = per_layer / seconds / 1e9
                    base = base or seconds
                    rows.append([name, f"{seconds * 1e3:.3f}", f"{gbs:.1f}", f"{100 * gbs / bandwidth:.0f}%", f"{base / seconds:.2f}x"])
                    print(f"[{n}x{k}, x=[{m},{k}]] {name}: {seconds * 1e3:.3f} ms", flush=True)
                bandwidth = (bandwidth + read_bandwidth_gbs()) / 2
            sections.append(
                f"### W=[{n},{k}] x {count} layers, x=[{m},{k}] (read bandwidth {bandwidth:.0f} GB/s)\n\n"
                + markdown(["path", "ms/layer", "GB/s", "% roofline", "speed vs fp32 eager"], rows)
            )
    write_section("linear_decode", "\n".join(sections))


if __name__ == "__main__":
    main()
