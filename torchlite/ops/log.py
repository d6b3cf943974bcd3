"""Log-quantized (sign + power-of-two) weight-only ops; numerics in `torchlite.numerics.log`.

- `torchlite::dequantize_log(qdata, scale, bits, group_size, in_features, dtype)` -> W[N, K]
- `torchlite::qlinear_log(x, qdata, scale, bias, bits, group_size, in_features)` -> x @ Ŵ.T + b

The eager implementations dequantize and accumulate in float32: the oracle of the lowerings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import TorchliteError
from ..numerics.linear import padded_in_features, storage_shape
from ..numerics import log as log_codes
from .quant import check_x, register_weight_only_autograd


def check_log_weight(qdata, scale, bits: int, group_size: int, in_features: int) -> None:
    if not 3 <= bits <= 8:
        raise TorchliteError(f"log-quantized weights have 3..8 bits, got {bits}")
    cols = storage_shape(1, in_features, bits, group_size)[1]
    if qdata.dim() != 2 or qdata.shape[1] != cols or qdata.dtype != torch.uint8:
        raise TorchliteError(
            f"log-quantized weight {tuple(qdata.shape)} {qdata.dtype} does not match uint8 [out, {cols}] for "
            f"in_features={in_features}, bits={bits}, group_size={group_size}: storage and metadata disagree"
        )
    kp, n = padded_in_features(in_features, bits, group_size), qdata.shape[0]
    if scale.dim() != 2 or scale.shape[0] not in (1, n) or kp % scale.shape[1]:
        raise TorchliteError(f"scale of shape {tuple(scale.shape)} does not fit a weight of shape [{n}, {kp}]")


@torch.library.custom_op("torchlite::dequantize_log", mutates_args=())
def dequantize_log(
    qdata: torch.Tensor, scale: torch.Tensor, bits: int, group_size: int, in_features: int, dtype: torch.dtype
) -> torch.Tensor:
    check_log_weight(qdata, scale, bits, group_size, in_features)
    return log_codes.dequantize_log(qdata, scale, bits, group_size, in_features, dtype)


@dequantize_log.register_fake
def _(qdata, scale, bits, group_size, in_features, dtype):
    check_log_weight(qdata, scale, bits, group_size, in_features)
    return qdata.new_empty((qdata.shape[0], in_features), dtype=dtype)


@torch.library.custom_op("torchlite::qlinear_log", mutates_args=())
def qlinear_log(
    x: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
    bits: int, group_size: int, in_features: int,
) -> torch.Tensor:
    check_x(x, in_features)
    check_log_weight(qdata, scale, bits, group_size, in_features)
    w = log_codes.dequantize_log(qdata, scale, bits, group_size, in_features)
    return F.linear(x.float(), w, None if bias is None else bias.float()).to(x.dtype)


@qlinear_log.register_fake
def _(x, qdata, scale, bias, bits, group_size, in_features):
    check_x(x, in_features)
    check_log_weight(qdata, scale, bits, group_size, in_features)
    return x.new_empty((*x.shape[:-1], qdata.shape[0]))


register_weight_only_autograd(qlinear_log, torch.ops.torchlite.dequantize_log, 2)
