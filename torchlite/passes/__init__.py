"""Graph rewrites. Each pass is a pure function `(GraphModule, config, calib=None) -> (GraphModule, Report)`."""
from .quantize import QuantizeReport
from .quantize import run as quantize

__all__ = ["QuantizeReport", "quantize"]
