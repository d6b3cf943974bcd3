"""Walk-through: the quantize pass by hand on a small transformer block, then the lite backend.

Run: python examples/quantize_by_hand.py   (CI runs it through tests/test_examples.py)
"""
import torch
import torch.nn.functional as F

import torchlite
from torchlite import Quantize


class Block(torch.nn.Module):
    def __init__(self, d=256, hidden=688):
        super().__init__()
        self.norm = torch.nn.RMSNorm(d)
        self.gate = torch.nn.Linear(d, hidden, bias=False)
        self.up = torch.nn.Linear(d, hidden, bias=False)
        self.down = torch.nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        h = self.norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def main():
    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(1, 8, 256)

    gm = torchlite.trace(model, (x,))                          # 1. a GraphModule with aten.linear nodes
    cfg = Quantize(bits=4, group_size=64)
    staged, _ = torchlite.passes.quantize(gm, cfg, fuse=False)
    print(staged.graph)                                        # 2. dequantize -> linear, before fusion
    quantized, report = torchlite.passes.quantize(gm, cfg)
    print(report)                                              # 3. per-layer bytes and error

    with torch.no_grad():
        err = (quantized(x) - model(x)).abs().max().item()
        compiled = torch.compile(model, backend="lite", options={"recipe": torchlite.Recipe(quantize=cfg)})
        err_compiled = (compiled(x) - quantized(x)).abs().max().item()
    print(f"int4 g64 vs fp32: max |diff| {err:.4f}; compiled vs eager torchlite ops: {err_compiled:.2e}")
    assert err_compiled < 1e-3


if __name__ == "__main__":
    main()
