"""Importance scores and keep-masks for pruning, as plain tensor functions.

Weights: L1 |w|, L2 w^2, Wanda |w| * ||x_j||_2 (the input feature's norm over the calibration
tokens), Taylor |g * w| (first-order estimate of the loss change when w is removed). Structured
units (neurons, heads) sum their weights' scores; for Taylor the signed g * w products are summed
first (the unit is removed as a whole), then the absolute value is taken.
"""
from __future__ import annotations

import torch

from .stats import InputStats
from ..errors import TorchliteError


def weight_scores(weight: torch.Tensor, importance: str, stats: InputStats | None = None, grad: torch.Tensor | None = None) -> torch.Tensor:
    """Per-weight importance (float32, the weight's shape); signed g * w for "taylor"."""
    w = weight.detach().float()
    if importance == "l1":
        return w.abs()
    if importance == "l2":
        return w.square()
    if importance == "wanda":
        if stats is None:
            raise TorchliteError("importance='wanda' needs calibration data (the inputs' norms)")
        return w.abs() * stats.gram.diagonal().clamp_min(0).sqrt().float()
    if importance == "taylor":
        if grad is None:
            raise TorchliteError("importance='taylor' needs calibration data (gradients of the loss)")
        return grad.float() * w
    raise TorchliteError(f"unknown importance {importance!r}")


def keep_top(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Bool mask over the last dim keeping the `n_keep` highest scores of every row (ties: lowest index)."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :n_keep]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, order, True)


def pruned_count(total: int, sparsity: float) -> int:
    return int(round(total * sparsity))


def layer_mask(scores: torch.Tensor, sparsity: float, per_row: bool) -> torch.Tensor:
    """Keep-mask of one layer: exactly round(sparsity * size) weights removed (per row when `per_row`,
    as Wanda compares weights of the same output)."""
    if per_row:
        return keep_top(scores, scores.shape[1] - pruned_count(scores.shape[1], sparsity))
    flat = scores.reshape(1, -1)
    return keep_top(flat, flat.shape[1] - pruned_count(flat.shape[1], sparsity)).reshape(scores.shape)


def global_masks(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Keep-masks of several layers ranked together: round(sparsity * total) weights removed overall."""
    flat = torch.cat([s.reshape(-1) for s in scores.values()]).reshape(1, -1)
    keep = keep_top(flat, flat.shape[1] - pruned_count(flat.shape[1], sparsity)).reshape(-1)
    out, at = {}, 0
    for name, s in scores.items():
        out[name] = keep[at:at + s.numel()].reshape(s.shape)
        at += s.numel()
    return out


def unit_scores(parts: list[tuple[torch.Tensor, int]], units: int, signed: bool) -> torch.Tensor:
    """Score per unit from (per-weight scores, axis of the units) parts: the sum over each unit's
    slice of every part (the absolute value of the signed sum for Taylor)."""
    total = torch.zeros(units, dtype=torch.float64)
    for scores, axis in parts:
        total += scores.movedim(axis, 0).reshape(units, -1).double().sum(1)
    return total.abs() if signed else total


def kept_units(scores: torch.Tensor, n_remove: int) -> list[int]:
    """The units kept when removing the `n_remove` lowest-scoring ones (ties: the later unit goes)."""
    if n_remove >= scores.numel():
        raise TorchliteError("pruning would remove every unit of a group; lower the sparsity")
    keep = keep_top(scores.reshape(1, -1).float(), scores.numel() - n_remove).reshape(-1)
    return keep.nonzero().reshape(-1).tolist()


def rounded_removals(units: int, n_remove: int, round_to: int) -> int:
    """Units to remove so the kept count is the multiple of `round_to` nearest to units - n_remove
    (at least `round_to`, at most all units). A group of at most `round_to` units is not rounded."""
    if round_to == 1 or units <= round_to:
        return n_remove
    keep = max(round_to, round((units - n_remove) / round_to) * round_to)
    return units - min(keep, units)


def global_unit_removals(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, int]:
    """Units to remove per group under one ranking across groups. Scores are normalized by their
    group's mean (groups differ in scale); every group keeps at least one unit."""
    pool = []
    for name, s in scores.items():
        norm = s / s.mean().clamp_min(1e-30)
        pool += [(float(v), name, i) for i, v in enumerate(norm)]
    pool.sort(key=lambda t: (t[0], t[1], -t[2]))
    target = pruned_count(len(pool), sparsity)
    removed = dict.fromkeys(scores, 0)
    for _, name, _ in pool:
        if target == 0:
            break
        if removed[name] < scores[name].numel() - 1:
            removed[name] += 1
            target -= 1
    return removed
