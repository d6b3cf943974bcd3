"""Graph rewrites. Each pass is a pure function `(GraphModule, config, calib=None) -> (GraphModule, Report)`."""
from .factor import FactorReport
from .factor import run as factor
from .quantize import QuantizeReport
from .quantize import run as quantize

__all__ = ["FactorReport", "QuantizeReport", "factor", "quantize"]
