"""Reruns of key properties in the slow suite (`make test-slow`, `pytest -m slow`) with the "slow" hypothesis
profile's budget (registered in tests/conftest.py: several times the examples of the default suite)."""
import pytest
from hypothesis import given, settings


def rerun_slow(test, *strategies):
    """A slow-marked test running `test`'s body (`test.hypothesis.inner_test`) on `strategies` (pass the ones
    of its @given) under the "slow" profile."""
    return pytest.mark.slow(settings(settings.get_profile("slow"))(given(*strategies)(test.hypothesis.inner_test)))
