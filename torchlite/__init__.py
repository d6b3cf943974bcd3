"""torchlite: a torch.compile backend that makes language models smaller and faster.

    torch.compile(model, backend="lite", options={"recipe": "int4"})
    gm = torchlite.trace(model, (x,))
    gm2, report = torchlite.passes.quantize(gm, Quantize(bits=8))
    gm3, report = torchlite.passes.factor(gm, Factor(budget=0.8, method="whiten"), calib=batches)
    gm4, report = torchlite.passes.prune(gm, Prune(structure="head", sparsity=0.25), calib=batches)
    small = torchlite.compress(model, "int8")
"""
from . import inductor as _lowerings  # noqa: F401  (registers the Inductor lowerings of torchlite ops)
from . import ops, passes
from .compress import compress
from .errors import TorchliteError
from .nn import LowRankLinear, QuantizedLinear, SparseLinear
from .recipe import PRESETS, Factor, Prune, Quantize, Recipe, Schedule, parse_recipe
from .trace import trace

__all__ = [
    "PRESETS", "Factor", "LowRankLinear", "Prune", "Quantize", "QuantizedLinear", "Recipe", "Schedule", "SparseLinear",
    "TorchliteError",
    "compress", "ops", "parse_recipe", "passes", "trace",
]
