import pytest
import torch

import torchlite
from torchlite import QuantizedLinear, TorchliteError


def _model():
    return torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64, bias=False))


@pytest.mark.parametrize("recipe, container, ratio", [("int8", torch.int8, 3.5), ("int4", torch.uint8, 6.0)])
def test_compress_stores_real_low_bit_weights(recipe, container, ratio):
    model, x = _model(), torch.randn(5, 128)
    small = torchlite.compress(model, recipe)
    assert isinstance(model[0], torch.nn.Linear), "the input model is not modified"
    assert isinstance(small[0], QuantizedLinear) and small[0].qdata.dtype == container
    report = small.torchlite_report[0]
    assert report.bytes_before / report.bytes_after > ratio
    tol = 0.05 if recipe == "int8" else 0.5
    assert (small(x) - model(x)).abs().max() < tol


def test_compress_then_plain_inductor_uses_the_lowering():
    small, x = torchlite.compress(_model(), "int4"), torch.randn(1, 128)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(small)(x), small(x), rtol=1e-4, atol=1e-4)


def test_failed_compress_leaves_the_model_as_it_was():
    model = _model()
    with torch.no_grad():
        model[2].weight[1, 1] = float("nan")
    with pytest.raises(TorchliteError, match="'2'"):
        torchlite.compress(model, "int8", inplace=True)
    assert isinstance(model[0], torch.nn.Linear) and isinstance(model[2], torch.nn.Linear)


def test_exclusion_by_name():
    small = torchlite.compress(_model(), {"quantize": {"bits": 8, "exclude": ["2"]}})
    assert isinstance(small[0], QuantizedLinear) and isinstance(small[2], torch.nn.Linear)
