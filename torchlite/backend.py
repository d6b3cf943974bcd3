"""The `lite` torch.compile backend: Dynamo's graph -> torchlite passes -> Inductor.

Registered through the `torch_dynamo_backends` entry point, so `torch.compile(m, backend="lite")`
works without importing torchlite. Options: {"recipe": <preset name | dict | Recipe>}.

The backend never breaks the user's model: if a pass or the compilation of the rewritten graph
fails for a reason other than bad input, it logs why and compiles the original graph with plain
Inductor. Bad input (an unknown option, NaN weights) raises a TorchliteError.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.fx as fx
from torch._dynamo.source import ConstantSource

from . import inductor as _lowerings  # noqa: F401  (registers torchlite's Inductor lowerings)
from .errors import TorchliteError
from .graph.lift import TRAINABLE, lift_linear_weights
from .log import logger
from .pipeline import apply_recipe
from .recipe import Recipe, parse_recipe

OPTIONS = ("recipe",)


def parse_options(options: Mapping[str, Any] | None) -> Recipe:
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TorchliteError(f"unknown option(s) {unknown} for backend 'lite'; allowed: {', '.join(OPTIONS)}")
    return parse_recipe(options.get("recipe"))


def _inductor(gm: fx.GraphModule, example_inputs) -> Callable:
    from torch._inductor.compile_fx import compile_fx

    return compile_fx(gm, example_inputs)


def _register_sources(gm: fx.GraphModule, original: fx.GraphModule) -> None:
    """Give every constant of `gm` a Dynamo source, as AOTAutograd expects of a Dynamo graph."""
    sources = dict(getattr(original, "_param_name_to_source", None) or {})
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        sources.setdefault(name, ConstantSource(name))
    gm._param_name_to_source = sources


def _drop_inputs(compiled: Callable, kept: list[int]) -> Callable:
    """Adapt a compiled graph that takes only the `kept` inputs to Dynamo's full input list."""

    def run(*args):
        return compiled(*[args[i] for i in kept])

    return run


def lite(gm: fx.GraphModule, example_inputs, options: Mapping[str, Any] | None = None, **_: Any) -> Callable:
    recipe = parse_options(options)
    if recipe.is_noop:
        return _inductor(gm, example_inputs)
    training = torch.is_grad_enabled()
    try:
        canonical, kept, notes = lift_linear_weights(gm, example_inputs, keep_trainable=training)
        for name, why in notes:
            logger.info("lite: %s left as it is: %s", name, why)
        trainable = sum(why == TRAINABLE for _, why in notes)
        if trainable:
            logger.warning(
                "lite: %d linear weight(s) require grad under grad mode and stay in floating point; "
                "compile under torch.no_grad()/torch.inference_mode() or call model.requires_grad_(False) "
                "to quantize them",
                trainable,
            )
        rewritten, reports = apply_recipe(canonical, recipe)
    except TorchliteError:
        raise
    except Exception as exc:  # a graph the passes cannot handle: never break the user's model
        logger.warning("lite: passes failed (%s: %s); compiling with plain Inductor", type(exc).__name__, exc)
        return _inductor(gm, example_inputs)
    for report in reports:
        logger.info("lite:\n%s", report)
    if not any(getattr(r, "layers", None) for r in reports):
        logger.info("lite: nothing to rewrite in this graph; compiling with plain Inductor")
        return _inductor(gm, example_inputs)
    _register_sources(rewritten, gm)
    try:
        compiled = _inductor(rewritten, [example_inputs[i] for i in kept])
    except Exception as exc:
        logger.warning("lite: compiling the rewritten graph failed (%s: %s); using plain Inductor", type(exc).__name__, exc)
        return _inductor(gm, example_inputs)
    return _drop_inputs(compiled, kept)
