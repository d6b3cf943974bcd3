"""Per-layer quantization sensitivity, and mixed precision picked from it under a size budget.

    report = sensitivity(model, {"int4 g128": Quantize(bits=4, group_size=128), "int8": Quantize(bits=8)},
                         calib=batches, evaluate=lambda m: perplexity(m, ids))
    print(report)                      # per layer: output error and perplexity change of each scheme
    report.plot("sensitivity.png")
    cfg = report.mixed_precision(0.25)  # a Quantize with per-layer overrides, <= 25 % of fp32 bytes
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..calibration import observe_modules
from ..numerics.stats import output_error
from ..errors import TorchliteError
from ..numerics.schemes import quantize
from ..recipe import Quantize
from ..report import table


@dataclass
class LayerSensitivity:
    name: str
    fp32_bytes: int
    bytes: dict[str, int] = field(default_factory=dict)  # scheme -> stored bytes
    output_error: dict[str, float] = field(default_factory=dict)  # scheme -> relative output error (calibration)
    ppl_delta: dict[str, float] = field(default_factory=dict)  # scheme -> perplexity change (relative) alone


@dataclass
class SensitivityReport:
    schemes: dict[str, Quantize]
    base_perplexity: float
    layers: list[LayerSensitivity]

    def __str__(self) -> str:
        names = list(self.schemes)
        headers = ["layer"] + [f"{s} out err" for s in names] + [f"{s} Δppl %" for s in names]
        rows = [
            [lay.name] + [lay.output_error[s] for s in names] + [f"{100 * lay.ppl_delta[s]:+.3f}" for s in names]
            for lay in self.layers
        ]
        return f"sensitivity (base perplexity {self.base_perplexity:.3f}; each layer quantized alone)\n" + table(headers, rows)

    def plot(self, path) -> None:
        """A PNG: per layer (x, in model order), the perplexity change of each scheme (log scale)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, len(self.layers) * 0.08), 7), sharex=True)
        x = range(len(self.layers))
        for scheme in self.schemes:
            top.plot(x, [max(lay.ppl_delta[scheme] * 100, 1e-4) for lay in self.layers], ".-", label=scheme, lw=0.8)
            bottom.plot(x, [lay.output_error[scheme] for lay in self.layers], ".-", label=scheme, lw=0.8)
        top.set(yscale="log", ylabel="perplexity change, % (layer alone; <= 0 drawn at 1e-4)",
                title=f"Quantization sensitivity per layer (base perplexity {self.base_perplexity:.2f})")
        bottom.set(yscale="log", ylabel="relative output error (calibration)", xlabel="layer")
        step = max(1, len(self.layers) // 40)
        bottom.set_xticks(list(x)[::step], [lay.name for lay in self.layers][::step], rotation=90, fontsize=6)
        for ax in (top, bottom):
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    def mixed_precision(self, size: float) -> Quantize:
        """Per-layer schemes whose bytes are at most `size` x the layers' fp32 bytes, chosen greedily:
        every layer starts at its smallest scheme, then the upgrade that removes the most perplexity
        per extra byte is taken while the budget allows. Returns a Quantize with overrides."""
        fp32 = sum(lay.fp32_bytes for lay in self.layers)
        budget = size * fp32
        order = sorted(self.schemes, key=lambda s: sum(lay.bytes[s] for lay in self.layers))
        choice = {lay.name: order[0] for lay in self.layers}
        used = sum(lay.bytes[order[0]] for lay in self.layers)
        if used > budget:
            raise TorchliteError(
                f"a size of {size} x fp32 cannot be met: the smallest scheme {order[0]!r} alone takes "
                f"{used / fp32:.3f} x; add a smaller scheme or raise the size"
            )
        while True:
            best = None
            for lay in self.layers:
                now = choice[lay.name]
                for s in order:
                    extra = lay.bytes[s] - lay.bytes[now]
                    gain = lay.ppl_delta[now] - lay.ppl_delta[s]
                    if extra > 0 and gain > 0 and used + extra <= budget and (best is None or gain / extra > best[0]):
                        best = (gain / extra, lay.name, s, extra)
            if best is None:
                break
            _, name, s, extra = best
            choice[name], used = s, used + extra
        default = max(set(choice.values()), key=list(choice.values()).count)
        overrides = {name: self.schemes[s] for name, s in choice.items() if s != default}
        return dataclasses.replace(self.schemes[default], overrides=overrides)


@torch.no_grad()
def sensitivity(
    model: torch.nn.Module, schemes: dict[str, Quantize], calib, evaluate: Callable[[torch.nn.Module], float],
    layers: list[str] | None = None,
) -> SensitivityReport:
    """Quantize each linear layer alone with each scheme; record its output error on the calibration
    data and `evaluate(model)` (a perplexity: lower is better, > 0) with only that layer changed.
    `layers` (default: every nn.Linear) limits the layers measured."""
    if not schemes:
        raise TorchliteError("sensitivity needs at least one scheme, e.g. {'int4': Quantize(bits=4, group_size=128)}")
    linears = {n: m for n, m in model.named_modules() if type(m) is torch.nn.Linear}
    names = layers if layers is not None else list(linears)
    unknown = [n for n in names if n not in linears]
    if unknown:
        raise TorchliteError(f"sensitivity: {unknown} are not nn.Linear layers of the model")
    stats = observe_modules(model, names, calib, "sensitivity")
    base = evaluate(model)
    out = []
    for name in tqdm(names, desc="sensitivity", leave=False):
        layer = linears[name]
        w = layer.weight
        rec = LayerSensitivity(name, w.numel() * w.element_size())
        for label, cfg in schemes.items():
            qw = quantize(w, cfg, stats[name])
            approx = qw.effective_weight().to(w.dtype)
            rec.bytes[label] = qw.nbytes
            rec.output_error[label] = output_error(w, approx, stats[name])
            _swap(model, name, torch.nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None), approx, layer.bias)
            try:
                rec.ppl_delta[label] = evaluate(model) / base - 1
            finally:
                _swap(model, name, layer)
        out.append(rec)
    if any(math.isnan(v) for rec in out for v in rec.ppl_delta.values()):
        raise TorchliteError("sensitivity: a perplexity came out NaN; check the model and eval_ids")
    return SensitivityReport(dict(schemes), base, out)


def _swap(model, name, module, weight=None, bias=None) -> None:
    if weight is not None:
        module.weight.data = weight
        if bias is not None:
            module.bias.data = bias.detach()
    parent_name, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, leaf, module)
