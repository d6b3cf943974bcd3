"""torchlite's custom ops (torch.library): an eager reference and a fake implementation each.

Importing this package registers `torch.ops.torchlite.*` (every module in it).
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from .quant import dequantize, qlinear  # noqa: E402
from .sparse import nm_linear  # noqa: E402

__all__ = ["dequantize", "nm_linear", "qlinear"]
