"""Distances between two sets of features: Fréchet distance and the unbiased polynomial-kernel MMD².

Both run in float64 on the device of their inputs (numpy arrays are accepted too) and return a Python float.
Features are `(N, D)`: one row per video or image.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray


def _as_float64(x: ArrayLike) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    return x.detach().to(torch.float64)


def _symmetric_psd_sqrt(mat: Tensor) -> Tensor:
    """Square root of a symmetric PSD matrix by eigendecomposition; tiny negative eigenvalues become 0."""
    sym = (mat + mat.T) / 2
    eigvals, eigvecs = torch.linalg.eigh(sym)
    return (eigvecs * eigvals.clamp_min(0).sqrt()) @ eigvecs.T


def trace_sqrt_product(sigma1: Tensor, sigma2: Tensor) -> Tensor:
    """tr((Σ₁Σ₂)^½) computed as tr((√Σ₁ Σ₂ √Σ₁)^½), a symmetric PSD product, so the result is real."""
    root1 = _symmetric_psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    eigvals = torch.linalg.eigvalsh((inner + inner.T) / 2)
    return eigvals.clamp_min(0).sqrt().sum()


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """‖μ₁−μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½) in float64, with the stable symmetric square root.

    The symmetric form (TF-GAN's) has the same value as scipy's sqrtm of Σ₁Σ₂ but never produces complex
    values for near-singular covariances (e.g. fewer samples than feature dims).
    """
    mu1_t = _as_float64(mu1)
    device = mu1_t.device
    mu2_t, s1, s2 = (_as_float64(v).to(device) for v in (mu2, sigma1, sigma2))
    if mu1_t.ndim != 1 or mu1_t.shape != mu2_t.shape:
        raise ValueError(
            f"means must be 1-D vectors of equal length, got {tuple(mu1_t.shape)} and {tuple(mu2_t.shape)}"
        )
    dim = mu1_t.shape[0]
    if s1.shape != (dim, dim) or s2.shape != (dim, dim):
        raise ValueError(
            f"covariances must be ({dim}, {dim}) to match the means, got {tuple(s1.shape)} and {tuple(s2.shape)}"
        )
    diff = mu1_t - mu2_t
    value = diff.dot(diff) + torch.trace(s1) + torch.trace(s2) - 2 * trace_sqrt_product(s1, s2)
    return float(value)


def _polynomial_kernel(x: Tensor, y: Tensor, degree: int, gamma: float, coef: float) -> Tensor:
    return (gamma * (x @ y.T) + coef) ** degree


def unbiased_mmd2(x: Tensor, y: Tensor, degree: int, gamma: float, coef: float) -> Tensor:
    """Unbiased MMD² of one pair of float64 sets: diagonals dropped from K_xx and K_yy, full mean of K_xy."""
    m, n = x.shape[0], y.shape[0]
    k_xx = _polynomial_kernel(x, x, degree, gamma, coef)
    k_yy = _polynomial_kernel(y, y, degree, gamma, coef)
    k_xy = _polynomial_kernel(x, y, degree, gamma, coef)
    term_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    term_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return term_xx + term_yy - 2 * k_xy.mean()


def _tfgan_block_bounds(n_x: int, n_y: int, block_size: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(start, end) of each block of both sets, as TF-GAN's kernel_classifier_distance splits them."""
    n_blocks = -(-max(n_x, n_y) // block_size)

    def bounds(n: int) -> list[tuple[int, int]]:
        base, extra = divmod(n, n_blocks)
        sizes = [base] * (n_blocks - extra) + [base + 1] * extra
        if min(sizes) < 2:
            raise ValueError(f"{n} samples cannot fill {n_blocks} blocks of at least 2; raise block_size")
        ends = torch.tensor(sizes).cumsum(0).tolist()
        return list(zip([0, *ends[:-1]], ends))

    return bounds(n_x), bounds(n_y)


def polynomial_mmd_per_subset(
    x: ArrayLike,
    y: ArrayLike,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    subsets: int | None = None,
    subset_size: int | None = None,
    seed: int = 0,
    block_size: int | None = None,
) -> Tensor:
    """Unbiased polynomial MMD² per subset (a 1-element tensor when `subsets` is None: the full sets).

    Subsets follow KID (StyleGAN2-ADA, torchmetrics): each draws m = min(subset_size, N_x, N_y) rows of
    each set without replacement; the draws come from a torch.Generator seeded with `seed`, so results
    are reproducible and do not depend on the global RNG. `block_size` (with `subsets=None`) is TF-GAN's
    estimator instead: ceil(max(N_x, N_y) / block_size) contiguous blocks of near-equal size, the larger
    blocks last, one estimate per block.
    """
    xt = _as_float64(x)
    yt = _as_float64(y).to(xt.device)
    if xt.ndim != 2 or yt.ndim != 2 or xt.shape[1] != yt.shape[1]:
        raise ValueError(f"features must be (N, D) with equal D, got {tuple(xt.shape)} and {tuple(yt.shape)}")
    if xt.shape[0] < 2 or yt.shape[0] < 2:
        raise ValueError(f"MMD needs at least 2 samples per set, got {xt.shape[0]} and {yt.shape[0]}")
    gamma_value = 1.0 / xt.shape[1] if gamma is None else float(gamma)
    if subsets is None and block_size is not None:
        bounds_x, bounds_y = _tfgan_block_bounds(xt.shape[0], yt.shape[0], block_size)
        return torch.stack([
            unbiased_mmd2(xt[a:b], yt[c:d], degree, gamma_value, coef)
            for (a, b), (c, d) in zip(bounds_x, bounds_y)
        ])
    if subsets is None:
        return unbiased_mmd2(xt, yt, degree, gamma_value, coef).reshape(1)
    m = min(xt.shape[0], yt.shape[0]) if subset_size is None else min(subset_size, xt.shape[0], yt.shape[0])
    if m < 2:
        raise ValueError(f"subset_size must be at least 2, got {subset_size}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    values = []
    for _ in range(subsets):
        idx_x = torch.randperm(xt.shape[0], generator=generator)[:m].to(xt.device)
        idx_y = torch.randperm(yt.shape[0], generator=generator)[:m].to(yt.device)
        values.append(unbiased_mmd2(xt[idx_x], yt[idx_y], degree, gamma_value, coef))
    return torch.stack(values)


def polynomial_mmd(
    x: ArrayLike,
    y: ArrayLike,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    subsets: int | None = None,
    subset_size: int | None = None,
    seed: int = 0,
) -> float:
    """Unbiased MMD² with kernel (γ·xᵀy + coef)^degree, γ = 1/dim by default; mean over subsets if any.

    `subsets=None` uses the full sets (TATS' KVD); `subsets=100, subset_size=1000` is KID's protocol.
    """
    per_subset = polynomial_mmd_per_subset(x, y, degree, gamma, coef, subsets, subset_size, seed)
    return float(per_subset.mean())
