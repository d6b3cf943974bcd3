"""Eager modules that hold compressed weights (what `torchlite.compress` swaps in)."""
from __future__ import annotations

import torch

from .numerics.nm import NMWeight
from .numerics.schemes import SCHEMES, QuantizedTensor


class QuantizedLinear(torch.nn.Module):
    """A Linear whose weight is stored quantized (int8, or two 4-bit values per byte) by one of the
    schemes of `torchlite.numerics.schemes` (`scheme`: "linear", "log", "vector").

    Its forward is the scheme's op (`torch.ops.torchlite.qlinear`, `qlinear_log`, ...; `qlinear_a8` with
    int8 activations), which Inductor lowers to torchlite's fused kernel when the module is compiled
    (with backend "lite" or plain "inductor").
    """

    def __init__(self, qw: QuantizedTensor, bias: torch.Tensor | None, activations: str | None = None,
                 x_scale: torch.Tensor | None = None):
        super().__init__()
        self.activations, self.scheme = activations, qw.scheme
        self.in_features, self.out_features = qw.in_features, qw.out_features
        self.bits, self.group_size = qw.bits, qw.group_size
        for name in SCHEMES[qw.scheme].tensors:
            self.register_buffer(name, getattr(qw, name))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer("input_scale", qw.input_scale)
        self.register_buffer("x_scale", x_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = x * self.input_scale.to(x.dtype)
        if self.activations:
            return torch.ops.torchlite.qlinear_a8(x, self.qdata, self.scale, self.bias, self.in_features, self.x_scale)
        scheme = SCHEMES[self.scheme]
        tensors, attributes = scheme.args(self)
        return scheme.linear(x, *tensors, self.bias, *attributes)

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.group_size else ""
        acts = f", activations={self.activations}" if self.activations else ""
        scheme = "" if self.scheme == "linear" else f", scheme={self.scheme}"
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}{group}{acts}{scheme}"


class LowRankLinear(torch.nn.Module):
    """A Linear factored into two: x -> lowrank_b(lowrank_a(x)), with A [rank, in] and B [out, rank].

    Both halves are plain nn.Linear modules, so a later quantization step quantizes each of them.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        rank, in_features = a.shape
        self.in_features, self.out_features, self.rank = in_features, b.shape[0], rank
        self.lowrank_a = torch.nn.Linear(in_features, rank, bias=False, dtype=a.dtype)
        self.lowrank_b = torch.nn.Linear(rank, self.out_features, bias=bias is not None, dtype=b.dtype)
        with torch.no_grad():
            self.lowrank_a.weight.copy_(a)
            self.lowrank_b.weight.copy_(b)
            if bias is not None:
                self.lowrank_b.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowrank_b(self.lowrank_a(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class SparseLinear(torch.nn.Module):
    """A Linear stored N:M sparse: the kept values (float, or int8 with a per-channel scale) and their
    positions. Its forward is `torch.ops.torchlite.nm_linear`, lowered to torchlite's sparse kernel."""

    def __init__(self, nmw: NMWeight, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features, self.n, self.m = nmw.in_features, nmw.out_features, nmw.n, nmw.m
        self.register_buffer("values", nmw.values)
        self.register_buffer("indices", nmw.indices)
        self.register_buffer("scale", nmw.scale)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.torchlite.nm_linear(x, self.values, self.indices, self.scale, self.bias, self.n, self.m, self.in_features)

    def extra_repr(self) -> str:
        values = "int8" if self.scale is not None else str(self.values.dtype).removeprefix("torch.")
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.n}:{self.m}, values={values}"
