import pytest

import torchlite
from torchlite import PRESETS, Factor, Prune, Quantize, Recipe, Schedule, TorchliteError, parse_recipe
from torchlite.recipe import to_dict


def test_presets():
    assert parse_recipe("none").is_noop
    assert parse_recipe("int8").quantize == Quantize(bits=8)
    q4 = parse_recipe("int4").quantize
    assert (q4.bits, q4.group_size, q4.symmetric, q4.granularity) == (4, 128, True, "group")
    assert parse_recipe(None) == PRESETS["int8"]


def test_dict_and_dataclass_agree():
    r = parse_recipe({"quantize": {"bits": 4, "group_size": 64, "symmetric": False}})
    assert r == Recipe(quantize=Quantize(bits=4, group_size=64, symmetric=False))
    assert parse_recipe(to_dict(r)) == r
    both = parse_recipe({"factor": {"budget": 0.8, "method": "whiten", "exclude": "lm_head"}, "quantize": {"bits": 8}})
    assert both == Recipe(factor=Factor(budget=0.8, method="whiten", exclude=("lm_head",)), quantize=Quantize(bits=8))
    assert parse_recipe(to_dict(both)) == both
    assert Recipe.ORDER == ("prune", "factor", "quantize")


def test_a_single_pass_config_is_a_recipe():
    q, f, p = Quantize(bits=4, group_size=128), Factor(budget=0.8), Prune(sparsity=0.3)
    assert parse_recipe(q) == Recipe(quantize=q) and parse_recipe(f) == Recipe(factor=f) and parse_recipe(p) == Recipe(prune=p)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("int3", ["int3", "none", "int8", "int4"]),
        ({"quantise": {}}, ["quantise", "quantize"]),
        ({"quantize": {"bitz": 4}}, ["bitz", "bits", "group_size"]),
        ({"quantize": {"bits": 9}}, ["bits=9", "2..8"]),
        ({"quantize": {"bits": 4, "group_size": 100}}, ["group_size=100", "multiple of 16"]),
        ({"quantize": {"granularity": "row"}}, ["row", "tensor", "channel", "group"]),
        ({"quantize": {"granularity": "group"}}, ["group_size"]),
        (42, ["preset", "dict", "Recipe", "Quantize"]),
        ({"factor": {"rank": 8, "rnak": 2}}, ["rnak", "rank", "ratio", "energy", "budget", "method"]),
        ({"factor": {}}, ["exactly one of rank, ratio, energy, budget"]),
        ({"factor": {"energy": 1.0}}, ["energy=1.0", "between 0 and 1"]),
        ({"factor": {"ratio": 0.5, "min_saving": 1}}, ["min_saving=1", "[0, 1)"]),
    ],
)
def test_bad_recipes_name_the_problem_and_the_choices(spec, words):
    with pytest.raises(TorchliteError) as err:
        parse_recipe(spec)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"structure": "neuron", "round_to": 0}, "positive"),
    ({"round_to": 16}, "structured"),
    ({"sparsity": 1.0}, "[0, 1)"),
    ({"sparsity": -0.1}, "[0, 1)"),
    ({"structure": "rows"}, "allowed"),
    ({"importance": "random"}, "allowed"),
    ({"structure": "n:m", "n": 4, "m": 4}, "0 < n < m"),
    ({"structure": "n:m", "sparsity": 0.3}, "contradicts"),
    ({"structure": "n:m", "scope": "global"}, "global"),
    ({"schedule": {"steps": 0}}, "positive"),
    ({"schedule": {"kind": "exp"}}, "allowed"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(TorchliteError, match=message.replace("[", r"\[").replace(")", r"\)")):
        Prune(**kwargs)


def test_recipe_dict_round_trip():
    recipe = torchlite.parse_recipe({"prune": {"structure": "head", "sparsity": 0.25, "schedule": {"steps": 2}}})
    assert recipe.prune == Prune(structure="head", sparsity=0.25, schedule=Schedule(steps=2))
    with pytest.raises(TorchliteError, match="unknown prune option"):
        torchlite.parse_recipe({"prune": {"ratio": 0.5}})
