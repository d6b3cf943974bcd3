"""Shared helpers of the benchmark scripts: timing (rotating order, interleaved models), bandwidth, machine
description, docs output. Models the scripts share: models.py."""
from __future__ import annotations

import datetime
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from torchlite.eval.lm import Decode, greedy_decode, lockstep_decode, rotations, step_speedup, weight_bytes

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


FRESH_COPY = (
    "The fp32 baseline is a deepcopy of the loaded model, allocated like the compressed models: in a "
    "side check the model as loaded decoded slower than an identical deepcopy of it in the same process."
)


def compile_lite(model):
    """torch.compile with the lite backend and no recipe: Inductor plus torchlite's lowerings, float
    linears included (decode shapes as bandwidth-bound reductions, torchlite.inductor.dense). Every
    speed comparison of compressed models compiles the baseline and the compressed model this way."""
    return torch.compile(model, backend="lite", options={"recipe": "none"})


class Interleaved:
    """Decode and prefill speed of several models measured side by side (`measure_interleaved`)."""

    def __init__(self, decode: dict[str, Decode], prefill: dict[str, list[float]]):
        self.decode, self.prefill = decode, prefill

    def decode_tps(self, name: str) -> float:
        return self.decode[name].tokens_per_second

    def prefill_tps(self, name: str, tokens: int) -> float:
        return tokens / statistics.median(self.prefill[name])

    def decode_speedup(self, name: str, base: str) -> float:
        """Median over decode positions of base's step time / name's (the two ran in lockstep)."""
        return step_speedup(self.decode[base], self.decode[name])

    def prefill_speedup(self, name: str, base: str) -> float:
        """Median over rounds of base's prefill time / name's (the two ran in the same round)."""
        return statistics.median(b / o for b, o in zip(self.prefill[base], self.prefill[name]))


def measure_interleaved(models: dict[str, tuple], prompt, new_tokens: int, rounds: int, prefill_ids) -> Interleaved:
    """`models`: name -> (compiled forward, config, kv heads per layer or None). Each model is warmed up
    (its graphs compiled), then each of `rounds` rounds decodes `new_tokens` tokens with the models in
    lockstep (`torchlite.eval.lm.lockstep_decode`: turns of 8 positions, in rotating order) and runs
    one prefill of `prefill_ids` per model, in an order that rotates from round to round. The
    machine's speed drifts by tens of percent over minutes here: compare models through the speedups,
    which pair measurements taken moments apart."""
    names = list(models)
    with torch.no_grad():
        for name, (forward, config, kv) in models.items():
            greedy_decode(forward, config, prompt, 2, desc=f"compile {name}", kv_heads=kv)
            forward(input_ids=prefill_ids, use_cache=False)
        steps = {name: [] for name in names}
        prefill = {name: [] for name in names}
        for r, order in enumerate(rotations(names, rounds)):
            runs = lockstep_decode(models, prompt, new_tokens, desc=f"decode round {r + 1}/{rounds}")
            for name in names:
                steps[name] += runs[name].step_seconds
            for name in order:
                start = time.perf_counter()
                models[name][0](input_ids=prefill_ids, use_cache=False)
                prefill[name].append(time.perf_counter() - start)
    return Interleaved({name: Decode([], steps[name]) for name in names}, prefill)


def median_seconds(fn, *args, warmup: int = 3, iters: int = 25) -> float:
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    """Read bandwidth in GB/s: the best of two streams over `nbytes`, far larger than the caches:
    a `sum` and an fp32 matrix-vector product (MKL's GEMV streams its matrix with prefetching and
    outruns `sum` on some machines)."""
    buf = torch.ones(nbytes // 4)
    by_sum = nbytes / median_seconds(lambda: buf.sum(), warmup=2, iters=9)
    mat, vec = buf.view(-1, 4096), torch.ones(4096)
    by_gemv = nbytes / median_seconds(lambda: torch.mv(mat, vec), warmup=2, iters=9)
    return max(by_sum, by_gemv) / 1e9


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512vbmi", "avx512_bf16", "amx_tile")


def cpu_flags() -> str:
    """The CPU's vector-instruction flags that decide which kernel paths run (from /proc/cpuinfo)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "flags unknown"
    return "flags " + (" ".join(f for f in SIMD_FLAGS if f in flags) or "none of " + "/".join(SIMD_FLAGS))


def machine() -> str:
    """CPU model, last-level cache (lscpu: the cache decides which weights stream from memory), its SIMD
    flags, threads, torch and Python versions."""
    cpu = platform.processor() or "cpu"
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = re.search(r"Model name:\s*(.+)", info).group(1).strip()
        l3 = re.search(r"L3 cache:\s*([^(\n]+)", info)
        cpu += f" (L3 {l3.group(1).strip()})" if l3 else ""
    except Exception:
        pass
    return (f"{cpu}, {cpu_flags()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def header(title: str) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = " ".join(["cd benchmarks && python", Path(sys.argv[0]).name] + sys.argv[1:])
    return f"## {title}\n\nMachine: {machine()}. Date: {now}. Command: `{cmd}`.\n"


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section of docs/benchmarks.md between this script's markers."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\nGenerated by the scripts in `benchmarks/`; do not edit the sections by hand.\n"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOCS.parent.mkdir(exist_ok=True)
    DOCS.write_text(text)
    print(body)


def markdown(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def quantize_dynamic_bytes(qdyn) -> int:
    """Float weights left in the quantize_dynamic model plus its packed int8 linears."""
    packed = sum(
        m.weight().numel() + m.out_features * 4  # int8 values + per-tensor/row scale bookkeeping
        for m in qdyn.modules()
        if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
    )
    return weight_bytes(qdyn) + packed


def measure(entries: list, rounds: int, iters: int):
    """Per path: (median ms per layer over the rounds, median of its per-round share of the round's read
    bandwidth, median per-round speed ratio against the first path); and the median bandwidth."""
    seconds, shares, bandwidths = {e[0]: [] for e in entries}, {e[0]: [] for e in entries}, []
    for order in rotations(entries, rounds):
        bandwidth = read_bandwidth_gbs()
        bandwidths.append(bandwidth)
        for name, fn, x, nbytes, layers in order:
            t = median_seconds(fn, x, warmup=1, iters=iters) / layers
            seconds[name].append(t)
            shares[name].append(nbytes / layers / t / 1e9 / bandwidth)
    base = seconds[entries[0][0]]
    return {
        name: (statistics.median(seconds[name]), statistics.median(shares[name]),
               statistics.median(b / t for b, t in zip(base, seconds[name])))
        for name in seconds
    }, statistics.median(bandwidths)
