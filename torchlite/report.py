"""The report every pass returns, and the plain-text tables it prints."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .graph.cost import Cost, total


class Costed:
    """Bytes read off the `before` / `after` Cost of a report or one of its layers."""

    @property
    def bytes_before(self) -> int:
        return self.before.bytes

    @property
    def bytes_after(self) -> int:
        return self.after.bytes


@dataclass
class Report(Costed):
    """What a pass changed. `layers`: one record per rewritten layer, each with `name` and the cost
    model's `before` / `after` (params, bytes, FLOPs); `others`: (name, before, after) of what the
    totals count besides them (layers left dense, attention FLOPs); `skipped`: (layer, why left alone)."""

    config: Any
    layers: list = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    others: list[tuple[str, Cost, Cost]] = field(default_factory=list)

    @property
    def before(self) -> Cost:
        return total([lay.before for lay in self.layers] + [b for _, b, _ in self.others])

    @property
    def after(self) -> Cost:
        return total([lay.after for lay in self.layers] + [a for _, _, a in self.others])


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f}"
