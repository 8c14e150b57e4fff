"""``ntkit.analysis._rf_risk``: the random-feature risk estimate against its limits, closed
forms, and ReLU random-feature ridge regression averaged over draws (issue 18, item 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntkit import layers as L  # noqa: N812 - the documented alias
from ntkit.analysis import eigenlearning, eigensystem, optimal_ridge, rf_learning_curve, rf_risk

pytestmark = pytest.mark.usefixtures("single_thread")


def power_law(m: int = 800, alpha: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    i = torch.arange(1, m + 1, dtype=torch.float64)
    return i**-alpha, i ** (-alpha / 2) * torch.cos(i)


@pytest.mark.parametrize("n, ridge", [(20, 0.0), (50, 1e-3), (200, 0.5)])
def test_infinitely_many_features_is_eigenlearning(n, ridge):
    lam, v = power_law()
    kernel = eigenlearning(lam, v, n, ridge=ridge, noise=0.2)
    # k = inf takes eigenlearning's path; k = 1e12 the RF equations, whose corrections are
    # O(n / k) = O(1e-10): agreement to 1e-7 relative checks the limit, not a shared path
    exact = rf_risk(lam, v, n, math.inf, ridge=ridge, noise=0.2)
    assert exact.kappa == kernel.kappa and exact.gamma == kernel.kappa
    wide = rf_risk(lam, v, n, 1e12, ridge=ridge, noise=0.2)
    assert wide.gamma == pytest.approx(kernel.kappa, rel=1e-7)
    assert float(wide.test_mse) == pytest.approx(float(kernel.test_mse), rel=1e-7)
    assert float(wide.train_mse) == pytest.approx(float(kernel.train_mse), rel=1e-7, abs=1e-14)


@pytest.mark.parametrize("n, k, ridge", [(100, 30, 0.0), (60, 300, 0.0), (100, 30, 0.05),
                                         (60, 300, 1e-3)])
def test_fixed_point_equations_hold(n, k, ridge):
    lam, v = power_law()
    p = rf_risk(lam, v, n, k, ridge=ridge)
    z = float((lam / (lam + p.gamma)).sum())
    if ridge > 0:
        assert z + ridge / p.kappa == pytest.approx(n, rel=1e-10)
        assert z + k * p.kappa / p.gamma == pytest.approx(k, rel=1e-10)
    else:  # the binding constraint: z = min(n, k)
        assert z == pytest.approx(min(n, k), rel=1e-10)


def test_ridgeless_underparametrized_is_least_squares():
    # k < n at ridge 0: least squares on k features, E0 = n / (n - k), and the train MSE is
    # ((n - k) / n)^2 of the test MSE (the OLS ratio: sigma^2 (n-k)/n over sigma^2 n/(n-k))
    lam, v = power_law()
    p = rf_risk(lam, v, 100, 40, noise=0.5)
    assert p.kappa == 0.0 and p.e0 == pytest.approx(100 / 60, rel=1e-12)
    assert float(p.train_mse) == pytest.approx(0.36 * float(p.test_mse), rel=1e-12)
    peak = rf_learning_curve(lam, v, 100, [40, 100, 400])
    assert bool(peak.test_mse[0, 1].isinf()) and not bool(peak.test_mse[0, 0].isinf())


def test_more_features_and_more_data_help_at_the_optimal_ridge():
    # the paper's Theorem ("more is better"): at the optimal ridge the risk falls with k and n
    lam, v = power_law()
    by_k = [float(optimal_ridge(lam, v, 100, k, noise=0.3).test_mse)
            for k in (20, 50, 100, 200, 800, math.inf)]
    assert all(b < a for a, b in zip(by_k, by_k[1:], strict=False)), by_k
    by_n = [float(optimal_ridge(lam, v, n, 200, noise=0.3).test_mse) for n in (25, 50, 100)]
    assert all(b < a for a, b in zip(by_n, by_n[1:], strict=False)), by_n
    best = optimal_ridge(lam, v, 100, 200, noise=0.3)
    for factor in (0.5, 2.0):  # the optimum is a minimum of the curve it was searched on
        other = rf_risk(lam, v, 100, 200, ridge=best.ridge * factor, noise=0.3)
        assert float(best.test_mse) <= float(other.test_mse)


def test_relu_random_feature_regression_matches_the_estimate():
    # ReLU features relu(w . x / sqrt(d)), w ~ N(0, I) (the finite twin of Dense - ReLU), whose
    # limiting kernel is the NNGP of the same spec; inputs on the sphere in d = 16, the pool of
    # 1500 points is the measure (training sets drawn from it, error averaged over it), noise
    # variance 0.1. Measured (seed 0, 40 draws of data and features): predicted/measured test
    # MSE within 4 % at every point; the standard error of a 40-draw mean is <= 4 %, so the
    # issue's 10 % leaves > 2 standard errors. Train MSE (ridge > 0): within 9 %, checked at 15 %.
    d, noise, pool = 16, 0.1, 1500
    g = torch.Generator().manual_seed(0)
    x = torch.randn(pool, d, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * math.sqrt(d)
    f = x[:, 0] + 0.8 * x[:, 1] * x[:, 2] + 0.5

    def spec(k: int) -> L.Serial:
        return L.serial(L.Dense(k, W_std=1.0, b_std=0.0), L.ReLU())

    lam, v = eigensystem(spec(1).kernel(x, get="nngp").nngp, f)
    for n, k, ridge in [(100, 50, 1e-3), (100, 400, 0.0), (200, 100, 1e-2), (200, 800, 1e-3),
                        (200, 150, 0.0)]:
        want = rf_risk(lam, v, n, k, ridge=ridge, noise=noise)
        test, train = [], []
        for _ in range(40):
            idx = torch.randperm(pool, generator=g)[:n]
            phi = spec(k).module((d,), dtype=torch.float64, generator=g)(x).detach()
            phi = phi / math.sqrt(k)  # feature kernel (1/k) sum_j psi_j psi_j^T
            y = f[idx] + math.sqrt(noise) * torch.randn(n, generator=g, dtype=torch.float64)
            if ridge == 0.0 and k < n:
                w = torch.linalg.lstsq(phi[idx], y[:, None]).solution[:, 0]
            else:
                gram = phi[idx] @ phi[idx].T
                gram.diagonal().add_(ridge)
                w = phi[idx].T @ torch.linalg.solve(gram, y)
            fit = phi @ w
            test.append(float(((fit - f) ** 2).mean()) + noise)
            train.append(float(((fit[idx] - y) ** 2).mean()))
        assert float(want.test_mse) == pytest.approx(np.mean(test), rel=0.10), (n, k, ridge)
        if ridge > 0 and k < n:
            assert float(want.train_mse) == pytest.approx(np.mean(train), rel=0.15), (n, k)


@pytest.mark.parametrize("call, match", [
    (lambda lam, v: rf_risk(lam, v, 10, 0), "k \\(the number of random features\\) must be"),
    (lambda lam, v: rf_risk(lam, v, 10, math.nan), "k must be finite"),
    (lambda lam, v: rf_risk(lam, v, 10, 20, ridge=-1.0), "ridge must be >= 0"),
    (lambda lam, v: rf_risk(lam, v, 900, 20, ridge=1.0), "larger than the number"),
    (lambda lam, v: rf_risk(lam, v[:5], 10, 20), "target_coeffs must have shape"),
    (lambda lam, v: rf_risk(-lam, v, 10, 20), "eigenvalues must be >= 0"),
    (lambda lam, v: rf_risk(torch.cat([lam[:5], torch.zeros(795, dtype=lam.dtype)]), v, 100,
                            10), "k must be smaller than the number of nonzero"),
    (lambda lam, v: rf_learning_curve(lam, v, [10], []), "ks must be a non-empty"),
    (lambda lam, v: optimal_ridge(torch.zeros(800, dtype=lam.dtype), v, 10, 20),
     "all zero"),
])
def test_bad_input_raises_naming_the_argument(call, match):
    lam, v = power_law()
    with pytest.raises(ValueError, match=match):
        call(lam, v)
