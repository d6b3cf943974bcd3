"""Walk-through: low-rank factorization by hand, plain SVD against whitening, then factor + int8.

Run: python examples/factor_by_hand.py   (CI runs it through tests/test_examples.py)
"""
import torch
import torch.nn.functional as F

import torchlite
from torchlite import Factor, Quantize, Recipe


class Block(torch.nn.Module):
    def __init__(self, d=128, hidden=344):
        super().__init__()
        self.gate = torch.nn.Linear(d, hidden, bias=False)
        self.up = torch.nn.Linear(d, hidden, bias=False)
        self.down = torch.nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


def inputs(seed, d=128):
    """Activations with a few large features, as in real language models."""
    x = torch.randn(1, 32, d, generator=torch.Generator().manual_seed(seed))
    x[..., :6] *= 25
    return x


def main():
    torch.manual_seed(0)
    model = Block().eval()
    calib, held_out = [inputs(i) for i in range(8)], inputs(99)
    gm = torchlite.trace(model, (held_out,))

    errors = {}
    for method in ("svd", "whiten"):
        new, report = torchlite.passes.factor(gm, Factor(budget=0.6, method=method), calib=calib)
        print(report)                       # ranks, energy, errors, params and symbolic FLOPs
        with torch.no_grad():
            ref = model(held_out)
            errors[method] = ((new(held_out) - ref).norm() / ref.norm()).item()
    print(f"relative output error at 60 % of the parameters: svd {errors['svd']:.3f}, whiten {errors['whiten']:.3f}")
    assert errors["whiten"] < errors["svd"]

    recipe = Recipe(factor=Factor(budget=0.6, method="whiten"), quantize=Quantize(bits=8))
    small = torchlite.compress(model, recipe, calib=calib)
    print(small)                            # LowRankLinear of two QuantizedLinear each
    with torch.no_grad():
        compiled = torch.compile(small)     # Inductor with torchlite's qlinear lowering
        diff = (compiled(held_out) - small(held_out)).abs().max().item()
    print(f"compiled vs eager: max |diff| {diff:.2e}")
    assert diff < 1e-3


if __name__ == "__main__":
    main()
