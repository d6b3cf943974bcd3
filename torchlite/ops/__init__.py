"""torchlite's custom ops (torch.library): an eager reference and a fake implementation each.

Importing this package registers `torch.ops.torchlite.*`.
"""
from . import dense, log, quant, sparse, vector  # noqa: F401  (registers the ops)
from .quant import dequantize, qlinear
from .sparse import nm_linear

__all__ = ["dequantize", "nm_linear", "qlinear"]
