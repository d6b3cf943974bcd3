"""Decode-shaped attention: `decode_attention` against SDPA, the graph rewrite's conditions, and the
lite backend compiling it into its kernels (no flash-attention call) while prefill keeps the kernel."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._inductor.utils import run_and_get_code

import torchlite  # noqa: F401  (registers the backend's lowerings)
from torchlite.passes.route import decode_attention, route_decode_attention


@settings(max_examples=40, deadline=None)
@given(
    kv_heads=st.integers(1, 3), groups=st.integers(1, 4), q_len=st.integers(1, 4), keys=st.integers(1, 40),
    head_dim=st.sampled_from([8, 16, 64]), mask=st.sampled_from([None, "bool", "float"]),
    scale=st.sampled_from([None, 0.3]), seed=st.integers(0, 2**16),
)
def test_matches_sdpa(kv_heads, groups, q_len, keys, head_dim, mask, scale, seed):
    g = torch.Generator().manual_seed(seed)
    heads = kv_heads * groups
    q = torch.randn(2, heads, q_len, head_dim, generator=g)
    k, v = (torch.randn(2, kv_heads, keys, head_dim, generator=g) for _ in range(2))
    if mask == "bool":
        m = torch.rand(2, 1, q_len, keys, generator=g) > 0.4
        m[..., 0] = True  # no fully masked row (SDPA's math path gives NaN there, flash does not)
    elif mask == "float":
        m = torch.randn(2, heads, q_len, keys, generator=g)
    else:
        m = None
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=scale, enable_gqa=groups > 1)
    out = decode_attention(q, k, v, attn_mask=m, scale=scale)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


class Attention(torch.nn.Module):
    def __init__(self, heads=6, kv_heads=2, dim=16, **sdpa):
        super().__init__()
        self.heads, self.kv_heads, self.dim, self.sdpa = heads, kv_heads, dim, sdpa
        self.q = torch.nn.Linear(heads * dim, heads * dim)
        self.o = torch.nn.Linear(heads * dim, heads * dim)

    def forward(self, x, k, v, mask):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, self.dim).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.heads != self.kv_heads, **self.sdpa)
        return self.o(a.transpose(1, 2).reshape(b, t, -1))


def _inputs(q_len, keys=24, heads=6, kv_heads=2, dim=16):
    x = torch.randn(1, q_len, heads * dim)
    k, v = torch.randn(1, kv_heads, keys, dim), torch.randn(1, kv_heads, keys, dim)
    return x, k, v, torch.rand(1, 1, q_len, keys) > 0.2


def _dynamo_graph(model, inputs):
    graphs = []

    def capture(gm, example_inputs, **_):
        graphs.append((gm, example_inputs))
        return gm

    torch._dynamo.reset()
    torch.compile(model, backend=capture, dynamic=False)(*inputs)
    return graphs[0]


@pytest.mark.parametrize(
    "q_len, sdpa, rewritten",
    [(1, {}, 1), (16, {}, 1), (17, {}, 0), (1, {"is_causal": True}, 0), (1, {"dropout_p": 0.1}, 0)],
)
def test_route_rewrites_only_what_it_computes_exactly(q_len, sdpa, rewritten):
    model, inputs = Attention(**sdpa).eval(), _inputs(q_len)
    inputs = inputs[:3] + ((None,) if sdpa else inputs[3:])  # is_causal and dropout take no mask here
    gm, example = _dynamo_graph(model, inputs)
    before = gm.code
    routed, report = route_decode_attention(gm)
    assert len(report.layers) == rewritten and gm.code == before, "the input graph is left as it was"
    if not sdpa.get("dropout_p"):
        torch.testing.assert_close(routed(*example), gm(*example), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("q_len, fused", [(1, True), (64, False)])
def test_backend_fuses_decode_attention_and_keeps_flash_for_prefill(q_len, fused):
    model, inputs = Attention().eval().requires_grad_(False), _inputs(q_len)
    torch._dynamo.reset()
    with torch.no_grad():
        out, codes = run_and_get_code(torch.compile(model, backend="lite", options={"recipe": "none"}), *inputs)
        ref = model(*inputs)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    call = "".join(code.split("def call")[1] for code in codes)
    assert ("flash_attention" not in call) == fused
