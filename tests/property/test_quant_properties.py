"""Hypothesis properties of the quantization numerics and of the quantize pass."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchlite
from torchlite import Quantize
from torchlite.numerics.linear import padded_in_features, quantize_weight

from slow_budget import rerun_slow

configs = st.one_of(
    st.builds(lambda b, s: (b, None, s, "channel"), st.integers(2, 8), st.booleans()),
    st.builds(lambda b, s: (b, None, s, "tensor"), st.integers(2, 8), st.booleans()),
    st.builds(lambda b, g, s: (b, g, s, "group"), st.integers(2, 8), st.sampled_from([16, 32, 64]), st.booleans()),
)


@st.composite
def weights(draw):
    n, k = draw(st.integers(1, 24)), draw(st.integers(1, 150))
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.floats(1e-3, 1e3))
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * scale


def _roundtrip(w, cfg):
    qw = quantize_weight(w, *cfg)
    return qw, qw.dequantize()


@settings(max_examples=150, deadline=None)
@given(weights(), configs)
def test_dequantization_error_is_at_most_half_a_step(w, cfg):
    bits = cfg[0]
    qw, wd = _roundtrip(w, cfg)
    k = w.shape[1]
    reps = padded_in_features(k, bits, qw.group_size) // qw.scale.shape[1]
    step = qw.scale.repeat_interleave(reps, 1)[:, :k].expand_as(w)
    assert ((w - wd).abs() <= step * 0.5 * (1 + 1e-5) + 1e-12).all()


@settings(max_examples=100, deadline=None)
@given(weights(), configs)
def test_quantizing_a_quantized_weight_is_exact(w, cfg):
    _, wd = _roundtrip(w, cfg)
    _, wd2 = _roundtrip(wd, cfg)
    assert torch.allclose(wd2, wd, rtol=1e-5, atol=1e-6 * float(w.abs().max()))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 90), st.integers(1, 40), st.integers(1, 3), configs, st.booleans())
def test_quantize_pass_matches_dequantized_reference(n_in, n_hidden, n_out, batch_rank, cfg, bias):
    """The rewritten graph computes the model with every weight replaced by its dequantized value."""
    bits, gs, sym, gran = cfg
    model = torch.nn.Sequential(torch.nn.Linear(n_in, n_hidden, bias=bias), torch.nn.Tanh(), torch.nn.Linear(n_hidden, n_out))
    x = torch.randn(*([2] * (batch_rank - 1)), 3, n_in)
    gm = torchlite.trace(model, (x,))
    before = gm.code
    new, report = torchlite.passes.quantize(gm, Quantize(bits=bits, group_size=gs, symmetric=sym, granularity=gran))
    assert gm.code == before and len(report.layers) == 2
    with torch.no_grad():
        for layer in (model[0], model[2]):  # the eager reference: weights replaced by their dequantized values
            qw = quantize_weight(layer.weight, bits, gs, sym, gran)
            layer.weight.copy_(qw.dequantize())
        torch.testing.assert_close(new(x), model(x), rtol=1e-4, atol=1e-4)


# Reruns with the slow suite's budget (`make test-slow`; slow_budget.py).
test_dequantization_error_is_at_most_half_a_step_slow = rerun_slow(test_dequantization_error_is_at_most_half_a_step, weights(), configs)
test_quantize_pass_matches_dequantized_reference_slow = rerun_slow(test_quantize_pass_matches_dequantized_reference, st.integers(1, 40), st.integers(1, 90), st.integers(1, 40), st.integers(1, 3), configs, st.booleans())
