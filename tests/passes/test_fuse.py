"""fuse_shared_inputs (torchlite.passes.route): linears that read one input become one call over their
concatenated weights, sliced back; the outputs stay what they were, for every scheme that fuses."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchlite
from torchlite import Quantize
from torchlite.passes.route import fuse_shared_inputs

LINEAR_OPS = ("torchlite.qlinear", "aten.linear", "torch._C._nn.linear")

SCHEMES = {
    "fp32": None,
    "int8": Quantize(bits=8),
    "int4 g32 asymmetric": Quantize(bits=4, group_size=32, symmetric=False),
    "log4 g16": Quantize(scheme="log", bits=4, group_size=16),
    "w8a8 dynamic": Quantize(bits=8, activations="dynamic"),
}


def linear_calls(gm) -> int:
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and str(n.target).startswith(LINEAR_OPS))


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_q_k_v_and_gate_up_fuse_and_the_logits_stay(llama_graph, scheme):
    _, gm, ids = llama_graph
    if SCHEMES[scheme] is not None:
        gm, _ = torchlite.passes.quantize(gm, SCHEMES[scheme])
    new, report = fuse_shared_inputs(gm)
    groups = sorted(lay.name for lay in report.layers)
    assert groups == [
        f"model.model.layers.{i}.{names}" for i in (0, 1)
        for names in ("mlp.gate_proj+model.model.layers.{i}.mlp.up_proj".format(i=i),
                      "self_attn.q_proj+model.model.layers.{i}.self_attn.k_proj+model.model.layers.{i}.self_attn.v_proj".format(i=i))
    ]
    assert linear_calls(new) == linear_calls(gm) - 2 * 3  # per layer: q, k, v -> 1 and gate, up -> 1
    torch.testing.assert_close(new(ids), gm(ids), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [Quantize(bits=8, granularity="tensor"), Quantize(scheme="vector", codebook_size=16)])
def test_per_tensor_scales_and_codebooks_stay_apart(llama_graph, cfg):
    _, gm, ids = llama_graph
    quantized, _ = torchlite.passes.quantize(gm, cfg)
    new, report = fuse_shared_inputs(quantized)
    assert not report.layers and linear_calls(new) == linear_calls(quantized)


class Heads(torch.nn.Module):
    """Several linears reading one input, their outputs summed into one value each (all used)."""

    def __init__(self, k, outs, bias):
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(k, n, bias=bias) for n in outs)

    def forward(self, x):
        return torch.cat([h(x).tanh() for h in self.heads], -1)


@settings(max_examples=12, deadline=None)
@given(
    st.lists(st.sampled_from([16, 32, 48, 80]), min_size=2, max_size=4), st.sampled_from([32, 64, 96]),
    st.booleans(), st.sampled_from(sorted(SCHEMES)), st.integers(1, 3), st.integers(0, 2**16),
)
def test_fused_graph_equals_the_original(outs, k, bias, scheme, rows, seed):
    torch.manual_seed(seed)
    model = Heads(k, outs, bias)
    x = torch.randn(rows, k)
    gm = torchlite.trace(model, (x,))
    if SCHEMES[scheme] is not None:
        gm, _ = torchlite.passes.quantize(gm, SCHEMES[scheme])
    new, report = fuse_shared_inputs(gm)
    assert len(report.layers) == 1 and linear_calls(new) == 1
    torch.testing.assert_close(new(x), gm(x), rtol=1e-5, atol=1e-5)
