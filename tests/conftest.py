import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Dynamo caches compiled code across tests; start each test clean."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    yield
    torch._dynamo.reset()
