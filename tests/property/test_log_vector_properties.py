"""Hypothesis properties of the log and vector quantization numerics."""
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchlite.numerics.log import levels, quantize_log
from torchlite.numerics.vector import quantize_vector

from slow_budget import rerun_slow

log_configs = st.one_of(
    st.builds(lambda b: (b, None, "channel"), st.integers(3, 8)),
    st.builds(lambda b: (b, None, "tensor"), st.integers(3, 8)),
    st.builds(lambda b, g: (b, g, "group"), st.integers(3, 8), st.sampled_from([16, 32, 64])),
)


@st.composite
def weights(draw, max_rows=24, max_cols=150):
    n, k = draw(st.integers(1, max_rows)), draw(st.integers(1, max_cols))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    w = torch.randn(n, k, generator=g) * draw(st.floats(1e-3, 1e3))
    if draw(st.booleans()):  # heavy tails and exact zeros
        w = w * torch.exp(2 * torch.randn(n, k, generator=g)) * (torch.rand(n, k, generator=g) > 0.2)
    return w


def _scale(qw, shape):
    reps = qw.qdata.shape[1] * (2 if qw.bits <= 4 else 1) // qw.scale.shape[1]
    return qw.scale.repeat_interleave(reps, 1)[:, : shape[1]].expand(shape)


@settings(max_examples=150, deadline=None)
@given(weights(), log_configs, st.sampled_from([0.0, 0.0, 0.3]))
def test_log_error_bound(w, cfg, offset):
    """Inside the levels [m, s] (m = s·2^-(L-1)): |Ŵ - w| <= (√2 - 1)|w|; below m: Ŵ is the nearer of 0
    and ±m; above s (log_offset > 0): Ŵ = ±s; zeros are exact; signs are kept."""
    bits, gs, gran = cfg
    qw = quantize_log(w, bits, gs, gran, log_offset=offset)
    dq, s = qw.dequantize(), _scale(qw, w.shape)
    m, a, err = s * 2.0 ** -(levels(bits) - 1), w.abs(), (dq - w).abs()
    tol = 1e-6 * a
    inside, below, above = (a >= m) & (a <= s), a < m, a > s
    assert (err[inside] <= (math.sqrt(2) - 1) * a[inside] + tol[inside]).all()
    assert (err[below] <= torch.minimum(a, m - a)[below] + tol[below]).all()
    assert (dq.abs()[below] == 0).logical_or(dq.abs()[below] == m[below]).all()
    assert (dq.abs()[above] == s[above]).all()
    assert (dq[w == 0] == 0).all() and (dq * w >= 0).all()


@settings(max_examples=100, deadline=None)
@given(weights(), log_configs)
def test_log_quantizing_a_quantized_weight_is_exact(w, cfg):
    dq = quantize_log(w, *cfg).dequantize()
    assert torch.equal(quantize_log(dq, *cfg).dequantize(), dq)


@st.composite
def vector_cases(draw):
    d = draw(st.integers(2, 8))
    n, count = draw(st.integers(1, 20)), draw(st.integers(1, 12))
    gs = draw(st.sampled_from([None, 16]))
    rows = n - gs * ((n - 1) // gs) if gs else n
    size = draw(st.integers(2, min(64, rows * count))) if rows * count >= 2 else None
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    return torch.randn(n, count * d, generator=g), d, size, gs, draw(st.integers(0, 100))


@settings(max_examples=60, deadline=None)
@given(vector_cases())
def test_vector_codes_are_nearest_and_deterministic(case):
    w, d, size, gs, seed = case
    if size is None:
        return
    qw = quantize_vector(w, d, size, gs, seed=seed)
    n, rows = w.shape[0], gs or w.shape[0]
    codes = qw.codes().long()
    scaled = w / qw.scale
    for g, start in enumerate(range(0, n, rows)):
        v = scaled[start : start + rows].reshape(-1, d).double()
        dist = ((v[:, None] - qw.codebook[g].double()[None]) ** 2).sum(-1)
        chosen = dist.gather(1, codes[start : start + rows].reshape(-1, 1)).squeeze(1)
        assert (chosen <= dist.min(1).values * (1 + 1e-9) + 1e-30).all()
    again = quantize_vector(w, d, size, gs, seed=seed)
    assert torch.equal(again.qdata, qw.qdata) and torch.equal(again.codebook, qw.codebook)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 8), st.integers(2, 40), st.integers(1, 16), st.integers(1, 8), st.integers(0, 2**16))
def test_vector_exact_when_distinct_subvectors_fit(d, size, n, count, seed):
    g = torch.Generator().manual_seed(seed)
    distinct = torch.randn(size, d, generator=g)
    if n * count < size:
        return
    row = distinct[torch.randint(0, size, (count,), generator=g)]  # every row a permutation: one row scale
    w = torch.stack([row[torch.randperm(count, generator=g)] for _ in range(n)]).reshape(n, count * d)
    assert torch.equal(quantize_vector(w, d, size).dequantize(), w)


# Reruns with the slow suite's budget (`make test-slow`; slow_budget.py).
test_log_error_bound_slow = rerun_slow(test_log_error_bound, weights(), log_configs, st.sampled_from([0.0, 0.0, 0.3]))
test_vector_codes_are_nearest_and_deterministic_slow = rerun_slow(test_vector_codes_are_nearest_and_deterministic, vector_cases())
