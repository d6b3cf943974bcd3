import pytest
import torch
import torch.nn.functional as F

import torchlite
from torchlite import Quantize, Recipe, TorchliteError
from torchlite.eval.sensitivity import sensitivity


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = torch.nn.Linear(64, 128), torch.nn.Linear(128, 128), torch.nn.Linear(128, 64)
        with torch.no_grad():
            self.b.weight[:, :8] *= 30  # one layer with outlier columns: int4 hurts it most

    def forward(self, x):
        return self.c(F.gelu(self.b(F.gelu(self.a(x)))))


SCHEMES = {"int4": Quantize(bits=4, group_size=32), "int8": Quantize(bits=8)}


@pytest.fixture(scope="module")
def report():
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(64, 64)
    target = model(x).detach() + 0.1 * torch.randn(64, 64)

    def evaluate(m):
        return float(torch.exp(((m(x) - target) ** 2).mean()))

    return model, x, sensitivity(model, SCHEMES, [x[:32], x[32:]], evaluate)


def test_every_layer_and_scheme_is_measured(report):
    model, _, rep = report
    assert [lay.name for lay in rep.layers] == ["a", "b", "c"]
    for lay in rep.layers:
        assert lay.output_error["int8"] < lay.output_error["int4"]
        assert lay.bytes["int8"] > lay.bytes["int4"]
    assert type(model.b) is torch.nn.Linear and model.b.weight.shape == (128, 128), "model restored"
    text = str(rep)
    assert "int4 Δppl %" in text and "b" in text


def test_mixed_precision_meets_the_budget_and_spends_it_where_it_helps(report):
    model, x, rep = report
    fp32 = sum(lay.fp32_bytes for lay in rep.layers)
    smallest = sum(lay.bytes["int4"] for lay in rep.layers)
    cfg = rep.mixed_precision((smallest + 0.6 * (sum(lay.bytes["int8"] for lay in rep.layers) - smallest)) / fp32)
    small = torchlite.compress(model, Recipe(quantize=cfg))
    chosen = {name: small.get_submodule(name).bits for name in ("a", "b", "c")}
    spent = sum(rep.layers[i].bytes["int8" if chosen[n] == 8 else "int4"] for i, n in enumerate("abc"))
    assert 4 in chosen.values() and 8 in chosen.values()
    assert spent <= (smallest + 0.6 * (sum(lay.bytes["int8"] for lay in rep.layers) - smallest)) + 1
    all_int8 = rep.mixed_precision(1.0)
    assert all(all_int8.for_layer(n).bits == 8 for n in "abc")
    with pytest.raises(TorchliteError, match="cannot be met"):
        rep.mixed_precision(0.01)


def test_plot_writes_a_png(report, tmp_path):
    _, _, rep = report
    path = tmp_path / "sensitivity.png"
    rep.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
