import pytest
import torch
import torch.nn.functional as F

import torchlite
from torchlite import Quantize, Recipe, TorchliteError
from torchlite.recipe import to_dict


class Block(torch.nn.Module):
    def __init__(self, d=64, h=128):
        super().__init__()
        self.gate, self.up, self.down = torch.nn.Linear(d, h), torch.nn.Linear(d, h), torch.nn.Linear(h, d)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


def test_overrides_give_layers_their_own_config():
    model, x = Block().eval(), torch.randn(2, 64)
    cfg = Quantize(bits=4, group_size=32, overrides={"down": Quantize(bits=8), "u*": None})
    gm = torchlite.trace(model, (x,))
    new, report = torchlite.passes.quantize(gm, cfg)
    assert {r.name: r.bits for r in report.layers} == {"gate": 4, "down": 8}
    assert ("up", "kept in floating point by Quantize.overrides") in report.skipped
    small = torchlite.compress(model, Recipe(quantize=cfg))
    assert (small.gate.bits, small.down.bits, type(small.up)) == (4, 8, torch.nn.Linear)
    with torch.no_grad():
        torch.testing.assert_close(new(x), small(x), rtol=1e-4, atol=1e-4)
        compiled = torch.compile(model, backend="lite", options={"recipe": Recipe(quantize=cfg)})
        torch.testing.assert_close(compiled(x), small(x), rtol=1e-4, atol=1e-4)


def test_overrides_parse_from_dicts_and_round_trip():
    recipe = torchlite.parse_recipe({"quantize": {"bits": 4, "group_size": 128, "overrides": {"lm_head": {"bits": 8}}}})
    assert recipe.quantize.for_layer("lm_head") == Quantize(bits=8)
    assert recipe.quantize.for_layer("model.layers.0.q_proj") is recipe.quantize
    assert torchlite.parse_recipe(to_dict(recipe)) == recipe


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"lm_head": {"bitz": 8}}, "bitz"),
        ({"lm_head": 8}, "must be a Quantize, a dict or None"),
        ([("lm_head", None)], "must be a dict"),
        ({"lm_head": {"bits": 8, "overrides": {"x": None}}}, "overrides of its own"),
    ],
)
def test_bad_overrides_are_clear_errors(overrides, match):
    with pytest.raises(TorchliteError, match=match):
        Quantize(bits=4, group_size=32, overrides=overrides)
