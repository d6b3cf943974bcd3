"""Kernel tier selection (torchlite/inductor/tiers.py): the CPU's flags, the override, and refusals."""
import pytest
import torch
from torch._inductor.utils import run_and_get_code

import torchlite  # noqa: F401  (registers ops and lowerings)
from torchlite.inductor import tag_cache_key, tiers
from torchlite.numerics.linear import quantize_weight

AVX2_ONLY = frozenset({"fpu", "sse4_2", "avx", "avx2", "fma"})  # an AMD Zen 3 / Intel Haswell


@pytest.fixture
def avx2_only_cpu(monkeypatch):
    monkeypatch.setattr(tiers, "cpu_flags", lambda: AVX2_ONLY)
    monkeypatch.setattr(tiers, "_x86", lambda: True)


def test_auto_takes_the_fastest_tier_the_cpu_runs(avx2_only_cpu, monkeypatch):
    monkeypatch.delenv(tiers.ENV, raising=False)
    assert [t.name for t in tiers.runnable()] == ["avx2", "portable"]
    assert tiers.selected().name == "avx2"


def test_an_arm_cpu_keeps_the_generated_reductions_unless_portable_is_forced(monkeypatch):
    monkeypatch.setattr(tiers, "cpu_flags", lambda: frozenset({"fp", "asimd", "asimddp"}))
    monkeypatch.setattr(tiers, "_x86", lambda: False)
    monkeypatch.delenv(tiers.ENV, raising=False)
    assert [t.name for t in tiers.runnable()] == ["portable"]
    assert tiers.selected() is None
    monkeypatch.setenv(tiers.ENV, "portable")
    assert tiers.selected().name == "portable"


def test_the_override_refuses_unknown_and_unrunnable_tiers(avx2_only_cpu, monkeypatch):
    monkeypatch.setenv(tiers.ENV, "avx1024")
    with pytest.raises(ValueError, match="not a kernel tier; use one of avx512_vnni, avx_vnni, avx2, portable"):
        tiers.selected()
    monkeypatch.setenv(tiers.ENV, "avx512_vnni")
    with pytest.raises(RuntimeError, match="cannot run the avx512_vnni kernels .*avx512_vnni.*this CPU runs avx2, portable"):
        tiers.selected()
    with pytest.raises(RuntimeError, match="cannot run"):
        with tiers.forced("avx_vnni"):
            pass


def test_avx_vnni_uses_the_evex_encoding_where_the_cpu_has_avx512_vnni_only(monkeypatch):
    monkeypatch.setattr(tiers, "cpu_flags", lambda: frozenset({"avx2", "fma", "avx512vl", "avx512bw", "avx512_vnni"}))
    assert tiers.BY_NAME["avx_vnni"].defines() == {"TIER": 2, "AVX_VNNI_EVEX": 1}
    monkeypatch.setattr(tiers, "cpu_flags", lambda: frozenset({"avx2", "fma", "avx_vnni"}))
    assert tiers.BY_NAME["avx_vnni"].defines() == {"TIER": 2, "AVX_VNNI_EVEX": 0}


def test_none_leaves_decode_calls_to_the_generated_reduction_and_keys_the_cache():
    qw = quantize_weight(torch.randn(32, 256), 8, None, True, "channel")

    def f(x):
        return torch.ops.torchlite.qlinear(x, qw.qdata, qw.scale, qw.zero, None, 8, 0, 256)

    x = torch.randn(1, 256)
    with tiers.forced("none"):
        assert tag_cache_key().endswith("-none")
        out, (code,) = run_and_get_code(torch.compile(f, fullgraph=True), x)
    assert "cpp_torchlite" not in code
    torch.testing.assert_close(out, f(x), rtol=1e-5, atol=1e-4)
    assert tag_cache_key().endswith(f"-{tiers.name()}")
