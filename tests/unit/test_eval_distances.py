"""frechet_distance and polynomial_mmd against closed forms, scipy and a direct double loop."""

import itertools

import numpy as np
import pytest
import scipy.linalg
import torch

from src.eval.distances import frechet_distance, polynomial_mmd, polynomial_mmd_per_subset


def _random_psd(rng: np.random.Generator, dim: int, samples: int) -> np.ndarray:
    x = rng.normal(size=(samples, dim))
    return np.cov(x, rowvar=False)


def _scipy_frechet(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def test_frechet_closed_form_diagonal():
    a = np.array([0.5, 2.0, 3.0, 0.1])
    b = np.array([1.5, 0.2, 3.0, 4.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, -1.0]), np.array([1.0, 1.0, 0.0, 0.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-12)


def test_frechet_matches_scipy_full_covariances():
    rng = np.random.default_rng(0)
    dim = 24
    s1, s2 = _random_psd(rng, dim, 200), _random_psd(rng, dim, 300) * 2.0
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    expected = _scipy_frechet(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # torch inputs (float32 included) give the same float64 result
    got_torch = frechet_distance(
        torch.from_numpy(mu1), torch.from_numpy(s1), torch.from_numpy(mu2), torch.from_numpy(s2)
    )
    assert got_torch == pytest.approx(expected, rel=1e-9)


def test_frechet_singular_covariances_stay_real_and_finite():
    rng = np.random.default_rng(1)
    dim = 40  # fewer samples than dims: rank-deficient covariances, where sqrtm goes complex
    s1, s2 = _random_psd(rng, dim, 10), _random_psd(rng, dim, 12)
    mu = np.zeros(dim)
    value = frechet_distance(mu, s1, mu, s2)
    assert isinstance(value, float) and np.isfinite(value)
    assert value == pytest.approx(_scipy_frechet(mu, s1, mu, s2), rel=1e-6, abs=1e-6)
    assert frechet_distance(mu, s1, mu, s1) == pytest.approx(0.0, abs=1e-5 * np.trace(s1))


def test_frechet_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))


def _loop_mmd(x: np.ndarray, y: np.ndarray, degree=3, gamma=None, coef=1.0) -> float:
    gamma = 1.0 / x.shape[1] if gamma is None else gamma

    def k(a, b):
        return (gamma * float(np.dot(a, b)) + coef) ** degree

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i, j in itertools.product(range(m), range(m)) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i, j in itertools.product(range(n), range(n)) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i, j in itertools.product(range(m), range(n))) / (m * n)
    return kxx + kyy - 2 * kxy


@pytest.mark.parametrize("degree,gamma,coef", [(3, None, 1.0), (2, 0.3, 0.5)])
def test_polynomial_mmd_matches_double_loop(degree, gamma, coef):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(7, 5)), rng.normal(loc=0.4, size=(9, 5))
    expected = _loop_mmd(x, y, degree, gamma, coef)
    assert polynomial_mmd(x, y, degree=degree, gamma=gamma, coef=coef) == pytest.approx(expected, rel=1e-10)


def test_polynomial_mmd_subsets():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 4)), rng.normal(loc=0.5, size=(25, 4))
    full = polynomial_mmd(x, y)
    # a subset as large as the smaller set, drawn once, equals the full computation on those rows
    values = polynomial_mmd_per_subset(x, y, subsets=5, subset_size=10, seed=7)
    assert values.shape == (5,)
    again = polynomial_mmd_per_subset(x, y, subsets=5, subset_size=10, seed=7)
    assert torch.equal(values, again)
    assert not torch.equal(values, polynomial_mmd_per_subset(x, y, subsets=5, subset_size=10, seed=8))
    # every value is a real unbiased MMD² of 10 + 10 rows: reproduce the first with the same draw
    gen = torch.Generator().manual_seed(7)
    ix, iy = torch.randperm(30, generator=gen)[:10].numpy(), torch.randperm(25, generator=gen)[:10].numpy()
    assert float(values[0]) == pytest.approx(_loop_mmd(x[ix], y[iy]), rel=1e-10)
    # permuting rows does not change the unbiased estimator: one subset of all rows equals the full sets
    y_same = y[:25]
    assert polynomial_mmd(x[:25], y_same, subsets=1, subset_size=1000) == pytest.approx(
        polynomial_mmd(x[:25], y_same), rel=1e-10
    )
    assert np.isfinite(full)
