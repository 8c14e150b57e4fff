"""``ntkit.analysis._eigenlearning``: the eigenlearning equations against their closed forms and
against kernel ridge regression averaged over random training sets (issue 18, item 4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntkit import layers as L  # noqa: N812 - the documented alias
from ntkit.analysis import eigenlearning, eigensystem, learning_curve
from ntkit.solve import NotPSDError

pytestmark = pytest.mark.usefixtures("single_thread")

# "3-layer ReLU net": three Dense layers, two ReLU hidden layers (He scale, small bias).
NET = L.serial(L.Dense(512, W_std=math.sqrt(2), b_std=0.1), L.ReLU(),
               L.Dense(512, W_std=math.sqrt(2), b_std=0.1), L.ReLU(), L.Dense(1))


def power_law(m: int = 500, alpha: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    i = torch.arange(1, m + 1, dtype=torch.float64)
    return i**-alpha, i ** (-alpha / 2) * torch.cos(i)


@pytest.mark.parametrize("n", [1, 7.5, 40, 499])
def test_ridgeless_learnabilities_sum_to_n(n):
    lam, v = power_law()
    pred = eigenlearning(lam, v, n)
    # the conservation law (sum_i L_i = n at zero ridge); kappa is solved to the last bits
    assert abs(float(pred.learnabilities.sum()) - n) <= 1e-8
    assert float(pred.train_mse) == 0.0


@pytest.mark.parametrize("ridge", [1e-4, 0.3, 50.0])
def test_ridge_constraint_holds(ridge):
    lam, v = power_law()
    pred = eigenlearning(lam, v, 30, ridge=ridge)
    assert abs(float(pred.learnabilities.sum()) + ridge / pred.kappa - 30) <= 1e-8


def test_flat_spectrum_closed_form():
    # M equal eigenvalues l: L = n / M, kappa = l (M - n) / n, E0 = M / (M - n); the test MSE
    # is E0 ((1 - n/M)^2 |v|^2 + noise) and the train MSE (delta / (n kappa))^2 of it.
    m, n, lam0, noise = 200, 50, 0.01, 0.3
    lam = torch.full((m,), lam0, dtype=torch.float64)
    v = torch.linspace(-1, 1, m, dtype=torch.float64)
    pred = eigenlearning(lam, v, n, noise=noise)
    assert pred.kappa == pytest.approx(lam0 * (m - n) / n, rel=1e-13)
    assert pred.e0 == pytest.approx(m / (m - n), rel=1e-13)
    assert float(pred.test_mse) == pytest.approx(
        m / (m - n) * ((1 - n / m) ** 2 * float((v**2).sum()) + noise), rel=1e-12)
    # with ridge: n = m l / (l + kappa) + delta / kappa is a quadratic in kappa
    delta = 0.2
    pred = eigenlearning(lam, v, n, ridge=delta, noise=noise)
    b = lam0 - m * lam0 / n - delta / n  # n kappa^2 + n b kappa - delta l = 0
    kappa = (-b + math.sqrt(b * b + 4 * delta * lam0 / n)) / 2
    assert pred.kappa == pytest.approx(kappa, rel=1e-12)
    assert float(pred.train_mse) == pytest.approx(
        (delta / (n * kappa)) ** 2 * float(pred.test_mse), rel=1e-12)


def test_learning_curve_stacks_pointwise_predictions_and_outputs():
    lam, v = power_law()
    v2 = torch.stack([v, 2 * v], 1)
    curve = learning_curve(lam, v2, [10, 20, 40], ridge=1e-3, noise=0.1)
    assert curve.test_mse.shape == (3, 2) and curve.learnabilities.shape == (3, 500)
    for j, n in enumerate((10, 20, 40)):
        one = eigenlearning(lam, v, n, ridge=1e-3, noise=0.1)
        torch.testing.assert_close(curve.test_mse[j, 0], one.test_mse, rtol=1e-12, atol=0)
    # output 2 has 4x the target power; the noise term is shared, so compare the bias parts
    bias = curve.test_mse - 0.1 * curve.e0[:, None]
    torch.testing.assert_close(bias[:, 1], 4 * bias[:, 0], rtol=1e-12, atol=0)
    assert bool((curve.test_mse[:, 0].diff() < 0).all())


def test_eigensystem_parseval_and_trace():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g, dtype=torch.float64)
    k = NET.kernel(x, get="ntk").ntk
    y = torch.sin(x[:, :2])
    lam, v = eigensystem(k, y)
    # sum of operator eigenvalues = mean diagonal; Parseval on the pool: sum v^2 = mean y^2
    assert float(lam.sum()) == pytest.approx(float(k.diagonal().mean()), rel=1e-10)
    torch.testing.assert_close((v**2).sum(0), (y**2).mean(0), rtol=1e-10, atol=0)
    assert bool((lam.diff() <= 0).all())


def _krr_test_mse(k_all: torch.Tensor, n: int, y_train: torch.Tensor,
                  f_test: torch.Tensor) -> float:
    c = torch.linalg.solve(k_all[:n], y_train)
    return float(((k_all[n:] @ c - f_test) ** 2).mean())


def sphere(m: int, d: int, g: torch.Generator) -> torch.Tensor:
    x = torch.randn(m, d, generator=g, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True) * math.sqrt(d)


def sphere_target(x: torch.Tensor) -> torch.Tensor:
    # degrees 1, 2 and 3 (a Hermite cubic), mean square ~1.6
    return x[:, 0] + 0.8 * x[:, 1] * x[:, 2] + 0.5 * (x[:, 3] ** 3 - 3 * x[:, 3]) / math.sqrt(6)


def test_sphere_ntk_learning_curve_matches_kernel_regression():
    # (a) of the issue: ReLU NTK, inputs uniform on the sphere in d = 16, noise variance 0.1,
    # ridgeless. The eigensystem comes from a pool of 2000 sphere points; training and test
    # sets are fresh draws from the sphere. Measured (seed 0): predicted/measured = 1.05, 0.98,
    # 1.06 at n = 50, 200, 800, standard errors of the 20-set means 2.3 %, 1.9 %, 0.9 %; the
    # 10 % tolerance is the issue's.
    d, noise = 16, 0.1
    g = torch.Generator().manual_seed(0)
    pool = sphere(2000, d, g)
    lam, v = eigensystem(NET.kernel(pool, get="ntk").ntk, sphere_target(pool))
    ns = [50, 200, 800]
    predicted = learning_curve(lam, v, ns, noise=noise).test_mse
    x_test = sphere(1000, d, g)
    f_test = sphere_target(x_test)
    for n, want in zip(ns, predicted.tolist(), strict=True):
        errors = []
        for _ in range(20):
            x = sphere(n, d, g)
            y = sphere_target(x) + math.sqrt(noise) * torch.randn(n, generator=g,
                                                                   dtype=torch.float64)
            k_all = NET.kernel(torch.cat([x, x_test]), x, get="ntk").ntk
            errors.append(_krr_test_mse(k_all, n, y, f_test) + noise)  # noisy test labels
        assert want == pytest.approx(np.mean(errors), rel=0.10), n


def test_digits_ntk_learning_curve_matches_kernel_regression():
    # (b) of the issue: the same NTK on scikit-learn's digits, the 1797 images as the measure
    # (training sets drawn from them without replacement, the error averaged over all of
    # them), target "is it a 0" (0/1), ridgeless. Measured (seed 1, 40 sets):
    # predicted/measured = 1.06, 0.96, 0.95 at n = 50, 200, 400; the standard error of the mean
    # at n = 50 is ~4 %, hence 40 sets rather than 20. Other digits: see
    # docs/learning_curves.md (the theory underpredicts some by up to 14 % at n = 400).
    from sklearn.datasets import load_digits

    pixels, labels = load_digits(return_X_y=True)
    x = torch.tensor(pixels, dtype=torch.float64)
    x = x - x.mean(0)
    x = x / x.norm(dim=1, keepdim=True) * 8.0  # unit input-kernel diagonal x.x / 64
    f = torch.tensor(labels == 0, dtype=torch.float64)
    k = NET.kernel(x, get="ntk").ntk
    lam, v = eigensystem(k, f)
    ns = [50, 200, 400]
    predicted = learning_curve(lam, v, ns).test_mse
    g = torch.Generator().manual_seed(1)
    for n, want in zip(ns, predicted.tolist(), strict=True):
        errors = []
        for _ in range(40):
            idx = torch.randperm(len(x), generator=g)[:n]
            k_all = torch.cat([k[idx][:, idx], k[:, idx]])
            errors.append(_krr_test_mse(k_all, n, f[idx], f))
        assert want == pytest.approx(np.mean(errors), rel=0.10), n


@pytest.mark.parametrize("call, match", [
    (lambda lam, v: eigenlearning(lam, v, 600, ridge=1.0), "larger than the number"),
    (lambda lam, v: eigenlearning(lam, v, 0), "n must be > 0"),
    (lambda lam, v: eigenlearning(lam, v[:-1], 10), "target_coeffs must have shape"),
    (lambda lam, v: eigenlearning(lam, v, 10, ridge=-1.0), "ridge must be >= 0"),
    (lambda lam, v: eigenlearning(lam, v, 10, noise=-0.1), "noise must be >= 0"),
    (lambda lam, v: eigenlearning(lam - 0.01, v, 10), "eigenvalues must be >= 0"),
    (lambda lam, v: eigenlearning(lam.clone().index_fill_(0, torch.tensor([3]), math.nan), v,
                                  10), "eigenvalues contains NaN"),
    (lambda lam, v: eigenlearning(lam, v.clone().index_fill_(0, torch.tensor([3]), math.inf),
                                  10), "target_coeffs contains NaN"),
    (lambda lam, v: eigenlearning(lam[:0], v[:0], 10), "non-empty 1-D"),
    (lambda lam, v: eigenlearning(lam[:, None], v, 10), "non-empty 1-D"),
    (lambda lam, v: eigenlearning(torch.cat([lam[:20], torch.zeros(480, dtype=lam.dtype)]), v,
                                  20), "nonzero eigenvalues"),
    (lambda lam, v: learning_curve(lam, v, [10, 500]), "nonzero eigenvalues"),
    (lambda lam, v: learning_curve(lam, v, []), "non-empty 1-D"),
    (lambda lam, v: learning_curve(lam, v, [10, math.nan]), "ns must be finite"),
    (lambda lam, v: eigenlearning(lam, v, math.inf), "n must be finite"),
    (lambda lam, v: eigensystem(torch.ones(3, 4, dtype=torch.float64), v[:3]), "square"),
    (lambda lam, v: eigensystem(torch.eye(3, dtype=torch.float64), v[:4]), "same P as k_pool"),
    (lambda lam, v: eigensystem(-torch.eye(3, dtype=torch.float64), v[:3]),
     "not positive semi-definite"),
    (lambda lam, v: eigensystem(torch.eye(3, dtype=torch.float64),
                                torch.tensor([1.0, math.nan, 0.0])), "y_pool contains NaN"),
])
def test_bad_input_raises_naming_the_argument(call, match):
    lam, v = power_law()
    with pytest.raises(ValueError, match=match):
        call(lam, v)


def test_bad_types_raise_type_error():
    lam, v = power_law()
    with pytest.raises(TypeError, match="eigenvalues"):
        eigenlearning("spectrum", v, 10)
    with pytest.raises(TypeError, match="n must be a real number"):
        eigenlearning(lam, v, "10")
    with pytest.raises(TypeError, match="target_coeffs must hold real numbers"):
        eigenlearning(lam, v.to(torch.complex128), 10)
    assert issubclass(NotPSDError, ValueError)
