"""torchlite's custom ops (torch.library): an eager reference and a fake implementation each.

Importing this package registers `torch.ops.torchlite.*`.
"""
from . import quant  # noqa: F401  (registers the ops)
from .quant import dequantize, qlinear

__all__ = ["dequantize", "qlinear"]
