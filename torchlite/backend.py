"""The `lite` torch.compile backend: Dynamo's graph -> torchlite passes -> Inductor.

Registered through the `torch_dynamo_backends` entry point, so `torch.compile(m, backend="lite")`
works without importing torchlite. Options: {"recipe": <preset name | dict | Recipe | Prune / Factor / Quantize>,
"calib": <iterable of batches>}. A calibration batch is a tensor (models with one tensor input) or a
dict {argument name: tensor}, with the shapes the model is compiled for.

The backend never breaks the user's model: if a pass or the compilation of the rewritten graph
fails for a reason other than bad input, it logs why and compiles the original graph with plain
Inductor. Bad input (an unknown option, NaN weights) raises a TorchliteError.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.fx as fx
from torch._dynamo.source import ConstantSource, LocalSource

from .inductor import tag_cache_key  # importing it registers torchlite's Inductor lowerings
from .calibration import calibration_batches
from .errors import TorchliteError
from .graph.lift import TRAINABLE, lift_linear_weights
from .log import logger
from .passes.route import fuse_shared_inputs, route_decode_attention, route_float_linears
from .pipeline import apply_recipe
from .recipe import Recipe, parse_recipe

OPTIONS = ("recipe", "calib")


def parse_options(options: Mapping[str, Any] | None) -> tuple[Recipe, Any]:
    """(recipe, calibration batches or None) from the backend options."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TorchliteError(f"unknown option(s) {unknown} for backend 'lite'; allowed: {', '.join(OPTIONS)}")
    calib = options.get("calib")
    return parse_recipe(options.get("recipe")), None if calib is None else calibration_batches(calib, "lite")


def graph_calibration(gm: fx.GraphModule, example_inputs, kept: list[int], batches) -> list[tuple]:
    """The user's calibration batches as positional inputs of the graph that takes the `kept` inputs.

    Inputs the user passes (Dynamo sources that are plain locals) come from each batch, the rest
    (buffers, parameters left as inputs) from the example inputs.
    """
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    user = {}
    for i, node in enumerate(placeholders):
        source = getattr(node, "_dynamo_source", None)
        if isinstance(source, LocalSource) and not isinstance(example_inputs[i], torch.nn.Parameter):
            user[source.local_name] = i
    out = []
    for b, (args, kwargs) in enumerate(batches):
        if args and len(args) == 1 and isinstance(args[0], torch.Tensor) and len(user) == 1:
            given = {next(iter(user)): args[0]}
        elif kwargs:
            given = kwargs
        else:
            raise TorchliteError(
                f"lite: calibration batch {b} must be a dict {{argument name: tensor}} for this graph, whose inputs "
                f"are {sorted(user)} (a bare tensor only works for a single input)"
            )
        missing = sorted(set(user) - set(given))
        if missing:
            raise TorchliteError(f"lite: calibration batch {b} lacks input(s) {missing}; the graph's inputs are {sorted(user)}")
        values = list(example_inputs)
        for name, i in user.items():
            t, ref = given[name], example_inputs[i]
            if isinstance(ref, torch.Tensor) and (not isinstance(t, torch.Tensor) or t.shape != ref.shape or t.dtype != ref.dtype):
                got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
                raise TorchliteError(
                    f"lite: calibration batch {b} input {name!r} is {got}, but the model is compiled for "
                    f"{tuple(ref.shape)} {ref.dtype}; calibrate with batches of the compiled shape"
                )
            values[i] = t
        out.append(tuple(values[i] for i in kept))
    return out


def _inductor(gm: fx.GraphModule, example_inputs) -> Callable:
    from torch._inductor.compile_fx import compile_fx

    return compile_fx(gm, example_inputs)


def _compile(gm: fx.GraphModule, example_inputs) -> Callable:
    """Inductor with torchlite's lowerings; for inference, linears that share an input and whose
    weights are constants become one call, float linears go through `torchlite::linear` (decode shapes
    as a bandwidth-bound reduction, torchlite.inductor.dense) and decode-shaped attention through
    `decode_attention` (all three by torchlite.passes.route)."""
    if torch.is_grad_enabled():
        return _inductor(gm, example_inputs)
    routed, fused = fuse_shared_inputs(gm)
    routed, linears = route_float_linears(routed)
    routed, attention = route_decode_attention(routed)
    try:
        compiled = _inductor(routed, example_inputs)
    except Exception as exc:
        logger.warning("lite: compiling with torchlite::linear failed (%s: %s); using plain Inductor", type(exc).__name__, exc)
        return _inductor(gm, example_inputs)
    logger.info("lite: %d group(s) of linears sharing an input fused into one call, %d floating-point linear(s) "
                "lowered through torchlite::linear, %d decode attention(s) as fused reductions",
                len(fused.layers), len(linears.layers), len(attention.layers))
    return compiled


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


def _per_weights(build: Callable, example_inputs) -> Callable:
    """One compiled graph per set of lifted weights.

    The lifted weights are constants of the compiled graph, but Dynamo (inlining nn.Modules) guards
    on their shapes, not on which tensors they are: a second instance of the same module class reaches
    the same graph with other weights. `build(inputs) -> (fn, lifted input indices)` compiles for
    given inputs; the returned function checks the lifted inputs' identity on every call (a few µs)
    and compiles again for weights it has not seen.
    """
    fn, lifted = build(example_inputs)
    if not lifted:
        return fn
    variants = [(lifted, [example_inputs[i] for i in lifted], fn)]

    def run(*args):
        for indices, weights, compiled in variants:
            if all(args[i] is w for i, w in zip(indices, weights)):
                return compiled(*args)
        logger.info("lite: new weights for an already compiled graph (another module instance?); compiling for them")
        compiled, indices = build(list(args))
        variants.append((indices, [args[i] for i in indices], compiled))
        return compiled(*args)

    return run


def lite(gm: fx.GraphModule, example_inputs, options: Mapping[str, Any] | None = None, **_: Any) -> Callable:
    tag_cache_key()
    recipe, calib = parse_options(options)
    if recipe.is_noop:
        return _compile(gm, example_inputs)
    return _per_weights(lambda inputs: _lite(gm, inputs, recipe, calib), example_inputs)


def _lite(gm: fx.GraphModule, example_inputs, recipe, calib) -> tuple[Callable, list[int]]:
    """(compiled function of Dynamo's full input list, indices of the inputs lifted into constants)."""
    training = torch.is_grad_enabled()
    try:
        canonical, kept, notes = lift_linear_weights(gm, example_inputs, keep_trainable=training)
        graph_calib = None if calib is None else graph_calibration(gm, example_inputs, kept, calib)
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
        rewritten, reports = apply_recipe(canonical, recipe, graph_calib)
    except TorchliteError:
        raise
    except Exception as exc:  # a graph the passes cannot handle: never break the user's model
        logger.warning("lite: passes failed (%s: %s); compiling with plain Inductor", type(exc).__name__, exc)
        return _inductor(gm, example_inputs), []
    for report in reports:
        logger.info("lite:\n%s", report)
    if not any(r.layers for r in reports):
        logger.info("lite: nothing to rewrite in this graph")
        return _compile(gm, example_inputs), []
    _register_sources(rewritten, gm)
    try:
        compiled = _compile(rewritten, [example_inputs[i] for i in kept])
    except Exception as exc:
        logger.warning("lite: compiling the rewritten graph failed (%s: %s); using plain Inductor", type(exc).__name__, exc)
        return _inductor(gm, example_inputs), []
    kept_set = set(kept)
    lifted = [i for i in range(len(example_inputs)) if i not in kept_set]
    return _drop_inputs(compiled, kept), lifted
