"""The quantization schemes, one registry entry each.

A scheme says how a weight is quantized (round to nearest or a calibrated method) and how the result
is stored and run: the names of its stored tensors and integer attributes, in the order its custom
ops (`torch.ops.torchlite.<linear_op>(x, *tensors, bias, *attributes)` and
`<dequantize_op>(*tensors, *attributes, dtype)`) take them. The quantize pass, `torchlite.compress`
and `torchlite.nn.QuantizedLinear` read only this entry, so a new scheme brings its numerics, ops
and lowering in files of its own and registers here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import torch

from .gptq_awq import awq, gptq, gptq_log, gptq_vector, smoothquant
from .linear import quantize_weight
from .log import quantize_log
from .stats import InputStats
from .vector import check_shape, quantize_vector

if TYPE_CHECKING:
    from ..recipe import Quantize


class QuantizedTensor(Protocol):
    """What every scheme's quantized weight offers (`QuantizedWeight`, `LogQuantizedWeight`, ...)."""

    scheme: str
    qdata: torch.Tensor
    scale: torch.Tensor
    bits: int
    group_size: int
    in_features: int
    input_scale: torch.Tensor | None  # the layer computes (x * input_scale) Ŵᵀ (AWQ, SmoothQuant)

    @property
    def out_features(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor: ...

    def effective_weight(self) -> torch.Tensor: ...


@dataclass(frozen=True)
class Scheme:
    name: str
    quantize: Callable[[torch.Tensor, "Quantize", InputStats | None], QuantizedTensor]
    tensors: tuple[str, ...]  # stored tensors, in op-argument order (an absent one is passed as None)
    attributes: tuple[str, ...]  # integer attributes after the bias, in op-argument order
    linear_op: str  # torch.ops.torchlite.<linear_op>: x @ Ŵᵀ + b
    dequantize_op: str  # torch.ops.torchlite.<dequantize_op>: Ŵ
    describe: Callable[["Quantize"], str]  # one phrase for reports
    bits: tuple[int, int] | None  # (fewest bits, default bits); None: set by the scheme's own options
    check: Callable[[str, torch.Size, "Quantize"], None] = lambda name, shape, cfg: None  # raises on a shape it cannot take

    def args(self, qw) -> tuple[list, list]:
        """(tensors, attributes) of `qw` (a QuantizedTensor, or a module holding the same names)."""
        return [getattr(qw, t) for t in self.tensors], [getattr(qw, a) for a in self.attributes]

    @property
    def linear(self):
        return getattr(torch.ops.torchlite, self.linear_op).default

    @property
    def dequantize(self):
        return getattr(torch.ops.torchlite, self.dequantize_op).default


SCHEMES: dict[str, Scheme] = {}


def register(scheme: Scheme) -> None:
    SCHEMES[scheme.name] = scheme


def quantize(weight: torch.Tensor, cfg: "Quantize", stats: InputStats | None) -> QuantizedTensor:
    """One weight by the config's scheme and method (round to nearest, GPTQ, AWQ or SmoothQuant)."""
    return SCHEMES[cfg.scheme].quantize(weight, cfg, stats)


def _gptq_options(cfg: "Quantize") -> dict:
    return {"damp": cfg.damp, "act_order": cfg.act_order}


def _linear(weight, cfg, stats):
    args = (cfg.bits, cfg.group_size, cfg.symmetric, cfg.granularity)
    if cfg.method == "gptq":
        return gptq(weight, stats, *args, **_gptq_options(cfg))
    if cfg.method == "awq":
        return awq(weight, stats, *args)
    if cfg.method == "smoothquant":
        return smoothquant(weight, stats)
    return quantize_weight(weight, *args)


def _log(weight, cfg, stats):
    args = (cfg.bits, cfg.group_size, cfg.granularity, cfg.log_offset)
    if cfg.method == "gptq":
        return gptq_log(weight, stats, *args, **_gptq_options(cfg))
    return quantize_log(weight, *args)


def _vector(weight, cfg, stats):
    args = (cfg.vector_dim, cfg.codebook_size, cfg.group_size)
    if cfg.method == "gptq":
        return gptq_vector(weight, stats, *args, **_gptq_options(cfg))
    return quantize_vector(weight, *args)


def _per(cfg) -> str:
    return f" per {cfg.granularity}" + (f" (group {cfg.group_size})" if cfg.group_size else "")


register(Scheme(
    "linear", _linear, ("qdata", "scale", "zero"), ("bits", "group_size", "in_features"), "qlinear", "dequantize",
    lambda c: f"{c.bits}-bit {'symmetric' if c.symmetric else 'asymmetric'}" + _per(c), (2, 8),
))
register(Scheme(
    "log", _log, ("qdata", "scale"), ("bits", "group_size", "in_features"), "qlinear_log", "dequantize_log",
    lambda c: f"{c.bits}-bit log (offset {c.log_offset:g})" + _per(c), (3, 4),
))
register(Scheme(
    "vector", _vector, ("qdata", "scale", "codebook"), ("group_size", "in_features"), "qlinear_vector",
    "dequantize_vector",
    lambda c: f"vector d={c.vector_dim}, {c.codebook_size} centroids per " + (f"{c.group_size} rows" if c.group_size else "layer"),
    None, lambda name, shape, c: check_shape(name, shape, c.vector_dim, c.codebook_size, c.group_size),
))
