"""Weight-only quantized ops.

- `torchlite::quantize(weight, bits, group_size, symmetric, granularity)` -> (qdata, scale, zero);
  zero is an empty tensor when symmetric
- `torchlite::dequantize(qdata, scale, zero, bits, group_size, in_features, dtype)` -> W[N, K]
- `torchlite::qlinear(x, qdata, scale, zero, bias, bits, group_size, in_features)` -> x @ W.T + b

The eager implementations are the reference (the test oracle of the Inductor lowerings): they
dequantize with `torchlite.numerics.dequantize_weight` and accumulate in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import TorchliteError
from ..numerics.linear import (
    block_size, dequantize_weight, padded_in_features, quantize_weight, storage_dtype, storage_shape,
)


def check_qweight(qdata, scale, zero, bits: int, group_size: int, in_features: int) -> None:
    """Validate a quantized weight's storage against its metadata (shapes and dtypes)."""
    kp = padded_in_features(in_features, bits, group_size)
    want_cols = storage_shape(1, in_features, bits, group_size)[1]
    if qdata.dim() != 2 or qdata.shape[1] != want_cols:
        raise TorchliteError(
            f"quantized weight has shape {tuple(qdata.shape)}, expected [out, {want_cols}] for "
            f"in_features={in_features}, bits={bits}, group_size={group_size}: storage and metadata disagree"
        )
    want_dtype = storage_dtype(bits, symmetric=zero is None)
    if qdata.dtype != want_dtype:
        raise TorchliteError(f"quantized weight has dtype {qdata.dtype}, expected {want_dtype}")
    n = qdata.shape[0]
    if scale.dim() != 2 or scale.shape[0] not in (1, n) or kp % scale.shape[1]:
        raise TorchliteError(f"scale of shape {tuple(scale.shape)} does not fit a weight of shape [{n}, {kp}]")
    if zero is not None and zero.shape != scale.shape:
        raise TorchliteError(f"zero point shape {tuple(zero.shape)} differs from scale shape {tuple(scale.shape)}")


@torch.library.custom_op("torchlite::quantize", mutates_args=())
def quantize(
    weight: torch.Tensor, bits: int, group_size: int, symmetric: bool, granularity: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    qw = quantize_weight(weight, bits, group_size or None, symmetric, granularity)
    zero = qw.zero if qw.zero is not None else weight.new_empty(0, dtype=torch.uint8)
    return qw.qdata, qw.scale, zero


@quantize.register_fake
def _(weight, bits, group_size, symmetric, granularity):
    n, k = weight.shape
    gs = group_size if granularity == "group" else 0
    kp = padded_in_features(k, bits, gs)
    rows, cols = {"tensor": (1, 1), "channel": (n, 1), "group": (n, kp // block_size(bits, gs))}[granularity]
    qdata = weight.new_empty(storage_shape(n, k, bits, gs), dtype=storage_dtype(bits, symmetric))
    scale = weight.new_empty((rows, cols), dtype=torch.float32)
    zero = weight.new_empty((0,) if symmetric else (rows, cols), dtype=torch.uint8)
    return qdata, scale, zero


@torch.library.custom_op("torchlite::dequantize", mutates_args=())
def dequantize(
    qdata: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor | None,
    bits: int,
    group_size: int,
    in_features: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    check_qweight(qdata, scale, zero, bits, group_size, in_features)
    return dequantize_weight(qdata, scale, zero, bits, group_size, in_features, dtype)


@dequantize.register_fake
def _(qdata, scale, zero, bits, group_size, in_features, dtype):
    check_qweight(qdata, scale, zero, bits, group_size, in_features)
    return qdata.new_empty((qdata.shape[0], in_features), dtype=dtype)


def check_x(x: torch.Tensor, in_features: int, op: str = "qlinear") -> None:
    if x.dim() < 1 or x.shape[-1] != in_features:
        raise TorchliteError(
            f"{op} got an input of shape {tuple(x.shape)}; its last dimension must be in_features={in_features}"
        )
    if not x.is_floating_point():
        raise TorchliteError(f"{op} needs a floating-point input, got {x.dtype}")


@torch.library.custom_op("torchlite::qlinear", mutates_args=())
def qlinear(
    x: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor | None,
    bias: torch.Tensor | None,
    bits: int,
    group_size: int,
    in_features: int,
) -> torch.Tensor:
    check_x(x, in_features)
    check_qweight(qdata, scale, zero, bits, group_size, in_features)
    w = dequantize_weight(qdata, scale, zero, bits, group_size, in_features, torch.float32)
    out = F.linear(x.float(), w, None if bias is None else bias.float())
    return out.to(x.dtype)


@qlinear.register_fake
def _(x, qdata, scale, zero, bias, bits, group_size, in_features):
    check_x(x, in_features)
    check_qweight(qdata, scale, zero, bits, group_size, in_features)
    return x.new_empty((*x.shape[:-1], qdata.shape[0]))


def register_weight_only_autograd(op, dequantize_op, n_weight: int) -> None:
    """Gradients of y = x Ŵᵀ + b for `op(x, *weight, bias, *meta)` (weight: `n_weight` tensors) to x
    and bias, with Ŵ = dequantize_op(*weight, *meta, dtype); the stored weight gets none."""

    def setup_context(ctx, inputs, output):
        x, weight, bias, meta = inputs[0], inputs[1 : 1 + n_weight], inputs[1 + n_weight], inputs[2 + n_weight :]
        ctx.save_for_backward(*weight)
        ctx.meta = (meta, x.dtype, bias is not None and bias.requires_grad)

    def backward(ctx, grad):
        meta, x_dtype, bias_grad = ctx.meta
        w = dequantize_op(*ctx.saved_tensors, *meta, grad.dtype)
        grad_x = (grad @ w).to(x_dtype)
        grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0) if bias_grad else None
        return grad_x, *[None] * n_weight, grad_bias, *[None] * len(meta)

    op.register_autograd(backward, setup_context=setup_context)


register_weight_only_autograd(qlinear, torch.ops.torchlite.dequantize, 3)


def quantize_activation(x2: torch.Tensor, x_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 codes, scale [M, 1]) of activations x2 [M, K]: per token, Δ = max|x| / 127 (dynamic),
    or the calibrated static scale."""
    if x_scale is None:
        x_scale = (x2.abs().amax(-1, keepdim=True) / 127).clamp_min(1e-12)
    codes = torch.clamp(torch.round(x2 / x_scale), -127, 127).to(torch.int8)
    return codes, x_scale.expand(x2.shape[0], 1)


@torch.library.custom_op("torchlite::qlinear_a8", mutates_args=())
def qlinear_a8(
    x: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    in_features: int,
    x_scale: torch.Tensor | None,
) -> torch.Tensor:
    """W8A8: x quantized to int8 (per token on the fly, or with a static scale [1, 1]), int8 x int8
    dot products accumulated exactly in integers, then scaled: y = (xq · qᵀ) Δx Δw + b."""
    check_x(x, in_features)
    check_qweight(qdata, scale, None, 8, 0, in_features)
    x2 = x.reshape(-1, in_features).float()
    codes, sx = quantize_activation(x2, x_scale)
    codes = F.pad(codes, (0, qdata.shape[1] - in_features))
    acc = codes.double() @ qdata.double().t()  # exact: |sum| < 2^53
    out = acc.float() * sx * scale.reshape(1, -1)
    if bias is not None:
        out = out + bias.float()
    return out.reshape(*x.shape[:-1], qdata.shape[0]).to(x.dtype)


@qlinear_a8.register_fake
def _(x, qdata, scale, bias, in_features, x_scale):
    check_x(x, in_features)
    check_qweight(qdata, scale, None, 8, 0, in_features)
    return x.new_empty((*x.shape[:-1], qdata.shape[0]))
