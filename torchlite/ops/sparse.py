"""N:M sparse linear: `torchlite::nm_linear(x, values, indices, scale, bias, n, m, in_features)`
-> x @ W.T + b, with W stored as in `torchlite.numerics.nm` (`NMWeight`).

The eager implementation is the reference (the test oracle of the Inductor lowering): it unpacks
the dense weight with `torchlite.numerics.unpack_nm` and accumulates in float32. Gradients flow to
the activations and the bias (the stored weight is frozen), as for `torchlite::qlinear`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import TorchliteError
from ..numerics.nm import NMWeight, check_nm, index_columns, positions_of, unpack_nm
from .quant import check_x


def check_nm_storage(values, indices, scale, bias, n: int, m: int, in_features: int) -> None:
    """Validate N:M storage against its metadata (shapes and dtypes)."""
    check_nm(n, m, in_features)
    groups = in_features // m
    if values.dim() != 2 or values.shape[1] != n * groups:
        raise TorchliteError(
            f"N:M values have shape {tuple(values.shape)}, expected [out, {n * groups}] for n={n}, m={m}, "
            f"in_features={in_features}: storage and metadata disagree"
        )
    out = values.shape[0]
    columns = index_columns(n, m, groups)
    if indices.dtype != torch.uint8 or tuple(indices.shape) != (out, columns):
        raise TorchliteError(
            f"N:M indices are {indices.dtype} {tuple(indices.shape)}, expected uint8 ({out}, {columns})"
        )
    if values.dtype == torch.int8:
        if scale is None or scale.dtype != torch.float32 or tuple(scale.shape) != (out, 1):
            raise TorchliteError(f"int8 N:M values need a float32 scale of shape ({out}, 1)")
    elif not values.is_floating_point():
        raise TorchliteError(f"N:M values must be floating point or int8, got {values.dtype}")
    elif scale is not None:
        raise TorchliteError("float N:M values take no scale (pass scale=None)")
    if bias is not None and tuple(bias.shape) != (out,):
        raise TorchliteError(f"bias has shape {tuple(bias.shape)}, expected ({out},)")


@torch.library.custom_op("torchlite::nm_linear", mutates_args=())
def nm_linear(
    x: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    scale: torch.Tensor | None,
    bias: torch.Tensor | None,
    n: int,
    m: int,
    in_features: int,
) -> torch.Tensor:
    check_x(x, in_features, "nm_linear")
    check_nm_storage(values, indices, scale, bias, n, m, in_features)
    nmw = NMWeight(values, indices, scale, n, m, in_features)
    if (positions_of(nmw) >= m).any():
        raise TorchliteError(f"N:M indices hold positions >= m={m}: the storage is corrupt (repack with pack_nm)")
    out = F.linear(x.float(), unpack_nm(nmw, torch.float32), None if bias is None else bias.float())
    return out.to(x.dtype)


@nm_linear.register_fake
def _(x, values, indices, scale, bias, n, m, in_features):
    check_x(x, in_features, "nm_linear")
    check_nm_storage(values, indices, scale, bias, n, m, in_features)
    return x.new_empty((*x.shape[:-1], values.shape[0]))


def _setup_context(ctx, inputs, output):
    x, values, indices, scale, bias, n, m, in_features = inputs
    ctx.save_for_backward(values, indices, scale)
    ctx.meta = (n, m, in_features, x.dtype, bias is not None and bias.requires_grad)


def _backward(ctx, grad):
    values, indices, scale = ctx.saved_tensors
    n, m, in_features, x_dtype, bias_grad = ctx.meta
    w = unpack_nm(NMWeight(values, indices, scale, n, m, in_features), grad.dtype)
    grad_x = (grad @ w).to(x_dtype)
    grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0) if bias_grad else None
    return grad_x, None, None, None, grad_bias, None, None, None


nm_linear.register_autograd(_backward, setup_context=_setup_context)
