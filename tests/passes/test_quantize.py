import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

import torchlite
from torchlite import Quantize, TorchliteError
from torchlite.graph import find_linears

QLINEAR = torch.ops.torchlite.qlinear.default
DEQUANTIZE = torch.ops.torchlite.dequantize.default


class MLP(torch.nn.Module):
    def __init__(self, bias=True):
        super().__init__()
        self.up = torch.nn.Linear(32, 64, bias=bias)
        self.down = torch.nn.Linear(64, 16, bias=bias)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


def _targets(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def test_export_graph_is_rewritten_and_input_untouched():
    model, x = MLP(), torch.randn(4, 32)
    gm = torchlite.trace(model, (x,))
    code, attrs = gm.code, dict(gm.named_parameters())
    new, report = torchlite.passes.quantize(gm, Quantize(bits=8))
    assert gm.code == code and dict(gm.named_parameters()).keys() == attrs.keys()
    assert _targets(new).count(QLINEAR) == 2 and torch.ops.aten.linear.default not in _targets(new)
    held = [(t.dtype, tuple(t.shape)) for t in list(new.parameters()) + list(new.buffers())]
    assert (torch.float32, (64, 32)) not in held and (torch.float32, (16, 64)) not in held, "no fp32 weight is kept"
    assert (torch.int8, (64, 64)) in held and (torch.int8, (16, 64)) in held  # K=32 is padded to 64
    assert [r.name for r in report.layers] == ["up", "down"]
    assert report.bytes_before == (32 * 64 + 64 * 16) * 4
    assert report.bytes_after == 64 * 64 + 16 * 64 + (64 + 16) * 4  # int8 values (K padded to 64) + fp32 scales
    torch.testing.assert_close(new(x), model(x), rtol=0.02, atol=0.02)


def test_symbolic_trace_modules_and_unfused_form():
    model, x = MLP(), torch.randn(4, 32)
    gm = torch.fx.symbolic_trace(model)
    new, _ = torchlite.passes.quantize(gm, Quantize(bits=4, group_size=32), fuse=False)
    assert _targets(new).count(DEQUANTIZE) == 2 and _targets(new).count(F.linear) == 2
    fused, _ = torchlite.passes.quantize(gm, Quantize(bits=4, group_size=32))
    torch.testing.assert_close(new(x), fused(x), rtol=1e-5, atol=1e-5)
    assert isinstance(model.up, torch.nn.Linear) and model.up.weight.shape == (64, 32), "model untouched"


@pytest.mark.parametrize("symmetric", [True, False])
def test_unfolded_graph_quantizes_at_run_time_and_matches(symmetric):
    model, x = MLP(), torch.randn(4, 32)
    cfg = Quantize(bits=4, group_size=16, symmetric=symmetric)
    gm = torchlite.trace(model, (x,))
    unfolded, _ = torchlite.passes.quantize(gm, cfg, fold=False)
    assert _targets(unfolded).count(torch.ops.torchlite.quantize.default) == 2
    folded, _ = torchlite.passes.quantize(gm, cfg)
    assert torch.ops.torchlite.quantize.default not in _targets(folded)
    torch.testing.assert_close(unfolded(x), folded(x), rtol=1e-5, atol=1e-5)


def test_decomposed_addmm_and_mm_forms_are_found():
    model, x = MLP(), torch.randn(4, 32)
    gm = make_fx(model, pre_dispatch=False)(x)
    forms = {site.node.target for site in find_linears(gm)}
    assert forms <= {torch.ops.aten.addmm.default, torch.ops.aten.mm.default} and len(find_linears(gm)) == 2
    gm_nobias = make_fx(MLP(bias=False))(x)
    assert {s.node.target for s in find_linears(gm_nobias)} == {torch.ops.aten.mm.default}


def test_decomposed_graph_with_constant_weights_is_quantized():
    model, x = MLP(), torch.randn(4, 32)
    gm = make_fx(model)(x)  # weights become get_attr constants (_param_constant*)
    new, report = torchlite.passes.quantize(gm, Quantize(bits=8))
    assert len(report.layers) == 2 and _targets(new).count(QLINEAR) == 2
    torch.testing.assert_close(new(x), model(x), rtol=0.02, atol=0.02)


def test_exclude_and_skip_reasons():
    model, x = MLP(), torch.randn(4, 32)
    gm = torchlite.trace(model, (x,))
    new, report = torchlite.passes.quantize(gm, Quantize(bits=8, exclude=("down",)))
    assert [r.name for r in report.layers] == ["up"]
    assert report.skipped == [("down", "excluded by the recipe")]
    assert "skipped down" in str(report)


def test_tied_weights_are_quantized_once():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(16, 16, bias=False)
            self.b = torch.nn.Linear(16, 16, bias=False)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    new, report = torchlite.passes.quantize(torch.fx.symbolic_trace(Tied()), Quantize(bits=8))
    assert len(report.layers) == 1 and len([b for b in new.buffers() if b.dtype == torch.int8]) == 1


def test_nan_weight_names_the_layer_and_changes_nothing():
    model, x = MLP(), torch.randn(4, 32)
    with torch.no_grad():
        model.down.weight[3, 5] = float("nan")
    gm = torchlite.trace(model, (x,))
    code = gm.code
    with pytest.raises(TorchliteError, match="'down'.*NaN"):
        torchlite.passes.quantize(gm, Quantize(bits=8))
    assert gm.code == code


def test_graph_without_linears_is_returned_unchanged():
    gm = torchlite.trace(torch.nn.ReLU(), (torch.randn(3),))
    new, report = torchlite.passes.quantize(gm, Quantize(bits=8))
    assert report.layers == [] and _targets(new) == _targets(gm)


def test_trace_rejects_non_tuple_inputs():
    with pytest.raises(TorchliteError, match="tuple"):
        torchlite.trace(MLP(), torch.randn(2, 32))
