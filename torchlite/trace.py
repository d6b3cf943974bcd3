"""`torchlite.trace`: a model as a canonical GraphModule for running passes by hand."""
from __future__ import annotations

import torch
import torch.fx as fx

from .errors import TorchliteError


def trace(model: torch.nn.Module, args: tuple, kwargs: dict | None = None) -> fx.GraphModule:
    """Trace `model` on example inputs with torch.export (non-strict) into a GraphModule.

    Weights are `get_attr` constants and linears are `aten.linear` nodes, so every pass can find and
    rewrite them. The result is called like the model (same positional/keyword inputs) and is
    specialised to the example inputs' shapes.
    """
    if not isinstance(args, tuple):
        raise TorchliteError(f"trace takes its example inputs as a tuple, e.g. (x,), not {type(args).__name__}")
    was_training = model.training
    model.eval()
    try:
        exported = torch.export.export(model, args, kwargs or {}, strict=False)
    except Exception as exc:
        raise TorchliteError(
            f"torch.export could not trace {type(model).__name__} ({type(exc).__name__}: {exc}); "
            "compile it with torch.compile(model, backend='lite') instead, which handles graph breaks"
        ) from exc
    finally:
        model.train(was_training)
    return exported.module()
