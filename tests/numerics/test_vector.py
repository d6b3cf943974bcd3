import math

import pytest
import torch

from torchlite import TorchliteError
from torchlite.numerics.vector import pack_codes, quantize_vector, row_scales, snap_to_grid, tile_codes, unpack_codes, untile_codes


def _assert_nearest(w, qw):
    """Every scaled sub-vector's stored code is a nearest centroid of its codebook (float64 distances)."""
    n, k = w.shape
    d, rows = qw.vector_dim, qw.group_size or n
    codes = qw.codes().long()
    scaled = w / qw.scale
    for g, start in enumerate(range(0, n, rows)):
        v = scaled[start : start + rows].reshape(-1, d).double()
        dist = ((v[:, None, :] - qw.codebook[g].double()[None]) ** 2).sum(-1)
        chosen = dist.gather(1, codes[start : start + rows].reshape(-1, 1)).squeeze(1)
        assert (chosen <= dist.min(1).values * (1 + 1e-9) + 1e-30).all()


@pytest.mark.parametrize("d, size, gs", [(4, 256, None), (2, 16, None), (3, 7, 32), (8, 16, 16), (4, 64, 48)])
def test_codes_are_nearest_centroids(d, size, gs):
    w = torch.randn(64, 96)
    qw = quantize_vector(w, d, size, gs)
    _assert_nearest(w, qw)
    assert qw.codebook.shape == (-(-64 // gs) if gs else 1, size, d) and qw.codebook.dtype == torch.float32
    assert qw.dequantize().shape == w.shape


@pytest.mark.parametrize("d, size, gs", [(4, 16, None), (2, 256, None), (3, 8, 16)])
def test_exact_when_distinct_subvectors_fit_the_codebook(d, size, gs):
    distinct = torch.randn(size, d)
    row = distinct[torch.randint(0, size, (10,))]  # every row a permutation of it: one row scale
    w = torch.stack([row[torch.randperm(10)] for _ in range(32)]).reshape(32, 10 * d)
    assert torch.equal(quantize_vector(w, d, size, gs).dequantize(), w)


def test_row_scales_let_rows_of_any_magnitude_share_a_codebook():
    magnitude = torch.logspace(-3, 2, 64).unsqueeze(1)
    w = torch.randn(64, 128) * magnitude
    scale = row_scales(w)
    rms = w.pow(2).mean(1, keepdim=True).sqrt()
    assert torch.equal(torch.log2(scale), torch.round(torch.log2(scale)))  # powers of two
    assert ((scale / rms) <= 2**0.5 + 1e-6).all() and ((rms / scale) <= 2**0.5 + 1e-6).all()
    qw = quantize_vector(w, 2, 16)
    row_error = (qw.dequantize() - w).norm(dim=1) / w.norm(dim=1)
    assert row_error.max() < 0.5, "the small rows must not round to noise"
    assert torch.equal(row_scales(torch.zeros(2, 8)), torch.ones(2, 1))


@pytest.mark.parametrize("magnitude", [1e-6, 0.3, 1.0, 127.0, 5e4])
def test_codebooks_are_snapped_to_the_smallest_int8_grid(magnitude):
    """Elements are integers in ±127 times a power of two, the smallest that holds the largest one (the
    rule the VQ kernel applies per call); snapping moves no element by more than half a step."""
    cb = torch.randn(64, 4) * magnitude
    snapped = snap_to_grid(cb)
    top = snapped.abs().max().item()
    step = 2.0 ** math.floor(math.log2(top / 127))
    step = step if top <= 127 * step else 2 * step
    ints = snapped / step
    assert torch.equal(ints, torch.round(ints)) and ints.abs().max() <= 127 and ints.abs().max() > 63
    assert ((snapped - cb).abs() <= step / 2).all()
    assert torch.equal(snap_to_grid(snapped), snapped)
    qw = quantize_vector(torch.randn(32, 256) * magnitude, 4, 16)  # k-means codebooks are snapped
    assert torch.equal(snap_to_grid(qw.codebook), qw.codebook)
    assert torch.equal(snap_to_grid(torch.zeros(4, 2)), torch.zeros(4, 2))


def test_deterministic_for_a_seed():
    w = torch.randn(48, 64)
    a, b = quantize_vector(w, 4, 32, seed=3), quantize_vector(w, 4, 32, seed=3)
    assert torch.equal(a.qdata, b.qdata) and torch.equal(a.codebook, b.codebook)
    c = quantize_vector(w, 4, 32, seed=4)
    assert not torch.equal(a.codebook, c.codebook)


def test_kmeans_beats_its_seeding():
    """Lloyd steps lower the error below a codebook of random sub-vectors."""
    w = torch.randn(128, 64)
    qw = quantize_vector(w, 4, 32)
    v = w.reshape(-1, 4)
    random_book = v[torch.randperm(len(v))[:32]]
    random_err = torch.cdist(v, random_book).min(1).values.square().sum()
    assert (qw.dequantize() - w).square().sum() < 0.8 * random_err


def test_storage_and_bits_per_weight():
    w = torch.randn(32, 40)
    q8 = quantize_vector(w, 4, 256)  # byte codes: one 64-row tile, rows 32..63 zero padding
    assert q8.qdata.shape == (1, 10, 64) and q8.qdata.dtype == torch.uint8 and q8.bits == 8
    assert q8.nbytes * 8 == 64 * 10 * 8 + 256 * 4 * 32 + 32 * 32  # codes (stored tile), codebook, row scales
    assert q8.qdata[:, :, 32:].eq(0).all() and torch.equal(q8.qdata[0, 3, 5], q8.codes()[5, 3])
    q4 = quantize_vector(w, 8, 16)  # 5 codes per row: packed into 3 bytes
    assert q4.qdata.shape == (32, 3) and q4.bits == 4
    codes = torch.randint(0, 16, (3, 7), dtype=torch.uint8)
    assert torch.equal(unpack_codes(pack_codes(codes), 7), codes)
    rows = torch.randint(0, 256, (130, 7), dtype=torch.uint8)
    tiles = tile_codes(rows)
    assert tiles.shape == (3, 7, 64) and torch.equal(tiles[2, 4, 1], rows[129, 4]) and torch.equal(untile_codes(tiles, 130), rows)
    assert pack_codes(codes)[0, 0].item() == codes[0, 0].item() | codes[0, 1].item() << 4


def test_bad_shapes_name_the_problem_and_the_fix():
    with pytest.raises(TorchliteError, match=r"in_features=30, not a multiple of vector_dim=4.*2, 3, 5, 6"):
        quantize_vector(torch.randn(8, 30), 4, 16)
    with pytest.raises(TorchliteError, match=r"only 16 sub-vectors.*codebook_size=32.*smaller codebook_size"):
        quantize_vector(torch.randn(4, 16), 4, 32)
    with pytest.raises(TorchliteError, match=r"only 16 sub-vectors.*larger group_size"):
        quantize_vector(torch.randn(18, 32), 4, 32, group_size=16)  # the last group has 2 rows
