"""Graph rewrites. Each pass is a pure function `(GraphModule, config, ...) -> (GraphModule, Report)`:
its input graph is never changed."""
from .factor import FactorReport
from .factor import run as factor
from .pack import run as pack_nm
from .prune import PruneReport
from .prune import run as prune
from .quantize import QuantizeReport
from .quantize import run as quantize
from .route import fuse_shared_inputs, route_decode_attention, route_float_linears

__all__ = [
    "FactorReport", "PruneReport", "QuantizeReport", "factor", "fuse_shared_inputs", "pack_nm", "prune", "quantize",
    "route_decode_attention", "route_float_linears",
]
