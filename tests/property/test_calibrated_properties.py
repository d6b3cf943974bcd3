"""Hypothesis properties of calibration-based quantization (GPTQ for linear, log and vector codes; AWQ)
against round-to-nearest / nearest-centroid coding."""
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from torchlite.numerics.stats import InputStats
from torchlite.numerics.gptq_awq import awq, gptq, gptq_log, gptq_sweep, gptq_vector, row_errors
from torchlite.numerics.linear import quantize_weight
from torchlite.numerics.log import quantize_log
from torchlite.numerics.vector import quantize_vector

from slow_budget import rerun_slow

configs = st.one_of(
    st.builds(lambda b, s: (b, None, s, "channel"), st.integers(2, 8), st.booleans()),
    st.builds(lambda b, s: (b, None, s, "tensor"), st.integers(3, 8), st.booleans()),
    st.builds(lambda b, g, s: (b, g, s, "group"), st.integers(2, 8), st.sampled_from([16, 32]), st.booleans()),
)


log_configs = st.one_of(
    st.builds(lambda b: (b, None, "channel"), st.integers(3, 8)),
    st.builds(lambda b: (b, None, "tensor"), st.integers(3, 8)),
    st.builds(lambda b, g: (b, g, "group"), st.integers(3, 8), st.sampled_from([16, 32])),
)


@st.composite
def layers(draw, width=1):
    """W [out, in] (in a multiple of `width`) and statistics of correlated inputs with a few large features."""
    n, k = draw(st.integers(1, 24)), width * draw(st.integers(1, 70 // width))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    w = torch.randn(n, k, generator=g) * draw(st.floats(1e-2, 1e2))
    x = torch.randn(k + draw(st.integers(-k + 1, 32)), k, generator=g) @ (torch.eye(k) + 0.3 * torch.randn(k, k, generator=g))
    x[:, : max(1, k // 8)] *= 10
    stats = InputStats(k)
    stats.update(x)
    return w, stats


def _output_error(w, qw, stats):
    return float(row_errors(w, qw.effective_weight(), stats.covariance).sum())


def _slack(w, stats):
    """Float32 rounding of the stored result, relative to the layer's output energy."""
    return 1e-6 * float(row_errors(w, torch.zeros_like(w), stats.covariance).sum()) + 1e-12


@settings(max_examples=80, deadline=None)
@given(layers(), configs, st.booleans())
def test_gptq_output_error_not_above_rtn(layer, cfg, act_order):
    w, stats = layer
    rtn = _output_error(w, quantize_weight(w, *cfg), stats)
    assert _output_error(w, gptq(w, stats, *cfg, act_order=act_order), stats) <= rtn + _slack(w, stats)


@settings(max_examples=60, deadline=None)
@given(layers(), configs)
def test_awq_output_error_not_above_rtn(layer, cfg):
    w, stats = layer
    rtn = _output_error(w, quantize_weight(w, *cfg), stats)
    assert _output_error(w, awq(w, stats, *cfg), stats) <= rtn + _slack(w, stats)


@settings(max_examples=60, deadline=None)
@given(layers(), configs, st.booleans())
def test_representable_weights_are_kept_exactly(layer, cfg, act_order):
    w, stats = layer
    on_grid = quantize_weight(w, *cfg).dequantize()
    for qw in (gptq(on_grid, stats, *cfg, act_order=act_order), awq(on_grid, stats, *cfg)):
        torch.testing.assert_close(qw.effective_weight(), on_grid, rtol=1e-6, atol=1e-6 * on_grid.abs().max().item())


@settings(max_examples=40, deadline=None)
@given(layers(), configs)
def test_storage_is_what_the_kernels_read(layer, cfg):
    w, stats = layer
    rtn = quantize_weight(w, *cfg)
    for qw in (gptq(w, stats, *cfg), awq(w, stats, *cfg)):
        assert (qw.qdata.dtype, qw.qdata.shape, qw.scale.shape) == (rtn.qdata.dtype, rtn.qdata.shape, rtn.scale.shape)
        assert (qw.zero is None) == (rtn.zero is None)


@settings(max_examples=60, deadline=None)
@given(layers(), log_configs, st.booleans())
def test_gptq_log_output_error_not_above_rtn(layer, cfg, act_order):
    w, stats = layer
    rtn = quantize_log(w, *cfg)
    qw = gptq_log(w, stats, *cfg, act_order=act_order)
    assert _output_error(w, qw, stats) <= _output_error(w, rtn, stats) + _slack(w, stats)
    assert (qw.qdata.dtype, qw.qdata.shape) == (rtn.qdata.dtype, rtn.qdata.shape) and torch.equal(qw.scale, rtn.scale)


@settings(max_examples=40, deadline=None)
@given(layers(), st.integers(1, 3), st.booleans())
def test_gptq_sweep_keeps_representable_weights(layer, width, act_order):
    """Weights already on the grid come back unchanged from the sweep itself (no error to spread), in
    units of one or more columns, in either order (the per-row fallback to RTN is not involved)."""
    w, stats = layer
    k = w.shape[1] // width * width
    assume(k > 0)
    on_grid = torch.round(w[:, :k] * 4)
    h = stats.covariance[:k, :k] + 1e-3 * torch.eye(k, dtype=torch.float64)
    out = gptq_sweep(on_grid, h, width, lambda unit, rest: torch.round(rest[:, :width]), act_order)
    assert torch.equal(out, on_grid)


@st.composite
def vector_layers(draw):
    d = draw(st.integers(2, 4))
    w, stats = draw(layers(width=d))
    n, gs = w.shape[0], draw(st.sampled_from([None, 8]))
    smallest_group = n - gs * ((n - 1) // gs) if gs else n
    size = draw(st.integers(1, min(32, smallest_group * (w.shape[1] // d))))
    return w, stats, d, size, gs


@settings(max_examples=60, deadline=None)
@given(vector_layers(), st.booleans())
def test_gptq_vector_output_error_not_above_nearest_centroids(case, act_order):
    """Same codebooks and row scales as nearest-centroid coding (quantize_vector), codes chosen with error
    feedback: never more output error on the calibration data, every code a centroid of its group."""
    w, stats, d, size, gs = case
    rtn = quantize_vector(w, d, size, gs)
    qw = gptq_vector(w, stats, d, size, gs, act_order=act_order)
    assert _output_error(w, qw, stats) <= _output_error(w, rtn, stats) + _slack(w, stats)
    assert torch.equal(qw.codebook, rtn.codebook) and torch.equal(qw.scale, rtn.scale)
    assert (qw.qdata.dtype, qw.qdata.shape) == (rtn.qdata.dtype, rtn.qdata.shape)


@st.composite
def correlated_layers(draw):
    """W [n, k] and the statistics of strongly correlated inputs: X = Z A + 1% noise, r << k latent factors
    (at least 4: with fewer, a few rows' RTN error can be small by chance) mixed into k features."""
    n, k = draw(st.integers(8, 24)), draw(st.integers(32, 96))
    r = draw(st.integers(4, k // 8))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    w = torch.randn(n, k, generator=g) * draw(st.floats(1e-2, 1e2))
    x = torch.randn(draw(st.integers(k, 3 * k)), r, generator=g) @ torch.randn(r, k, generator=g)
    stats = InputStats(k)
    stats.update(x + 0.01 * torch.randn(x.shape, generator=g))
    return w, stats


def _hessian_error(w, approx, stats):
    """tr(Δ H Δᵀ), Δ = W - Ŵ, H = E[xᵀx] over the calibration inputs."""
    d = w.double() - approx.double()
    return float(torch.trace(d @ stats.covariance @ d.T))


# GPTQ's error below 70% of RTN's: the worst ratios hypothesis found when searching for them (hypothesis.target,
# 2 x 1,500 examples of each property) were 0.48 for linear and 0.37 for log codes; the median is ~0.05.
GPTQ_MARGIN = 0.7
groupings = st.sampled_from([(None, "channel"), (16, "group"), (32, "group")])


@settings(max_examples=40, deadline=None)
@given(correlated_layers(), groupings, st.booleans(), st.booleans())
def test_gptq_clearly_beats_rtn_on_correlated_inputs(layer, grouping, symmetric, act_order):
    """On correlated inputs GPTQ's output error is a fraction of round-to-nearest's, not merely not above it
    (a GPTQ that returned RTN's result would pass the "not above" properties, not this one)."""
    w, stats = layer
    cfg = (4, grouping[0], symmetric, grouping[1])
    rtn = _hessian_error(w, quantize_weight(w, *cfg).effective_weight(), stats)
    gq = _hessian_error(w, gptq(w, stats, *cfg, act_order=act_order).effective_weight(), stats)
    assert gq < GPTQ_MARGIN * rtn, f"GPTQ {gq:.4g} vs RTN {rtn:.4g}"


@settings(max_examples=40, deadline=None)
@given(correlated_layers(), st.integers(3, 5), groupings, st.booleans())
def test_gptq_log_clearly_beats_rtn_on_correlated_inputs(layer, bits, grouping, act_order):
    """Likewise for log codes. (Vector codes are left out: with small codebooks the error feedback often
    lands on the nearest centroids anyway, and GPTQ then equals nearest-centroid coding.)"""
    w, stats = layer
    rtn = _hessian_error(w, quantize_log(w, bits, *grouping).effective_weight(), stats)
    gq = _hessian_error(w, gptq_log(w, stats, bits, *grouping, act_order=act_order).effective_weight(), stats)
    assert gq < GPTQ_MARGIN * rtn, f"GPTQ {gq:.4g} vs RTN {rtn:.4g}"


# Reruns with the slow suite's budget (`make test-slow`; slow_budget.py).
test_gptq_output_error_not_above_rtn_slow = rerun_slow(test_gptq_output_error_not_above_rtn, layers(), configs, st.booleans())
test_awq_output_error_not_above_rtn_slow = rerun_slow(test_awq_output_error_not_above_rtn, layers(), configs)
test_gptq_log_output_error_not_above_rtn_slow = rerun_slow(test_gptq_log_output_error_not_above_rtn, layers(), log_configs, st.booleans())
test_gptq_vector_output_error_not_above_nearest_centroids_slow = rerun_slow(test_gptq_vector_output_error_not_above_nearest_centroids, vector_layers(), st.booleans())
test_gptq_clearly_beats_rtn_on_correlated_inputs_slow = rerun_slow(test_gptq_clearly_beats_rtn_on_correlated_inputs, correlated_layers(), groupings, st.booleans(), st.booleans())
test_gptq_log_clearly_beats_rtn_on_correlated_inputs_slow = rerun_slow(test_gptq_log_clearly_beats_rtn_on_correlated_inputs, correlated_layers(), st.integers(3, 5), groupings, st.booleans())
