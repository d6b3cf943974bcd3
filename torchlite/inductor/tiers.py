"""Which instruction set the hand-written kernels are compiled for: one tier per CPU family users have.

Every kernel in `csrc/` is written once against the small SIMD layer of `csrc/simd.h`, which has one
implementation per tier:

| tier | vectors | integer dot product | CPUs |
|---|---|---|---|
| `avx512_vnni` | 64 bytes | vpdpbusd | Intel Ice Lake+ / Xeon, AMD Zen 4+ |
| `avx_vnni` | 32 bytes | vpdpbusd (VEX; EVEX on AVX-512 CPUs) | Intel Alder Lake+ client, Zen 4+ |
| `avx2` | 32 bytes | vpmaddubsw + vpmaddwd (llama.cpp's) | Intel Haswell+, AMD Zen 1-3 |
| `portable` | 32 bytes | plain C++ loops (`omp simd`) | any CPU, forced only |

By default the first x86 tier this CPU runs is used; elsewhere (ARM) decode calls keep Inductor's
generated reductions, because the portable kernels are correct on every CPU but not yet fast (10-50x
slower than the avx2 tier on the same x86 CPU, 2026-12-07): they exist so that every kernel's logic is
tested on every machine. `TORCHLITE_KERNEL_TIER` (a tier's name, `auto`, or
`none` for Inductor's generated reductions only) or `forced(...)` overrides it, for tests and
benchmarks; a tier this CPU cannot run is refused with the flags it lacks. The tier is part of every
kernel's source and of the compiled-graph cache key (`inductor.tag_cache_key`), so switching never
reuses code compiled for another tier.
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

ENV = "TORCHLITE_KERNEL_TIER"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere, where only `portable` runs)."""
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return frozenset()


@dataclass(frozen=True)
class Tier:
    name: str
    number: int  # the `TIER` #define of csrc/simd.h
    requires: tuple[frozenset[str], ...]  # /proc/cpuinfo flags: any one set suffices (empty: none)

    def runnable(self) -> bool:
        if not self.requires:
            return True
        return _x86() and any(flags <= cpu_flags() for flags in self.requires)

    def defines(self) -> dict:
        """The #defines that select this tier in csrc/simd.h."""
        evex = self.name == "avx_vnni" and "avx_vnni" not in cpu_flags()
        return {"TIER": self.number, "AVX_VNNI_EVEX": int(evex)}


def _x86() -> bool:
    return platform.machine().lower() in {"x86_64", "amd64", "i686", "x86"}


_AVX512 = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "fma"})
TIERS = (
    Tier("avx512_vnni", 1, (_AVX512,)),
    Tier("avx_vnni", 2, (frozenset({"avx2", "fma", "avx_vnni"}), frozenset({"avx2", "fma", "avx512vl", "avx512bw", "avx512_vnni"}))),
    Tier("avx2", 3, (frozenset({"avx2", "fma"}),)),
    Tier("portable", 4, ()),
)
BY_NAME = {t.name: t for t in TIERS}


def runnable() -> list[Tier]:
    """The tiers this CPU can execute, fastest first."""
    return [t for t in TIERS if t.runnable()]


def selected() -> Tier | None:
    """The tier kernels are compiled for now (None: `none`, no hand-written kernels; also `auto` on
    a CPU without an x86 tier)."""
    name = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if name == "none":
        return None
    if name == "auto":
        return next((t for t in runnable() if t.requires), None)
    tier = BY_NAME.get(name)
    if tier is None:
        raise ValueError(f"{ENV}={name!r} is not a kernel tier; use one of {', '.join(BY_NAME)}, 'auto' or 'none'")
    if not tier.runnable():
        needs = " or ".join("{" + ", ".join(sorted(f)) + "}" for f in tier.requires)
        raise RuntimeError(
            f"{ENV}={name!r}: this CPU cannot run the {name} kernels (they need the flags {needs}); "
            f"this CPU runs {', '.join(t.name for t in runnable())}"
        )
    return tier


def name() -> str:
    tier = selected()
    return tier.name if tier else "none"


@contextlib.contextmanager
def forced(tier_name: str):
    """Compile kernels for `tier_name` (a tier, `auto` or `none`) inside the block (the cache key
    follows). Call `torch._dynamo.reset()` before compiling a model again that was compiled outside
    the block."""
    from . import tag_cache_key

    before = os.environ.get(ENV)
    os.environ[ENV] = tier_name
    try:
        selected()  # refuse an unknown or unrunnable tier now
        tag_cache_key()
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before
        tag_cache_key()
