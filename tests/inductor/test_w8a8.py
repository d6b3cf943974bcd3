"""W8A8 (int8 activations x int8 weights): the op's numerics, its lowering, and the pass."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch._inductor.utils import run_and_get_code

import torchlite
from torchlite import Quantize, Recipe, TorchliteError
from torchlite.inductor import tiers
from torchlite.numerics.linear import quantize_weight

A8 = torch.ops.torchlite.qlinear_a8.default


def _case(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return quantize_weight(torch.randn(n, k, generator=g), 8, None, True, "channel"), torch.randn(n, generator=g)


def test_opcheck_and_numerics_against_float_reference():
    qw, bias = _case(24, 80)
    x = torch.randn(2, 3, 80)
    torch.library.opcheck(A8, (x, qw.qdata, qw.scale, bias, 80, None))
    torch.library.opcheck(A8, (x, qw.qdata, qw.scale, None, 80, torch.full((1, 1), 0.05)))
    y = A8(x, qw.qdata, qw.scale, bias, 80, None)
    sx = x.abs().amax(-1, keepdim=True) / 127
    xq = torch.round(x / sx).clamp(-127, 127) * sx  # what the op multiplies, in float
    torch.testing.assert_close(y, F.linear(xq, qw.dequantize(), bias), rtol=1e-5, atol=1e-4)
    assert (y - F.linear(x, qw.dequantize(), bias)).abs().max() < 0.05 * y.abs().max()


@pytest.mark.parametrize("n, k, batch", [(96, 128, (1,)), (33, 70, (2, 3)), (64, 576, (40,)), (17, 64, (1, 1))])
@pytest.mark.parametrize("static", [False, True])
def test_lowering_matches_eager(n, k, batch, static):
    """Decode shapes where a kernel tier is selected run the hand-written kernel (the op's own int8 activations: equal up
    to float summation order); others quantize in a generated kernel and call `_int_mm`."""
    qw, bias = _case(n, k)
    x_scale = torch.full((1, 1), 0.03) if static else None

    def f(x):
        return A8(x, qw.qdata, qw.scale, bias, k, x_scale)

    x = torch.randn(*batch, k)
    out, (code, *_) = run_and_get_code(torch.compile(f, fullgraph=True), x)
    ref = f(x)
    assert out.shape == ref.shape == (*batch, n)
    if tiers.selected() and math.prod(batch) <= 16:
        assert "cpp_torchlite_gemv" in code and "_int_mm" not in code
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
        return
    assert "_int_mm" in code, "the lowering runs int8 x int8 -> int32 GEMM"
    # one int8 code may round the other way (fused float ops): one step of one activation
    step = (x.abs().amax(-1, keepdim=True) / 127 if not static else x_scale) * qw.scale.max()
    assert ((out - ref).abs() <= 127 * step * 1.01 + 1e-5).all()
    assert (out - ref).abs().mean() < 1e-3 * ref.abs().mean() + 1e-6


def test_kernel_clamps_static_scale_and_keeps_per_token_scales(kernel_tier):
    """Rows of very different magnitude keep their own scales; a static scale clamps outliers at ±127
    steps, as the op does."""
    qw, bias = _case(48, 256, seed=1)
    x = torch.randn(3, 256)
    x[1] *= 1000.0
    x[2, :5] *= 300.0
    for x_scale in (None, torch.full((1, 1), 0.01)):
        def f(x):
            return A8(x, qw.qdata, qw.scale, bias, 256, x_scale)

        out, (code, *_) = run_and_get_code(torch.compile(f, fullgraph=True), x)
        assert "cpp_torchlite_gemv" in code
        ref = f(x)
        for row in range(3):
            torch.testing.assert_close(out[row], ref[row], rtol=1e-5, atol=1e-5 * ref[row].abs().max().item())


class Block(torch.nn.Module):
    def __init__(self, d=64, h=128):
        super().__init__()
        self.up, self.down = torch.nn.Linear(d, h), torch.nn.Linear(h, d)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


@pytest.mark.parametrize("activations", ["dynamic", "static"])
def test_pass_compress_and_backend_agree(activations):
    model, x = Block().eval(), torch.randn(2, 8, 64)
    calib = [torch.randn(2, 8, 64) for _ in range(3)]
    cfg = Quantize(bits=8, activations=activations)
    gm = torchlite.trace(model, (x,))
    new, _ = torchlite.passes.quantize(gm, cfg, calib)
    assert [n.target for n in new.graph.nodes].count(A8) == 2
    small = torchlite.compress(model, Recipe(quantize=cfg), calib=calib)
    with torch.no_grad():
        torch.testing.assert_close(new(x), small(x), rtol=1e-5, atol=1e-5)
        compiled = torch.compile(model, backend="lite", options={"recipe": Recipe(quantize=cfg), "calib": calib})
        out = compiled(x)
        assert (out - small(x)).abs().mean() < 1e-3 * small(x).abs().mean()
        assert (small(x) - model(x)).abs().max() < 0.05 * model(x).abs().max()
    assert torchlite.parse_recipe("w8a8").quantize == Quantize(bits=8, activations="dynamic")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(bits=4, group_size=32, activations="dynamic"), "needs bits=8"),
        (dict(bits=8, symmetric=False, activations="dynamic"), "symmetric=True"),
        (dict(bits=8, activations="int8"), "allowed: None, 'dynamic', 'static'"),
    ],
)
def test_bad_w8a8_configs(kwargs, match):
    with pytest.raises(TorchliteError, match=match):
        Quantize(**kwargs)


def test_smoothquant_moves_outliers_into_the_weights():
    model = Block().eval()
    calib = [torch.randn(4, 16, 64) for _ in range(3)]
    for x in calib:
        x[..., :3] *= 50  # activation outlier channels
    plain = torchlite.compress(model, Recipe(quantize=Quantize(bits=8, activations="dynamic")))
    smooth = torchlite.compress(model, "w8a8-smoothquant", calib=calib)
    assert smooth.up.input_scale is not None and smooth.up.input_scale[:3].max() < smooth.up.input_scale[3:].min()
    with torch.no_grad():
        err = {name: sum((m(x) - model(x)).norm().item() for x in calib) for name, m in (("plain", plain), ("smooth", smooth))}
    assert err["smooth"] < err["plain"]
    with pytest.raises(TorchliteError, match="is for W8A8"):
        Quantize(bits=8, method="smoothquant")


def test_static_needs_calibration():
    with pytest.raises(TorchliteError, match="needs calibration data"):
        torchlite.compress(Block().eval(), Recipe(quantize=Quantize(bits=8, activations="static")))
