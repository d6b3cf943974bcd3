"""2:4 sparse against dense linear layers of the same value dtype, decode-shaped, in one process.

The layers of linear_decode.py (distinct layers called in turn, so no weight stays in cache), 2:4
pruned; each path is timed interleaved with the others (same machine state). Target (issue 4): the
N:M kernel at 2:4 beats the dense kernel of the same value dtype by >= 1.3x.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import torchlite
from common import compile_lite, header, markdown, write_section
from models import Layers, layer_stacks, replicated
from torchlite.eval.lm import weight_bytes
from torchlite.numerics import nm_mask, pack_nm

warnings.filterwarnings("ignore")


class NMLayers(torch.nn.Module):
    """The layers of `model` (already N:M sparse) stored compressed and run by `torchlite::nm_linear`."""

    def __init__(self, model: Layers, n: int, m: int, int8: bool):
        super().__init__()
        self.n, self.m, self.k = n, m, model.layers[0].in_features
        for i, layer in enumerate(model.layers):
            packed = pack_nm(layer.weight, n, m, int8=int8)
            self.register_buffer(f"values{i}", packed.values)
            self.register_buffer(f"indices{i}", packed.indices)
            self.register_buffer(f"scale{i}", packed.scale)
        self.count = len(model.layers)

    def forward(self, x):
        for i in range(self.count):
            values, indices, scale = (getattr(self, f"{name}{i}") for name in ("values", "indices", "scale"))
            y = torch.ops.torchlite.nm_linear(x, values, indices, scale, None, self.n, self.m, self.k)
            x = x + 1e-3 * y[..., : self.k]
        return x


def interleaved_medians(fns: dict, x, iters: int) -> dict:
    """Median seconds per call of each function, the functions called in turn (same machine state)."""
    times = {name: [] for name in fns}
    for _ in range(3):
        for fn in fns.values():
            fn(x)
    for _ in range(iters):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def sparse_vs_dense(model: Layers, iters: int) -> list[list[str]]:
    """2:4 sparse against dense of the same value dtype, x = [1, k], timed interleaved. The dense
    layers hold the 2:4-pruned weights too (speed does not depend on the values). Every stack repeats
    its layers as distinct copies until it reads as many bytes per call as the fp32 one
    (`models.replicated`), so that no path's weights fit the caches where the fp32 ones do not."""
    pruned = Layers(len(model.layers), *model.layers[0].weight.shape).eval().requires_grad_(False)
    pruned.load_state_dict({name: w * nm_mask(w.abs(), 2, 4) for name, w in model.state_dict().items()})
    fp32 = weight_bytes(pruned)
    paths = {}  # name: (callable, weight bytes per call, layers per call, name of the dense path it is compared with)
    torch._dynamo.reset()
    paths["dense fp32 (Inductor)"] = torch.compile(pruned), fp32, len(pruned.layers), None
    torch._dynamo.reset()
    paths["lite dense fp32 (no recipe)"] = compile_lite(pruned), fp32, len(pruned.layers), None
    for int8, dense in ((False, "lite dense fp32 (no recipe)"), (True, "lite int8 (dense)")):
        if int8:
            small = torchlite.compress(pruned, "int8")
            stack, nbytes = replicated(small, fp32, weight_bytes(small))
            torch._dynamo.reset()
            paths[dense] = compile_lite(stack), nbytes, len(stack.layers), None
        one = weight_bytes(NMLayers(pruned, 2, 4, int8=int8))
        stack, nbytes = replicated(pruned, fp32, one)
        sparse = NMLayers(stack, 2, 4, int8=int8)
        torch._dynamo.reset()
        paths[f"lite 2:4 {'int8' if int8 else 'fp32'}"] = torch.compile(sparse), weight_bytes(sparse), sparse.count, dense
    k = model.layers[0].in_features
    with torch.no_grad():
        seconds = interleaved_medians({name: p[0] for name, p in paths.items()}, torch.randn(1, k), iters)
    per_layer = {name: seconds[name] / paths[name][2] for name in paths}
    rows = []
    for name, (_, nbytes, layers, dense) in paths.items():
        ratio = f"{per_layer[dense] / per_layer[name]:.2f}x" if dense else ""
        rows.append([name, str(layers), f"{per_layer[name] * 1e3:.3f}", f"{nbytes / layers / per_layer[name] / 1e9:.1f}", ratio])
        print(f"[{model.layers[0].out_features}x{k}, 2:4] {name} ({layers} layers): {per_layer[name] * 1e3:.3f} ms {ratio}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fp32-bytes", type=float, default=0.5, help="GiB of fp32 weights per shape (sets the layer count)")
    parser.add_argument("--iters", type=int, default=25)
    args = parser.parse_args()
    torch.manual_seed(0)
    sections = [header("2:4 sparse vs dense, decode-shaped layers"), (
        f"Per shape, as many distinct layers as make {args.fp32_bytes:g} GiB of fp32 weights, each fed by the previous "
        "one's output, x = [1, K]; every other path repeats its layers as distinct copies until it reads as many bytes "
        f"per call as the fp32 stack; median of {args.iters} calls, the paths called in turn. Dense layers hold the same "
        "2:4-pruned weights; int8 dense is `torchlite.compress(..., 'int8')` compiled with backend 'lite'. GB/s = "
        "bytes stored per layer (values + position bytes + scales) per second. Target "
        "(issue 4): sparse / dense ≥ 1.3x for the same value dtype, dense fp32 being torchlite's own float "
        "reduction (`lite dense fp32`); Inductor's fp32 linear (MKL) is shown for reference.\n"
    )]
    for n, k, _, model in layer_stacks(args.fp32_bytes):
        sections.append(
            f"### W=[{n},{k}], x=[1,{k}]\n\n"
            + markdown(["path", "layers", "ms/layer", "GB/s", "sparse / dense speed"], sparse_vs_dense(model, args.iters))
        )
    write_section("nm_decode", "\n".join(sections))


if __name__ == "__main__":
    main()
