"""Graph rewrites. Each pass is a pure function `(GraphModule, config, calib=None) -> (GraphModule, Report)`."""
from .factor import FactorReport
from .factor import run as factor
from .prune import PruneReport, sparsify
from .prune import run as prune
from .quantize import QuantizeReport
from .quantize import run as quantize

__all__ = ["FactorReport", "PruneReport", "QuantizeReport", "factor", "prune", "quantize", "sparsify"]
