import pytest
import torch
import torch.nn.functional as F

import torchlite
from torchlite import Quantize, Recipe, TorchliteError

QLINEAR = torch.ops.torchlite.qlinear.default


class Block(torch.nn.Module):
    def __init__(self, d=64, h=128):
        super().__init__()
        self.gate, self.up, self.down = torch.nn.Linear(d, h), torch.nn.Linear(d, h), torch.nn.Linear(h, d)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


def _batch(seed, d=64):
    x = torch.randn(2, 16, d, generator=torch.Generator().manual_seed(seed))
    x[..., :4] *= 20
    return x


CALIB = [_batch(i) for i in range(4)]


def _error(model, fn, xs):
    return sum(((fn(x) - model(x)).norm() / model(x).norm()).item() for x in xs) / len(xs)


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_calibrated_int4_beats_rtn_and_compress_matches_the_pass(method):
    model = Block().eval()
    gm = torchlite.trace(model, (CALIB[0],))
    cfg = Quantize(bits=4, group_size=32, method=method)
    rtn, _ = torchlite.passes.quantize(gm, Quantize(bits=4, group_size=32))
    new, report = torchlite.passes.quantize(gm, cfg, CALIB)
    assert [n.target for n in new.graph.nodes].count(QLINEAR) == 3
    assert all(r.output_error is not None for r in report.layers)
    with torch.no_grad():
        assert _error(model, new, CALIB) < _error(model, rtn, CALIB)
        small = torchlite.compress(model, Recipe(quantize=cfg), calib=CALIB)
        torch.testing.assert_close(small(CALIB[1]), new(CALIB[1]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "cfg", [dict(scheme="log", bits=4, group_size=32), dict(scheme="vector", vector_dim=4, codebook_size=16)]
)
def test_gptq_log_and_vector_beat_rtn_through_pass_compress_and_backend(cfg):
    """Error feedback lowers the model's output error on the calibration data (the sweep, not only the
    row-wise fallback to RTN: at least 5 % here), and the pass, compress and the backend agree."""
    model = Block().eval()
    gm = torchlite.trace(model, (CALIB[0],))
    rtn, _ = torchlite.passes.quantize(gm, Quantize(**cfg))
    new, report = torchlite.passes.quantize(gm, Quantize(**cfg, method="gptq"), CALIB)
    assert all(r.output_error is not None for r in report.layers)
    with torch.no_grad():
        assert _error(model, new, CALIB) < 0.95 * _error(model, rtn, CALIB)
        small = torchlite.compress(model, Recipe(quantize=Quantize(**cfg, method="gptq")), calib=CALIB)
        torch.testing.assert_close(small(CALIB[1]), new(CALIB[1]), rtol=1e-4, atol=1e-4)
        options = {"recipe": {"quantize": {**cfg, "method": "gptq"}}, "calib": CALIB}
        compiled = torch.compile(model, backend="lite", options=options)
        torch.testing.assert_close(compiled(CALIB[2]), small(CALIB[2]), rtol=1e-4, atol=1e-4)


def test_awq_scales_the_inputs_in_the_graph_and_compiles():
    model = Block().eval()
    cfg = Quantize(bits=4, group_size=32, method="awq")
    small = torchlite.compress(model, Recipe(quantize=cfg), calib=CALIB)
    assert any(m.input_scale is not None for m in small.modules() if isinstance(m, torchlite.QuantizedLinear))
    with torch.no_grad():
        compiled = torch.compile(model, backend="lite", options={"recipe": {"quantize": {"bits": 4, "group_size": 32, "method": "awq"}}, "calib": CALIB})
        torch.testing.assert_close(compiled(CALIB[2]), small(CALIB[2]), rtol=1e-4, atol=1e-4)


def test_int4_gptq_preset():
    assert torchlite.parse_recipe("int4-gptq").quantize == Quantize(bits=4, group_size=128, method="gptq")


@pytest.mark.parametrize(
    "kwargs, calib, match",
    [
        (dict(method="gptq"), None, "needs calibration data"),
        (dict(method="awq"), [], "empty"),
        (dict(method="gptq"), [torch.randn(2, 16, 3)], "could not run"),
        (dict(method="optq"), None, "allowed: rtn, gptq, awq"),
        (dict(method="rtn", act_order=True), None, "only applies to method='gptq'"),
        (dict(method="gptq", damp=0), None, "damp"),
    ],
)
def test_bad_input_is_refused_before_anything_changes(kwargs, calib, match):
    model = Block().eval()
    gm = torchlite.trace(model, (CALIB[0],))
    with pytest.raises(TorchliteError, match=match):
        torchlite.passes.quantize(gm, Quantize(bits=4, group_size=32, **kwargs), calib)
    with pytest.raises(TorchliteError, match=match):
        torchlite.compress(model, {"quantize": dict(bits=4, group_size=32, **kwargs)}, calib=calib, inplace=True)
    assert isinstance(model.up, torch.nn.Linear)


def test_fold_false_is_only_for_rtn():
    gm = torchlite.trace(Block().eval(), (CALIB[0],))
    with pytest.raises(TorchliteError, match="fold=False"):
        torchlite.passes.quantize(gm, Quantize(bits=4, group_size=32, method="gptq"), CALIB, fold=False)
