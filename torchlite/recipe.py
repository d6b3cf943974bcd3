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
from .numerics.schemes import SCHEMES

GRANULARITIES = ("tensor", "channel", "group")
FACTOR_METHODS = ("svd", "asvd", "whiten")
QUANTIZE_METHODS = ("rtn", "gptq", "awq", "smoothquant")
ACTIVATIONS = (None, "dynamic", "static")
PRUNE_STRUCTURES = ("unstructured", "n:m", "neuron", "head", "channel")
PRUNE_IMPORTANCES = ("l1", "l2", "wanda", "taylor")
PRUNE_SCOPES = ("layer", "global")
SCHEDULE_KINDS = ("cubic", "linear")


@dataclass(frozen=True)
class Quantize:
    """Weight-only quantization of linear layers: linear (uniform), logarithmic or vector.

    scheme: "linear" (uniform grid, the default), "log" (sign + power-of-two levels scale·2^-e, one
        scale = max|w| per tensor/channel/group) or "vector" (k-means codebook of `vector_dim`-long
        sub-vectors of the rows, each row times a power-of-two scale near its RMS). "log" and
        "vector" are weight-only round-to-nearest, symmetric.
    bits: linear 2..8 (default 8), log 3..8 (default 4). Values of 5-8 bits are stored one per
        int8/uint8 byte; 2-4 bits are packed two per byte (so 2- and 3-bit weights take as many
        bytes as 4-bit ones). Vector: the bits of one code, ceil(log2(codebook_size)) (set one of the two).
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
    log_offset: log only, in [0, 1): shifts the levels down by this fraction of an octave, scale =
        max|w|·2^-log_offset (0: the largest level is max|w| exactly; the largest weights saturate).
    vector_dim: vector only, 2..8 (default 4): consecutive input features per sub-vector; it must
        divide every quantized layer's in_features.
    codebook_size: vector only, 2..256 (default 2^bits, or 256): centroids per codebook, one
        codebook per layer or, with group_size, per group_size output rows (any positive multiple
        of 16); codes take one byte, or half a byte when codebook_size <= 16.
    """

    bits: int | None = None
    group_size: int | None = None
    symmetric: bool = True
    granularity: str | None = None
    exclude: tuple[str, ...] = ()
    method: str = "rtn"
    damp: float = 0.01
    act_order: bool = False
    activations: str | None = None
    overrides: Mapping[str, Any] | None = None
    scheme: str = "linear"
    log_offset: float = 0.0
    vector_dim: int | None = None
    codebook_size: int | None = None

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise TorchliteError(f"Quantize.scheme={self.scheme!r} is unknown; allowed: {', '.join(SCHEMES)}")
        self._resolve_bits()
        gs = self.group_size
        if gs is not None and (isinstance(gs, bool) or not isinstance(gs, int) or gs < 16 or gs % 16):
            raise TorchliteError(
                f"Quantize.group_size={gs!r} is not supported; use None (per channel) or a positive "
                "multiple of 16 such as 32, 64, 128"
            )
        gran = self.granularity or ("group" if gs is not None else "tensor" if self.scheme == "vector" else "channel")
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
        self._check_scheme(gran)
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

    def _resolve_bits(self) -> None:
        """Check bits against the scheme and fill in the defaults of bits, vector_dim, codebook_size."""
        bits = self.bits
        if self.scheme == "vector":
            dim = 4 if self.vector_dim is None else self.vector_dim
            if isinstance(dim, bool) or not isinstance(dim, int) or not 2 <= dim <= 8:
                raise TorchliteError(f"Quantize.vector_dim={dim!r} is not supported; use an int in 2..8 (input features per sub-vector)")
            size = self.codebook_size
            if size is None:
                size = 2**bits if isinstance(bits, int) and not isinstance(bits, bool) and 1 <= bits <= 8 else 256
            if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= 256:
                raise TorchliteError(
                    f"Quantize.codebook_size={size!r} is not supported; use an int in 2..256 (codes are stored in one byte)"
                )
            code_bits = max(1, (size - 1).bit_length())
            if bits is not None and bits != code_bits:
                raise TorchliteError(
                    f"Quantize.bits={bits!r} disagrees with codebook_size={size} ({code_bits}-bit codes) for scheme='vector'; "
                    "set only one of them"
                )
            for key, value in (("bits", code_bits), ("vector_dim", dim), ("codebook_size", size)):
                object.__setattr__(self, key, value)
            return
        low, default = SCHEMES[self.scheme].bits
        bits = default if bits is None else bits
        if isinstance(bits, bool) or not isinstance(bits, int) or not low <= bits <= 8:
            which = "" if self.scheme == "linear" else f" by scheme={self.scheme!r}"
            raise TorchliteError(f"Quantize.bits={bits!r} is not supported{which}; use an int in {low}..8")
        object.__setattr__(self, "bits", bits)

    def _check_scheme(self, granularity: str) -> None:
        """Options that belong to another scheme, and combinations log/vector do not implement."""
        off = self.log_offset
        if isinstance(off, bool) or not isinstance(off, (int, float)) or not 0 <= off < 1:
            raise TorchliteError(f"Quantize.log_offset={off!r} must be in [0, 1) (a fraction of an octave)")
        if off and self.scheme != "log":
            raise TorchliteError(f"Quantize.log_offset applies to scheme='log' only, not {self.scheme!r}; drop it")
        if self.scheme != "vector" and (self.vector_dim is not None or self.codebook_size is not None):
            raise TorchliteError(f"Quantize.vector_dim/codebook_size apply to scheme='vector' only, not {self.scheme!r}; drop them")
        if self.scheme == "linear":
            return
        this = f"scheme={self.scheme!r}"
        if self.activations:
            raise TorchliteError(
                f"Quantize.activations={self.activations!r} (W8A8) needs scheme='linear'; {this} is weight-only: "
                "drop activations or use scheme='linear'"
            )
        if self.method not in ("rtn", "gptq"):
            raise TorchliteError(
                f"Quantize.method={self.method!r} is implemented for scheme='linear' only; use method='rtn' or 'gptq' "
                f"with {this}"
            )
        if not self.symmetric:
            raise TorchliteError(f"Quantize.symmetric=False does not apply to {this} (it is sign-symmetric); drop it")
        if self.scheme == "vector" and granularity == "channel":
            raise TorchliteError(
                "scheme='vector' has one codebook per layer (granularity='tensor', the default) or per group_size "
                "output rows (granularity='group'); per-channel codebooks are not supported"
            )

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

    @property
    def schemes(self) -> set[str]:
        """The schemes this config and its overrides use."""
        return {self.scheme} | {c.scheme for c in self.overrides.values() if c is not None}


def check_calibration(cfg, calib) -> None:
    """Raise when a pass config needs calibration data and none was given."""
    if calib is not None or cfg is None or not cfg.needs_calibration:
        return
    needs = [
        f"{k}={getattr(cfg, k)!r}" for k in ("method", "activations", "importance")
        if getattr(cfg, k, None) not in (None, "rtn", "svd", "l1", "l2")
    ]
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
    rank_multiple: ranks chosen by ratio (rounded down), energy (up) or budget (to the nearest) are
        multiples of this where the layer allows: the compiled decode reduces a rank of whole
        16-float vectors in one loop, any other in three. 1: ranks as computed; a
        fixed `rank` is always used as given.
    exclude: fully-qualified names (or name suffixes, or glob patterns) of layers to leave dense.
    """

    rank: int | None = None
    ratio: float | None = None
    energy: float | None = None
    budget: float | None = None
    method: str = "svd"
    min_saving: float = 0.1
    rank_multiple: int = 16
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
        rm = self.rank_multiple
        if isinstance(rm, bool) or not isinstance(rm, int) or rm < 1:
            raise TorchliteError(f"Factor.rank_multiple={rm!r} must be a positive int (1: no rounding)")
        object.__setattr__(self, "exclude", _names(self.exclude))

    @property
    def needs_calibration(self) -> bool:
        return self.method != "svd"


@dataclass(frozen=True)
class Schedule:
    """Iterative pruning: reach the target sparsity in `steps` steps, s_t = s * f(t / steps), with
    f(u) = 1 - (1 - u)^3 ("cubic", Zhu & Gupta 2017: large steps first) or f(u) = u ("linear").
    A callback given to the pass (or to torchlite.compress) runs after every step, e.g. to fine-tune;
    torch.manual_seed(seed + step) is set before each call so that runs repeat exactly."""

    steps: int = 4
    kind: str = "cubic"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise TorchliteError(f"Schedule.steps={self.steps!r} must be a positive int")
        if self.kind not in SCHEDULE_KINDS:
            raise TorchliteError(f"Schedule.kind={self.kind!r} is unknown; allowed: {', '.join(SCHEDULE_KINDS)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TorchliteError(f"Schedule.seed={self.seed!r} must be an int")

    def sparsities(self, target: float) -> list[float]:
        """The sparsity reached after each step; the last one is `target`."""
        frac = [(t / self.steps) for t in range(1, self.steps + 1)]
        shape = [1 - (1 - u) ** 3 for u in frac] if self.kind == "cubic" else frac
        return [target * f for f in shape]


@dataclass(frozen=True)
class Prune:
    """Pruning of linear layers.

    sparsity: the fraction removed, in [0, 1): of the weights ("unstructured"), or of the units of
        each dependency group ("neuron", "head", "channel"). For "n:m" it is 1 - n/m (leave it None).
    structure: "unstructured" (exact zeros in dense weights), "n:m" (n kept in every m consecutive
        input weights, stored compressed and run by the torchlite::nm_linear kernel), "neuron" (MLP
        hidden units), "head" (attention heads; whole KV groups under grouped-query attention),
        "channel" (every resolvable dependency group). Structured pruning shrinks the tensors.
    n, m: the N:M pattern (0 < n < m; m must divide every pruned layer's input features).
    importance: "l1" (|w|), "l2" (w^2), "wanda" (|w| times the input's L2 norm, from calibration)
        or "taylor" (|gradient x weight| of a loss on the calibration data, see docs/recipes.md).
    scope: "layer" (each layer or group pruned to `sparsity`) or "global" (one ranking across all).
    schedule: None (one shot) or a Schedule (or dict) for iterative pruning.
    exclude: layer names (or suffixes, or glob patterns) to leave dense.
    round_to: structured pruning keeps a multiple of this many units per group (at least one
        multiple), e.g. 16 or 64 so shrunk widths stay whole vectors / GEMM tiles; 1: exact sparsity.
    """

    sparsity: float | None = None
    structure: str = "unstructured"
    n: int = 2
    m: int = 4
    importance: str = "l1"
    scope: str = "layer"
    schedule: Schedule | None = None
    exclude: tuple[str, ...] = ()
    round_to: int = 1

    def __post_init__(self) -> None:
        if self.structure not in PRUNE_STRUCTURES:
            raise TorchliteError(f"Prune.structure={self.structure!r} is unknown; allowed: {', '.join(PRUNE_STRUCTURES)}")
        for key in ("n", "m", "round_to"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise TorchliteError(f"Prune.{key}={v!r} must be a positive int")
        if self.structure == "n:m":
            if not self.n < self.m:
                raise TorchliteError(f"Prune n:m needs 0 < n < m, got {self.n}:{self.m} (e.g. n=2, m=4)")
            implied = 1 - self.n / self.m
            if self.sparsity is not None and abs(self.sparsity - implied) > 1e-9:
                raise TorchliteError(
                    f"Prune.sparsity={self.sparsity!r} contradicts {self.n}:{self.m} (sparsity {implied:g}); leave sparsity unset"
                )
            if self.scope != "layer":
                raise TorchliteError("Prune.scope='global' does not apply to n:m (every group of m keeps n); use scope='layer'")
            object.__setattr__(self, "sparsity", implied)
        elif self.sparsity is None:
            object.__setattr__(self, "sparsity", 0.5)
        s = self.sparsity
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1:
            raise TorchliteError(f"Prune.sparsity={s!r} must be in [0, 1)")
        if self.importance not in PRUNE_IMPORTANCES:
            raise TorchliteError(f"Prune.importance={self.importance!r} is unknown; allowed: {', '.join(PRUNE_IMPORTANCES)}")
        if self.scope not in PRUNE_SCOPES:
            raise TorchliteError(f"Prune.scope={self.scope!r} is unknown; allowed: {', '.join(PRUNE_SCOPES)}")
        schedule = self.schedule
        if isinstance(schedule, Mapping):
            schedule = _from_dict(Schedule, "prune.schedule", schedule)
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TorchliteError(f"Prune.schedule must be None, a Schedule or a dict, not {type(schedule).__name__}")
        if self.round_to != 1 and not self.structured:
            raise TorchliteError(f"Prune.round_to applies to structured pruning, not structure={self.structure!r}")
        if schedule is not None and self.structure == "n:m":
            raise TorchliteError("Prune n:m is one shot (the pattern is fixed); drop the schedule")
        object.__setattr__(self, "schedule", schedule)
        object.__setattr__(self, "exclude", _names(self.exclude))

    @property
    def structured(self) -> bool:
        return self.structure in ("neuron", "head", "channel")

    @property
    def needs_calibration(self) -> bool:
        return self.importance in ("wanda", "taylor")


@dataclass(frozen=True)
class Recipe:
    """What to do to a model, in a fixed order: prune, factor, then quantize (what is left is
    factored, the factors get quantized)."""

    prune: Prune | None = None
    factor: Factor | None = None
    quantize: Quantize | None = None

    ORDER = ("prune", "factor", "quantize")

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

_PASS_CONFIGS: dict[str, type] = {"prune": Prune, "factor": Factor, "quantize": Quantize}


def _from_dict(cls: type, name: str, value: Mapping[str, Any]) -> Any:
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise TorchliteError(f"unknown {name} option(s) {unknown}; allowed: {', '.join(allowed)}")
    return cls(**value)


def _parse_pass(name: str, value: Any) -> Any:
    cls = _PASS_CONFIGS[name]
    if value is None or isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise TorchliteError(f"recipe[{name!r}] must be a {cls.__name__} or a dict, not {type(value).__name__}")
    return _from_dict(cls, name, value)


def parse_recipe(spec: Recipe | Prune | Factor | Quantize | str | Mapping[str, Any] | None) -> Recipe:
    """Turn a preset name, a dict, a Recipe or one pass config (Prune, Factor, Quantize) into a validated Recipe."""
    if spec is None:
        return PRESETS["int8"]
    if isinstance(spec, Recipe):
        return spec
    for name, kind in (("prune", Prune), ("factor", Factor), ("quantize", Quantize)):
        if isinstance(spec, kind):
            return Recipe(**{name: spec})
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise TorchliteError(f"unknown recipe preset {spec!r}; allowed: {', '.join(PRESETS)}")
        return PRESETS[spec]
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(Recipe.ORDER))
        if unknown:
            raise TorchliteError(f"unknown recipe key(s) {unknown}; allowed: {', '.join(Recipe.ORDER)}")
        return Recipe(**{k: _parse_pass(k, v) for k, v in spec.items()})
    raise TorchliteError(
        f"a recipe is a preset name, a dict, a Recipe or a Prune / Factor / Quantize, not {type(spec).__name__}"
    )


def to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain JSON-able data (inverse of parse_recipe for dicts)."""
    return {k: dataclasses.asdict(v) if v is not None else None for k, v in vars(recipe).items()}
