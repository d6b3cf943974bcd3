"""torchlite: a torch.compile backend that makes language models smaller and faster.

    torch.compile(model, backend="lite", options={"recipe": "int4"})
    gm = torchlite.trace(model, (x,))
    gm2, report = torchlite.passes.quantize(gm, Quantize(bits=8))
    gm3, report = torchlite.passes.factor(gm, Factor(budget=0.8, method="whiten"), calib=batches)
    small = torchlite.compress(model, "int8")
"""
from . import inductor as _lowerings  # noqa: F401  (registers the Inductor lowerings of torchlite ops)
from . import ops, passes
from .compress import compress
from .errors import TorchliteError
from .modules import LowRankLinear, QuantizedLinear
from .recipe import PRESETS, Factor, Quantize, Recipe, parse_recipe
from .trace import trace

__all__ = [
    "PRESETS", "Factor", "LowRankLinear", "Quantize", "QuantizedLinear", "Recipe", "TorchliteError",
    "compress", "ops", "parse_recipe", "passes", "trace",
]
