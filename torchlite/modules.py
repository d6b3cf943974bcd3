"""Eager modules that hold compressed weights (what `torchlite.compress` swaps in)."""
from __future__ import annotations

import torch

from .quant.linear import QuantizedWeight


class QuantizedLinear(torch.nn.Module):
    """A Linear whose weight is stored quantized (int8, or two 4-bit values per byte).

    Its forward is `torch.ops.torchlite.qlinear`, which Inductor lowers to torchlite's fused kernel
    when the module is compiled (with backend "lite" or plain "inductor").
    """

    def __init__(self, qw: QuantizedWeight, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = qw.in_features, qw.out_features
        self.bits, self.group_size = qw.bits, qw.group_size
        self.register_buffer("qdata", qw.qdata)
        self.register_buffer("scale", qw.scale)
        self.register_buffer("zero", qw.zero)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.torchlite.qlinear(
            x, self.qdata, self.scale, self.zero, self.bias, self.bits, self.group_size, self.in_features
        )

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.group_size else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}{group}"
