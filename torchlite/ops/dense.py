"""Floating-point linear: `torchlite::linear(x, weight, bias)` -> x @ W.T + b.

The same product as `F.linear` (the eager implementation, and the test oracle of the lowering);
a separate op so that torchlite's Inductor lowering (`torchlite.inductor.dense`) can run
decode-shaped calls as a bandwidth-bound reduction instead of a BLAS GEMV, which reaches only a
fraction of this CPU's read bandwidth at batch 1. Gradients flow to x, the weight and the bias.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import TorchliteError


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise TorchliteError(
            f"torchlite::linear got x {tuple(x.shape)} and weight {tuple(weight.shape)}; it needs weight [out, in] "
            "and x [..., in]"
        )
    if not (x.is_floating_point() and weight.is_floating_point()):
        raise TorchliteError(f"torchlite::linear is for floating point, got x {x.dtype} and weight {weight.dtype}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise TorchliteError(f"bias has shape {tuple(bias.shape)}, expected ({weight.shape[0]},)")


@torch.library.custom_op("torchlite::linear", mutates_args=())
def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    _check(x, weight, bias)
    return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


@linear.register_fake
def _(x, weight, bias):
    _check(x, weight, bias)
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _setup(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    g2, x2 = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
    grad_x = (grad @ weight.to(grad.dtype)).to(x.dtype)
    grad_w = (g2.t() @ x2.to(g2.dtype)).to(weight.dtype)
    grad_b = None if ctx.bias_dtype is None else g2.sum(0).to(ctx.bias_dtype)
    return grad_x, grad_w, grad_b


linear.register_autograd(_backward, setup_context=_setup)
