"""Configuration: one dataclass per pass and the Recipe that orders them.

This module is the single source of truth for configuration: the backend options, the CLI and the
Python API all parse into these dataclasses, and every invalid key or value raises a
`TorchliteError` that lists what is allowed.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, fields
from typing import Any, Mapping

from .errors import TorchliteError

GRANULARITIES = ("tensor", "channel", "group")
FACTOR_METHODS = ("svd", "asvd", "whiten")
QUANTIZE_METHODS = ("rtn", "gptq", "awq", "smoothquant")
ACTIVATIONS = (None, "dynamic", "static")


@dataclass(frozen=True)
class Quantize:
    """Linear (uniform) weight-only quantization of linear layers.

    bits: 2..8. Values of 5-8 bits are stored one per int8/uint8 byte; 2-4 bits are packed two per
        byte (so 2- and 3-bit weights take as many bytes as 4-bit ones).
    group_size: quantize each row in groups of this many input features (a multiple of 16);
        None means one scale per output channel (or per tensor, see granularity).
    symmetric: Δ = max|w| / (2^(bits-1) - 1), no zero point; else Δ = (max - min) / (2^bits - 1)
        with an integer zero point.
    granularity: "tensor", "channel" or "group"; defaults to "group" when group_size is set,
        otherwise "channel".
    exclude: fully-qualified names (or name suffixes) of layers to leave in floating point.
    method: "rtn" (round to nearest), "gptq" (Hessian-based error compensation), "awq"
        (activation-aware per-input scaling) or "smoothquant" (W8A8 only: migrates activation
        outliers into the weights); all but "rtn" need calibration data.
    damp: GPTQ's damping, as a fraction of the mean Hessian diagonal added to it.
    act_order: GPTQ quantizes columns in order of decreasing activation energy.
    activations: None (weight-only), "dynamic" (W8A8: int8 activations with a per-token scale
        computed on the fly, int8 x int8 -> int32 dot products) or "static" (W8A8 with one
        activation scale per layer from calibration data). W8A8 needs bits=8, symmetric, per channel.
    overrides: {layer name or glob pattern: Quantize | dict | None} for mixed precision: the first
        matching pattern gives a layer its own config (None keeps it in floating point), e.g.
        {"lm_head": Quantize(bits=8)}. Patterns match like `exclude`.
    """

    bits: int = 8
    group_size: int | None = None
    symmetric: bool = True
    granularity: str | None = None
    exclude: tuple[str, ...] = ()
    method: str = "rtn"
    damp: float = 0.01
    act_order: bool = False
    activations: str | None = None
    overrides: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise TorchliteError(f"Quantize.bits={self.bits!r} is not supported; use an int in 2..8")
        gs = self.group_size
        if gs is not None and (isinstance(gs, bool) or not isinstance(gs, int) or gs < 16 or gs % 16):
            raise TorchliteError(
                f"Quantize.group_size={gs!r} is not supported; use None (per channel) or a positive "
                "multiple of 16 such as 32, 64, 128"
            )
        gran = self.granularity or ("group" if gs is not None else "channel")
        if gran not in GRANULARITIES:
            raise TorchliteError(
                f"Quantize.granularity={self.granularity!r} is unknown; allowed: {', '.join(GRANULARITIES)}"
            )
        if gran == "group" and gs is None:
            raise TorchliteError("Quantize.granularity='group' needs a group_size, e.g. group_size=128")
        if gran != "group" and gs is not None:
            raise TorchliteError(f"Quantize.group_size is only valid with granularity='group', not {gran!r}")
        if not isinstance(self.symmetric, bool):
            raise TorchliteError(f"Quantize.symmetric must be True or False, not {self.symmetric!r}")
        if self.method not in QUANTIZE_METHODS:
            raise TorchliteError(f"Quantize.method={self.method!r} is unknown; allowed: {', '.join(QUANTIZE_METHODS)}")
        if isinstance(self.damp, bool) or not isinstance(self.damp, (int, float)) or not 0 < self.damp <= 1:
            raise TorchliteError(f"Quantize.damp={self.damp!r} must be in (0, 1], e.g. 0.01")
        if not isinstance(self.act_order, bool):
            raise TorchliteError(f"Quantize.act_order must be True or False, not {self.act_order!r}")
        if self.activations not in ACTIVATIONS:
            raise TorchliteError(f"Quantize.activations={self.activations!r} is unknown; allowed: None, 'dynamic', 'static'")
        if self.activations and (self.bits != 8 or not self.symmetric or gran != "channel"):
            raise TorchliteError(
                f"Quantize.activations={self.activations!r} (W8A8) needs bits=8, symmetric=True and per-channel "
                f"weights; got bits={self.bits}, symmetric={self.symmetric}, granularity={gran!r}"
            )
        if self.method == "smoothquant" and not self.activations:
            raise TorchliteError("Quantize.method='smoothquant' is for W8A8: set activations='dynamic' or 'static'")
        if self.act_order and self.method != "gptq":
            raise TorchliteError("Quantize.act_order only applies to method='gptq'")
        object.__setattr__(self, "granularity", gran)
        object.__setattr__(self, "exclude", _names(self.exclude))
        object.__setattr__(self, "overrides", _overrides(self.overrides))

    def for_layer(self, name: str) -> "Quantize | None":
        """The config of layer `name`: its first matching override, else this config."""
        for pattern, cfg in self.overrides.items():
            if matches(name, (pattern,)):
                return cfg
        return self

    @property
    def needs_calibration(self) -> bool:
        own = self.method != "rtn" or self.activations == "static"
        return own or any(c is not None and c.needs_calibration for c in self.overrides.values())

    @property
    def packed(self) -> bool:
        """Two values per byte (bits <= 4)."""
        return self.bits <= 4


def check_calibration(cfg, calib) -> None:
    """Raise when a pass config needs calibration data and none was given."""
    if calib is not None or cfg is None or not cfg.needs_calibration:
        return
    needs = [f"{k}={getattr(cfg, k)!r}" for k in ("method", "activations") if getattr(cfg, k, None) not in (None, "rtn", "svd")]
    raise TorchliteError(
        f"{type(cfg).__name__}({', '.join(needs) or 'overrides=...'}) needs calibration data: "
        "pass calib=<iterable of input batches, e.g. token ids>"
    )


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether a layer name matches one of `patterns`: the name, a dotted suffix of it, or a glob."""
    return any(name == p or name.endswith("." + p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def _overrides(value) -> dict[str, "Quantize | None"]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TorchliteError(f"Quantize.overrides must be a dict {{layer pattern: Quantize | dict | None}}, not {type(value).__name__}")
    out = {}
    for pattern, cfg in value.items():
        if isinstance(cfg, Mapping):
            cfg = _parse_pass("quantize", cfg)
        if cfg is not None and not isinstance(cfg, Quantize):
            raise TorchliteError(f"Quantize.overrides[{pattern!r}] must be a Quantize, a dict or None, not {type(cfg).__name__}")
        if cfg is not None and cfg.overrides:
            raise TorchliteError(f"Quantize.overrides[{pattern!r}] has overrides of its own; nest them in the outer config")
        out[str(pattern)] = cfg
    return out


def _names(value) -> tuple[str, ...]:
    """A layer-name list; a single string is one name (not its characters)."""
    return (value,) if isinstance(value, str) else tuple(value)


def _fraction(owner: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise TorchliteError(f"{owner}={value!r} must be a number strictly between 0 and 1")


@dataclass(frozen=True)
class Factor:
    """Low-rank factorization of linear layers: W [out, in] -> B [out, r] @ A [r, in].

    Exactly one of:
    rank: the same rank r for every layer (1 <= r <= min(in, out) of every layer).
    ratio: per layer, the fraction of its parameters to keep (0 < ratio < 1).
    energy: per layer, the smallest rank keeping this fraction of the squared singular values
        (of the activation-weighted matrix for "asvd"/"whiten"), 0 < energy < 1.
    budget: the fraction of the parameters of all factorable linear layers to keep, split across
        layers by how little output energy each rank unit carries (0 < budget < 1).
    method: "svd" (plain truncated SVD), "asvd" (columns scaled by mean |activation|^alpha, alpha
        searched per layer on the calibration data) or "whiten" (SVD of W times the Cholesky factor
        of the input covariance: the truncation minimizes the layer's output error on the
        calibration data). "asvd" and "whiten" need calibration data.
    min_saving: a layer is only factored where r*(in+out) <= (1 - min_saving) * in*out.
    exclude: fully-qualified names (or name suffixes, or glob patterns) of layers to leave dense.
    """

    rank: int | None = None
    ratio: float | None = None
    energy: float | None = None
    budget: float | None = None
    method: str = "svd"
    min_saving: float = 0.1
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        chosen = [k for k in ("rank", "ratio", "energy", "budget") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise TorchliteError(
                f"Factor needs exactly one of rank, ratio, energy, budget; got {chosen or 'none'}"
            )
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0):
            raise TorchliteError(f"Factor.rank={self.rank!r} must be a positive int")
        for key in ("ratio", "energy", "budget"):
            if getattr(self, key) is not None:
                _fraction(f"Factor.{key}", getattr(self, key))
        if self.method not in FACTOR_METHODS:
            raise TorchliteError(f"Factor.method={self.method!r} is unknown; allowed: {', '.join(FACTOR_METHODS)}")
        ms = self.min_saving
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 <= ms < 1:
            raise TorchliteError(f"Factor.min_saving={ms!r} must be in [0, 1)")
        object.__setattr__(self, "exclude", _names(self.exclude))

    @property
    def needs_calibration(self) -> bool:
        return self.method != "svd"


@dataclass(frozen=True)
class Recipe:
    """What to do to a model, in a fixed order: factor, then quantize (the factors get quantized)."""

    factor: Factor | None = None
    quantize: Quantize | None = None

    ORDER = ("factor", "quantize")

    @property
    def is_noop(self) -> bool:
        return all(getattr(self, name) is None for name in self.ORDER)


PRESETS: dict[str, Recipe] = {
    "none": Recipe(),
    "int8": Recipe(quantize=Quantize(bits=8)),
    "int4": Recipe(quantize=Quantize(bits=4, group_size=128)),
    "int4-gptq": Recipe(quantize=Quantize(bits=4, group_size=128, method="gptq")),
    "int4-awq": Recipe(quantize=Quantize(bits=4, group_size=128, method="awq")),
    "w8a8": Recipe(quantize=Quantize(bits=8, activations="dynamic")),
    "w8a8-smoothquant": Recipe(quantize=Quantize(bits=8, activations="dynamic", method="smoothquant")),
}

_PASS_CONFIGS: dict[str, type] = {"factor": Factor, "quantize": Quantize}


def _parse_pass(name: str, value: Any) -> Any:
    cls = _PASS_CONFIGS[name]
    if value is None or isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise TorchliteError(f"recipe[{name!r}] must be a {cls.__name__} or a dict, not {type(value).__name__}")
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise TorchliteError(f"unknown {name} option(s) {unknown}; allowed: {', '.join(allowed)}")
    return cls(**value)


def parse_recipe(spec: Recipe | str | Mapping[str, Any] | None) -> Recipe:
    """Turn a preset name, a dict or a Recipe into a validated Recipe."""
    if spec is None:
        return PRESETS["int8"]
    if isinstance(spec, Recipe):
        return spec
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise TorchliteError(f"unknown recipe preset {spec!r}; allowed: {', '.join(PRESETS)}")
        return PRESETS[spec]
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(Recipe.ORDER))
        if unknown:
            raise TorchliteError(f"unknown recipe key(s) {unknown}; allowed: {', '.join(Recipe.ORDER)}")
        return Recipe(**{k: _parse_pass(k, v) for k, v in spec.items()})
    raise TorchliteError(f"a recipe is a preset name, a dict or a Recipe, not {type(spec).__name__}")


def to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain JSON-able data (inverse of parse_recipe for dicts)."""
    return {k: dataclasses.asdict(v) if v is not None else None for k, v in vars(recipe).items()}
