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


def lut_error_bound(qw, x: torch.Tensor) -> torch.Tensor:
    """[M, N] bound on |kernel − eager| for csrc/vq_lut.cpp, whose per-call tables hold each dot product
    of d activations with a centroid in steps of B / (127·256), B = max_j Σ_t |x_jt|·max_c |c_t|
    (per activation row and codebook). The J rounding errors of a row are uniform within half a step:
    allowed are six standard deviations, times the row scale, plus float32 rounding (1e-6 of J·B)."""
    x2 = x.reshape(-1, x.shape[-1]).double()
    d, j = qw.vector_dim, qw.in_features // qw.vector_dim
    n, rows = qw.out_features, qw.group_size or qw.out_features
    top = qw.codebook.double().abs().amax(1)  # [G, d]
    bound = (x2.abs().reshape(len(x2), j, 1, d) * top[None, None]).sum(-1).amax(1)  # [M, G]
    per_row = bound[:, torch.arange(n) // rows]  # [M, N]
    step = per_row / (127 * 256)
    return ((6 * step * (j / 12) ** 0.5 + 1e-6 * j * per_row) * qw.scale.double()[:, 0]).float()
