"""Importance scores for pruning (torchlite.numerics.importance) against values worked out by hand."""
import math

import pytest
import torch

from torchlite import TorchliteError
from torchlite.numerics.importance import kept_units, layer_mask, unit_scores, weight_scores
from torchlite.numerics.stats import InputStats

W = torch.tensor([[1.0, -2.0, 0.5], [-3.0, 0.25, 4.0]])


def test_l1_and_l2_are_the_weights_magnitude_and_square():
    assert torch.equal(weight_scores(W, "l1"), torch.tensor([[1.0, 2.0, 0.5], [3.0, 0.25, 4.0]]))
    assert torch.equal(weight_scores(W, "l2"), torch.tensor([[1.0, 4.0, 0.25], [9.0, 0.0625, 16.0]]))
    half = weight_scores(W.half(), "l1")
    assert half.dtype == torch.float32 and half.shape == W.shape


def test_wanda_weights_each_input_by_its_norm_over_every_calibration_token():
    """|w_ij| * ||x_j||_2, the norm over all tokens of all batches (InputStats' Gram diagonal)."""
    stats = InputStats(3)
    stats.update(torch.tensor([[[1.0, 0.0, 2.0], [1.0, 3.0, 0.0]]]))  # [batch, seq, in]
    stats.update(torch.tensor([[1.0, -4.0, 0.0]]))  # a second batch: the norms keep accumulating
    norms = torch.tensor([math.sqrt(3.0), 5.0, 2.0])  # sqrt(1+1+1), sqrt(0+9+16), sqrt(4+0+0)
    expected = torch.tensor([[1.0 * norms[0], 2.0 * 5.0, 0.5 * 2.0], [3.0 * norms[0], 0.25 * 5.0, 4.0 * 2.0]])
    torch.testing.assert_close(weight_scores(W, "wanda", stats), expected, rtol=1e-6, atol=0)
    assert not torch.allclose(weight_scores(W, "wanda", stats), weight_scores(W, "l1"))


def test_wanda_ranks_against_magnitude():
    """A small weight on a loud input outranks a large weight on a quiet one."""
    stats = InputStats(2)
    stats.update(torch.tensor([[100.0, 0.01]]))
    s = weight_scores(torch.tensor([[0.1, 10.0]]), "wanda", stats)
    torch.testing.assert_close(s, torch.tensor([[10.0, 0.1]]))
    assert torch.equal(layer_mask(s, 0.5, per_row=True), torch.tensor([[True, False]]))


def test_taylor_is_the_signed_product_of_gradient_and_weight():
    grad = torch.tensor([[0.5, 0.5, -2.0], [0.0, 8.0, -0.25]])
    expected = torch.tensor([[0.5, -1.0, -1.0], [0.0, 2.0, -1.0]])
    assert torch.equal(weight_scores(W, "taylor", grad=grad), expected)
    # a large weight with no gradient scores zero; the ranking by |g w| is not the ranking by |w|
    assert torch.equal(weight_scores(W, "taylor", grad=grad).abs().argsort(1), torch.tensor([[0, 1, 2], [0, 2, 1]]))


@pytest.mark.parametrize("importance, kwargs, message", [
    ("wanda", {}, "calibration"),
    ("taylor", {}, "calibration"),
    ("random", {}, "unknown importance"),
])
def test_missing_inputs_are_clear_errors(importance, kwargs, message):
    with pytest.raises(TorchliteError, match=message):
        weight_scores(W, importance, **kwargs)


def test_unit_scores_sum_each_units_slice_of_producers_and_consumers():
    """Two units over a producer [4, 3] (two rows each) and a consumer [2, 4] (two columns each)."""
    producer = torch.arange(12.0).reshape(4, 3) - 5  # rows: unit 0 = rows 0, 1; unit 1 = rows 2, 3
    consumer = torch.tensor([[1.0, -1.0, 2.0, 0.5], [-3.0, 1.0, 0.0, -0.5]])  # unit 0 = columns 0, 1
    parts = [(producer, 0), (consumer, 1)]
    unsigned = unit_scores([(p.abs(), axis) for p, axis in parts], 2, signed=False)
    hand_abs = [
        sum(abs(v) for v in producer[0:2].flatten().tolist()) + sum(abs(v) for v in consumer[:, 0:2].flatten().tolist()),
        sum(abs(v) for v in producer[2:4].flatten().tolist()) + sum(abs(v) for v in consumer[:, 2:4].flatten().tolist()),
    ]
    assert unsigned.dtype == torch.float64 and unsigned.tolist() == hand_abs == [15.0 + 6.0, 21.0 + 3.0]
    # Taylor: the signed products are summed over the unit first, then the absolute value is taken
    signed = unit_scores(parts, 2, signed=True)
    hand_signed = [abs(float(producer[0:2].sum() + consumer[:, 0:2].sum())), abs(float(producer[2:4].sum() + consumer[:, 2:4].sum()))]
    assert signed.tolist() == hand_signed == [17.0, 23.0]
    assert kept_units(unsigned, 1) == [1] and kept_units(torch.tensor([2.0, 1.0, 3.0]), 1) == [0, 2]


def test_unit_scores_of_heads_cover_whole_blocks():
    """Units of a head group are blocks of head_dim rows: 3 heads of 2 rows in a producer [6, 1]."""
    producer = torch.tensor([[1.0], [1.0], [5.0], [-5.0], [0.5], [0.25]])
    assert unit_scores([(producer.abs(), 0)], 3, signed=False).tolist() == [2.0, 10.0, 0.75]
    assert unit_scores([(producer, 0)], 3, signed=True).tolist() == [2.0, 0.0, 0.75]  # the signed head cancels
