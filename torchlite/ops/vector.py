"""Vector-quantized (codebook) weight-only ops; numerics in `torchlite.numerics.vector`.

- `torchlite::dequantize_vector(qdata, scale, codebook, group_size, in_features, dtype)` -> W[N, K]
- `torchlite::qlinear_vector(x, qdata, scale, codebook, bias, group_size, in_features)` -> x @ Ŵ.T + b

`codebook` is float32 [G, C, d]; `scale` float32 [N, 1]; `qdata` the codes (two per byte when C <= 16,
else in 64-row tiles; `torchlite.numerics.vector`). The eager
implementations dequantize and accumulate in float32: the oracle of the lowerings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import TorchliteError
from ..numerics.vector import TILE_ROWS
from ..numerics import vector as vector_codes
from .quant import check_x, register_weight_only_autograd


def check_vector_weight(qdata, scale, codebook, group_size: int, in_features: int) -> None:
    if codebook.dim() != 3 or codebook.dtype != torch.float32 or not 2 <= codebook.shape[1] <= 256:
        raise TorchliteError(f"a codebook is float32 [groups, 2..256 centroids, d], got {tuple(codebook.shape)} {codebook.dtype}")
    if scale.dim() != 2 or scale.shape[1] != 1 or scale.dtype != torch.float32:
        raise TorchliteError(f"row scales must be float32 [out, 1], got {tuple(scale.shape)} {scale.dtype}")
    groups, size, d = codebook.shape
    n, count = scale.shape[0], in_features // d
    want = (n, (count + 1) // 2) if size <= 16 else (-(-n // TILE_ROWS), count, TILE_ROWS)
    want_groups = -(-n // group_size) if group_size else 1
    if in_features % d or tuple(qdata.shape) != want or qdata.dtype != torch.uint8 or groups != want_groups:
        raise TorchliteError(
            f"vector-quantized weight {tuple(qdata.shape)} {qdata.dtype} with codebook {tuple(codebook.shape)} and {n} row "
            f"scales does not match in_features={in_features}, group_size={group_size} (uint8 {list(want)} codes, "
            f"{want_groups} codebook(s)): storage and metadata disagree"
        )


@torch.library.custom_op("torchlite::dequantize_vector", mutates_args=())
def dequantize_vector(
    qdata: torch.Tensor, scale: torch.Tensor, codebook: torch.Tensor, group_size: int, in_features: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    check_vector_weight(qdata, scale, codebook, group_size, in_features)
    return vector_codes.dequantize_vector(qdata, scale, codebook, group_size, in_features, dtype)


@dequantize_vector.register_fake
def _(qdata, scale, codebook, group_size, in_features, dtype):
    check_vector_weight(qdata, scale, codebook, group_size, in_features)
    return qdata.new_empty((scale.shape[0], in_features), dtype=dtype)


@torch.library.custom_op("torchlite::qlinear_vector", mutates_args=())
def qlinear_vector(
    x: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor, codebook: torch.Tensor, bias: torch.Tensor | None,
    group_size: int, in_features: int,
) -> torch.Tensor:
    check_x(x, in_features)
    check_vector_weight(qdata, scale, codebook, group_size, in_features)
    w = vector_codes.dequantize_vector(qdata, scale, codebook, group_size, in_features)
    return F.linear(x.float(), w, None if bias is None else bias.float()).to(x.dtype)


@qlinear_vector.register_fake
def _(x, qdata, scale, codebook, bias, group_size, in_features):
    check_x(x, in_features)
    check_vector_weight(qdata, scale, codebook, group_size, in_features)
    return x.new_empty((*x.shape[:-1], scale.shape[0]))


register_weight_only_autograd(qlinear_vector, torch.ops.torchlite.dequantize_vector, 3)
