"""The precision contract of the weight-only VNNI kernels, shared by their tests."""
import torch


def parts_error_bound(w: torch.Tensor, x: torch.Tensor, parts: int) -> torch.Tensor:
    """[M, N] bound on |kernel − eager| for a weight-only VNNI call y = x·Ŵᵀ whose activations enter as
    `parts` int8 parts (csrc/activation_parts.h, inductor.vnni.weight_only_parts).

    Part p's step is at most max|x_m| / (127·254^(p−1)) (each part codes at most half the previous
    step); the last part's rounding errors are uniform within half its step, so their weighted sum has
    a standard deviation of √(Σ_k Ŵ²)·step/√12. Allowed: six of those, plus float32 rounding of the
    sums (1e-6 of Σ|Ŵ||x|). One part fewer makes the error ~250x larger."""
    x2, w = x.reshape(-1, x.shape[-1]).double(), w.double()
    step = x2.abs().amax(1, keepdim=True) / (127 * 254 ** (parts - 1))
    sigma = step * w.square().sum(1).sqrt()[None, :] / 12**0.5
    return (6 * sigma + 1e-6 * (x2.abs() @ w.abs().T)).float()


def parts_for(bits: int) -> int:
    """The contract, stated apart from the code under test: three parts against 8-bit codes, two
    against narrower ones (and VQ)."""
    return 3 if bits == 8 else 2
