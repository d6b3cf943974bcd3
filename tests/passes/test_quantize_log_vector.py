"""Log and vector quantization through the recipe, the pass, compress and the backend."""
import pytest
import torch
import torch.nn.functional as F

import torchlite
from torchlite import Quantize, QuantizedLinear, Recipe, TorchliteError, parse_recipe
from torchlite.recipe import to_dict

QLINEAR_LOG = torch.ops.torchlite.qlinear_log.default
QLINEAR_VECTOR = torch.ops.torchlite.qlinear_vector.default


class Block(torch.nn.Module):
    def __init__(self, d=64, h=192):
        super().__init__()
        self.norm = torch.nn.LayerNorm(d)
        self.up = torch.nn.Linear(d, h)
        self.down = torch.nn.Linear(h, d, bias=False)

    def forward(self, x):
        return x + self.down(F.silu(self.up(self.norm(x))))


CONFIGS = [
    {"scheme": "log", "bits": 4},
    {"scheme": "log", "bits": 6, "group_size": 32, "log_offset": 0.25},
    {"scheme": "vector", "vector_dim": 4, "codebook_size": 64},
    {"scheme": "vector", "bits": 4, "vector_dim": 2, "group_size": 32},
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_pass_compress_and_backend_agree(cfg):
    model, x = Block().eval(), torch.randn(2, 5, 64)
    small = torchlite.compress(model, {"quantize": cfg})  # eager torchlite ops: the oracle
    assert all(isinstance(m, QuantizedLinear) and m.scheme == cfg["scheme"] for m in (small.up, small.down))
    new, report = torchlite.passes.quantize(torchlite.trace(model, (x,)), Quantize(**cfg))
    op = QLINEAR_LOG if cfg["scheme"] == "log" else QLINEAR_VECTOR
    assert [n.target for n in new.graph.nodes].count(op) == 2
    assert not any(t.dtype == torch.float32 and t.dim() == 2 and t.numel() == 64 * 192 for t in new.buffers())
    with torch.no_grad():
        expected = small(x)
        torch.testing.assert_close(new(x), expected, rtol=1e-5, atol=1e-5)
        out = torch.compile(model, backend="lite", options={"recipe": {"quantize": cfg}})(x)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    assert report.bytes_after == small.torchlite_report[0].bytes_after


def test_report_counts_codebooks_in_bits_per_weight():
    model = Block()
    report = torchlite.compress(model, {"quantize": {"scheme": "vector", "vector_dim": 4}}).torchlite_report[0]
    up, down = report.layers
    # codes, the codebook and one float32 scale per row
    assert up.bits == 8 and up.bits_per_weight == pytest.approx((192 * 16 * 8 + 256 * 4 * 32 + 192 * 32) / (192 * 64))
    assert report.bits_per_weight == pytest.approx(8 * (up.bytes_after + down.bytes_after) / (2 * 192 * 64))
    assert "bits/w" in str(report) and "vector d=4, 256 centroids per layer" in str(report)
    log = torchlite.compress(model, {"quantize": {"scheme": "log", "bits": 4}}).torchlite_report[0]
    assert log.layers[0].bits_per_weight == pytest.approx((192 * 64 * 4 + 192 * 32) / (192 * 64))  # codes + fp32 scales


def test_recipe_defaults_and_round_trip():
    assert Quantize(scheme="log").bits == 4 and Quantize().bits == 8 and Quantize() == Quantize(bits=8)
    vq = Quantize(scheme="vector")
    assert (vq.bits, vq.vector_dim, vq.codebook_size, vq.granularity) == (8, 4, 256, "tensor")
    assert Quantize(scheme="vector", bits=4).codebook_size == 16 and Quantize(scheme="vector", codebook_size=20).bits == 5
    for cfg in CONFIGS:
        r = parse_recipe({"quantize": cfg})
        assert parse_recipe(to_dict(r)) == r == Recipe(quantize=Quantize(**cfg))


@pytest.mark.parametrize(
    "cfg, words",
    [
        ({"scheme": "cubic"}, ["scheme='cubic'", "linear, log, vector"]),
        ({"scheme": "log", "bits": 2}, ["bits=2", "scheme='log'", "3..8"]),
        ({"scheme": "log", "symmetric": False}, ["symmetric=False", "drop it"]),
        ({"scheme": "log", "activations": "dynamic"}, ["W8A8", "scheme='linear'"]),
        ({"scheme": "vector", "activations": "static"}, ["W8A8", "scheme='linear'"]),
        ({"scheme": "log", "method": "awq"}, ["method='awq'", "scheme='linear' only", "method='rtn' or 'gptq'"]),
        ({"scheme": "vector", "method": "awq"}, ["method='awq'", "method='rtn'"]),
        ({"scheme": "log", "log_offset": 1.5}, ["log_offset=1.5", "[0, 1)"]),
        ({"log_offset": 0.5}, ["log_offset", "scheme='log' only"]),
        ({"codebook_size": 16}, ["codebook_size", "scheme='vector' only"]),
        ({"scheme": "vector", "vector_dim": 1}, ["vector_dim=1", "2..8"]),
        ({"scheme": "vector", "codebook_size": 512}, ["codebook_size=512", "2..256"]),
        ({"scheme": "vector", "bits": 3, "codebook_size": 256}, ["bits=3", "codebook_size=256", "8-bit codes"]),
        ({"scheme": "vector", "granularity": "channel"}, ["per-channel codebooks", "group_size"]),
    ],
)
def test_bad_configs_name_the_problem_and_the_fix(cfg, words):
    with pytest.raises(TorchliteError) as err:
        parse_recipe({"quantize": cfg})
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"scheme": "vector", "vector_dim": 5}, r"'up' has in_features=64, not a multiple of vector_dim=5"),
        ({"scheme": "vector", "vector_dim": 8, "codebook_size": 256, "group_size": 16}, r"only 128 sub-vectors.*codebook_size=256"),
    ],
)
def test_layer_shape_errors_come_before_any_weight_is_touched(cfg, match):
    model, x = Block(), torch.randn(2, 64)
    with pytest.raises(TorchliteError, match=match):
        torchlite.compress(model, {"quantize": cfg}, inplace=True)
    assert isinstance(model.up, torch.nn.Linear) and isinstance(model.down, torch.nn.Linear)
    gm = torchlite.trace(model, (x,))
    with pytest.raises(TorchliteError, match=match):
        torchlite.passes.quantize(gm, Quantize(**cfg))
    with torch.no_grad(), pytest.raises(Exception, match=match):
        torch.compile(model, backend="lite", options={"recipe": {"quantize": cfg}})(x)


def test_mixed_schemes_and_unfolded_form():
    model, x = Block(), torch.randn(3, 64)
    cfg = Quantize(bits=8, overrides={"down": Quantize(scheme="vector", vector_dim=4, codebook_size=32)})
    new, report = torchlite.passes.quantize(torchlite.trace(model, (x,)), cfg)
    targets = [n.target for n in new.graph.nodes]
    assert targets.count(torch.ops.torchlite.qlinear.default) == 1 and targets.count(QLINEAR_VECTOR) == 1
    unfused, _ = torchlite.passes.quantize(torchlite.trace(model, (x,)), cfg, fuse=False)
    assert torch.ops.torchlite.dequantize_vector.default in [n.target for n in unfused.graph.nodes]
    torch.testing.assert_close(unfused(x), new(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(TorchliteError, match="fold=False"):
        torchlite.passes.quantize(torchlite.trace(model, (x,)), cfg, fold=False)
