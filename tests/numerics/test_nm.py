"""N:M numerics: masks, the compressed storage and its round trip, errors."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchlite import TorchliteError
from torchlite.numerics import nm_mask, pack_nm, unpack_nm

NM = st.sampled_from([(1, 2), (1, 4), (2, 4), (3, 4), (2, 8), (4, 8), (7, 8), (2, 3), (5, 16)])


@st.composite
def sparse_weights(draw, dtype=torch.float32):
    """(N:M sparse W, n, m): random groups count (16 or not dividing it), some groups sparser than n."""
    n, m = draw(NM)
    rows, groups = draw(st.integers(1, 6)), draw(st.sampled_from([1, 3, 16, 17, 48]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    w = torch.randn(rows, groups * m, generator=g)
    w = w * nm_mask(w.abs(), n, m) * (torch.rand(w.shape, generator=g) > 0.2)
    return w.to(dtype), n, m


@settings(max_examples=60, deadline=None)
@given(NM, st.integers(1, 5), st.integers(1, 6), st.integers(0, 2**16))
def test_mask_keeps_the_n_best_of_each_group_lowest_index_on_ties(nm, rows, groups, seed):
    n, m = nm
    scores = torch.randint(0, 4, (rows, groups * m), generator=torch.Generator().manual_seed(seed)).float()  # many ties
    mask = nm_mask(scores, n, m)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    for row, keep in zip(scores.reshape(-1, m).tolist(), mask.reshape(-1, m).tolist()):
        best = sorted(range(m), key=lambda i: (-row[i], i))[:n]
        assert [i for i in range(m) if keep[i]] == sorted(best)


@settings(max_examples=60, deadline=None)
@given(sparse_weights(), st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
def test_float_round_trip_is_exact(wnm, dtype):
    w, n, m = wnm
    w = w.to(dtype)
    packed = pack_nm(w, n, m)
    assert packed.values.dtype == dtype and packed.scale is None
    assert packed.values.shape == (w.shape[0], w.shape[1] * n // m)
    assert torch.equal(unpack_nm(packed), w)


@settings(max_examples=60, deadline=None)
@given(sparse_weights())
def test_int8_round_trip(wnm):
    w, n, m = wnm
    packed = pack_nm(w, n, m, int8=True)
    assert packed.values.dtype == torch.int8 and packed.scale.shape == (w.shape[0], 1)
    wd = unpack_nm(packed)
    assert (wd[w == 0] == 0).all()
    assert ((wd - w).abs() <= packed.scale / 2 * (1 + 1e-6)).all()
    assert torch.equal(unpack_nm(pack_nm(wd, n, m, int8=True)), wd)  # the dequantized weight is a fixed point


def test_storage_is_small():
    w = torch.randn(64, 256)
    w = w * nm_mask(w.abs(), 2, 4)
    fp32, int8 = pack_nm(w, 2, 4), pack_nm(w, 2, 4, int8=True)
    assert fp32.indices.dtype == torch.uint8 and fp32.indices.shape == (64, 32)  # a nibble per group of 4
    assert fp32.nbytes == 64 * (128 * 4 + 32)
    assert int8.nbytes == 64 * (128 + 32 + 4)
    assert pack_nm(torch.zeros(4, 32), 4, 8).indices.shape == (4, 8)  # 4:8: 3-bit offsets, two bytes per group


def test_errors_name_the_fix():
    w = torch.randn(4, 12)
    with pytest.raises(TorchliteError, match="m=8 does not divide in_features=12"):
        nm_mask(w, 2, 8)
    for n, m in [(0, 4), (4, 4), (5, 4)]:
        with pytest.raises(TorchliteError, match="0 < n < m"):
            pack_nm(w, n, m)
    with pytest.raises(TorchliteError, match="apply nm_mask"):
        pack_nm(w, 2, 4)
    with pytest.raises(TorchliteError, match="2-D"):
        nm_mask(torch.randn(12), 2, 4)
    with pytest.raises(TorchliteError, match="2-D float"):
        pack_nm(torch.ones(4, 12, dtype=torch.int32), 2, 4)
    with pytest.raises(TorchliteError, match="NaN"):
        nm_mask(torch.full((2, 4), float("nan")), 2, 4)
