import pytest
import torch
from hypothesis import settings

from torchlite.inductor import tiers

# Hypothesis budgets. Every property sets its own max_examples for the default suite; the slow suite
# (`make test-slow`, `pytest -m slow`) reruns the key properties under the "slow" profile, with 7 to 25
# times the examples (tests/property/slow_budget.py: `test_x_slow = rerun_slow(test_x, *its strategies)`).
SLOW_EXAMPLES = 1000
settings.register_profile("slow", max_examples=SLOW_EXAMPLES, deadline=None)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Dynamo caches compiled code across tests; start each test clean."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    yield
    torch._dynamo.reset()


def _tier(tier: tiers.Tier):
    needs = " or ".join("{" + ", ".join(sorted(f)) + "}" for f in tier.requires)
    return pytest.param(
        tier.name, id=tier.name,
        marks=pytest.mark.skipif(not tier.runnable(), reason=f"this CPU cannot run the {tier.name} kernels (needs {needs})"),
    )


@pytest.fixture(params=[_tier(t) for t in tiers.TIERS])
def kernel_tier(request):
    """Every kernel tier (csrc/simd.h) this CPU can execute, forced in turn; the others skip with the
    flags they lack. Kernel tests take it so that CI checks every tier its machine runs."""
    with tiers.forced(request.param):
        yield tiers.BY_NAME[request.param]


def tiny_llama(tie=True):
    """A 2-layer Llama with grouped-query attention (6 query heads, 3 KV heads) and a tied lm_head."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=48, intermediate_size=48, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=3, head_dim=8, tie_word_embeddings=tie,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


class Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(ids, use_cache=False).logits


@pytest.fixture(scope="module")
def llama_graph():
    """(tiny Llama, its logits traced by torchlite.trace, the example token ids [1, 7])."""
    import torchlite

    model = tiny_llama()
    ids = torch.randint(0, 64, (1, 7))
    return model, torchlite.trace(Logits(model), (ids,)), ids
