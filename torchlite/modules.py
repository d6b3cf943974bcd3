"""Eager modules that hold compressed weights (what `torchlite.compress` swaps in)."""
from __future__ import annotations

import torch

from .quant.linear import QuantizedWeight


class QuantizedLinear(torch.nn.Module):
    """A Linear whose weight is stored quantized (int8, or two 4-bit values per byte).

    Its forward is `torch.ops.torchlite.qlinear`, which Inductor lowers to torchlite's fused kernel
    when the module is compiled (with backend "lite" or plain "inductor").
    """

    def __init__(
        self, qw: QuantizedWeight, bias: torch.Tensor | None, activations: str | None = None,
        x_scale: torch.Tensor | None = None,
    ):
        super().__init__()
        self.activations = activations
        self.in_features, self.out_features = qw.in_features, qw.out_features
        self.bits, self.group_size = qw.bits, qw.group_size
        self.register_buffer("qdata", qw.qdata)
        self.register_buffer("scale", qw.scale)
        self.register_buffer("zero", qw.zero)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer("input_scale", qw.input_scale)
        self.register_buffer("x_scale", x_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = x * self.input_scale.to(x.dtype)
        if self.activations:
            return torch.ops.torchlite.qlinear_a8(x, self.qdata, self.scale, self.bias, self.in_features, self.x_scale)
        return torch.ops.torchlite.qlinear(
            x, self.qdata, self.scale, self.zero, self.bias, self.bits, self.group_size, self.in_features
        )

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.group_size else ""
        acts = f", activations={self.activations}" if self.activations else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}{group}{acts}"


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
