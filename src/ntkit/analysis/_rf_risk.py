"""The omniscient risk estimate of random-feature ridge regression.

Simon, Karkada, Ghosh & Belkin, "More is Better in Modern Machine Learning: when Infinite
Overparameterization is Optimal and Overfitting is Obligatory", ICLR 2024 (arXiv:2311.14646),
Section 4.1. ``k`` random features ``psi_j`` with ``E_w[psi_w(x) psi_w(x')] = K(x, x')``, the
feature kernel ``K_hat = (1/k) sum_j psi_j psi_j^T``, ridge ``delta`` on the ``(n, n)`` feature
Gram matrix. With the Mercer eigenvalues ``lambda_i`` of ``K`` and two effective
regularizations ``kappa``, ``gamma`` solving

    n = sum_i lambda_i / (lambda_i + gamma) + delta / kappa
    k = sum_i lambda_i / (lambda_i + gamma) + k kappa / gamma

and ``L_i = lambda_i / (lambda_i + gamma)``, ``z = sum_i L_i``, ``q = sum_i L_i^2``:

    E0 = n (k - q) / (n (k - q) - q (k - 2 z) - z^2)
    test MSE = E0 (sum_i [(1 - L_i)^2 + (z - q) / (k - q) L_i (1 - L_i)] v_i^2 + noise)
    train MSE = (delta / (n kappa))^2 test MSE

As ``k -> inf``, ``gamma -> kappa`` and these are the eigenlearning equations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._checks import real_number
from ._eigenlearning import (
    as_grid,
    check_below_rank,
    check_n,
    check_spectrum,
    lower_bracket,
    predict,
    root_log,
)

__all__ = ["RFRiskPrediction", "RFRiskCurve", "optimal_ridge", "rf_learning_curve", "rf_risk"]


@dataclass(frozen=True)
class RFRiskPrediction:
    """The random-feature risk estimate at one ``(n, k, ridge)`` (see :func:`rf_risk`).

    ``kappa`` is the effective regularization of the learned function (``delta / kappa`` of
    the ``n`` constraint), ``gamma`` the one that sets the learnabilities
    ``L_i = lambda_i / (lambda_i + gamma)`` (``(M,)``); at ``k = inf`` they coincide.
    ``test_mse``/``train_mse`` are 0-d for a 1-D target and ``(O,)`` for an ``(M, O)`` one.
    """

    n: float
    k: float
    ridge: float
    noise: float
    kappa: float
    gamma: float
    e0: float
    learnabilities: Tensor
    test_mse: Tensor
    train_mse: Tensor


@dataclass(frozen=True)
class RFRiskCurve:
    """:func:`rf_risk` over a grid: ``ns`` ``(Tn,)``, ``ks`` ``(Tk,)``; ``kappa``, ``gamma``,
    ``e0`` ``(Tn, Tk)``; ``test_mse``, ``train_mse`` ``(Tn, Tk)`` or ``(Tn, Tk, O)``."""

    ns: Tensor
    ks: Tensor
    ridge: float
    noise: float
    kappa: Tensor
    gamma: Tensor
    e0: Tensor
    test_mse: Tensor
    train_mse: Tensor


def rf_risk(eigenvalues, target_coeffs, n, k, *, ridge: float = 0.0,
            noise: float = 0.0) -> RFRiskPrediction:
    """The predicted test and train MSE of ridge regression on ``k`` random features.

    The omniscient risk estimate of Simon, Karkada, Ghosh & Belkin (ICLR 2024, Section 4.1;
    formulas in this module's docstring), solved in float64: ``kappa = gamma (k - z) / k``
    eliminates ``kappa``, and the remaining equation in ``gamma`` decreases monotonically, so
    bisection on ``log gamma`` finds its one root. Conventions as :func:`eigenlearning`:
    absolute ridge on the ``(n, n)`` Gram matrix of the features scaled by ``1/sqrt(k)``;
    ``noise`` is the label-noise variance, included in ``test_mse`` (noisy test labels).

    Ridgeless (``ridge = 0``): for ``k > n`` the model interpolates (``z = n``, train MSE 0);
    for ``k < n`` it is least squares on ``k`` features (``z = k``, ``kappa = 0``, train MSE
    ``((n - k) / n)^2`` times the test MSE, ``E0 = n / (n - k)``); at ``k = n`` the risk is
    infinite (``inf`` is returned), the double-descent peak.

    **Arguments:** ``eigenvalues`` ``(M,)``, ``target_coeffs`` ``(M,)`` or ``(M, O)`` as in
    :func:`eigenlearning` (the eigensystem of the *limiting* kernel ``K``); ``n`` samples
    (``0 < n <= M``); ``k > 0`` features (``math.inf`` gives :func:`eigenlearning`'s answer);
    ``ridge >= 0``; ``noise >= 0``. With ``ridge = 0``, ``min(n, k)`` must be below the number
    of nonzero eigenvalues.

    **Returns:** an :class:`RFRiskPrediction`.

    Example:
        >>> lam = 1.0 / torch.arange(1, 1001, dtype=torch.float64) ** 1.5
        >>> v = lam.sqrt()
        >>> few, many = rf_risk(lam, v, 100, 50, ridge=1e-3), rf_risk(lam, v, 100, 5000, ridge=1e-3)
        >>> float(many.test_mse) < float(few.test_mse)  # more features, lower risk
        True
        >>> inf = rf_risk(lam, v, 100, math.inf, ridge=1e-3)
        >>> abs(inf.kappa - inf.gamma) == 0.0
        True
    """
    ridge = real_number(ridge, "ridge", minimum=0.0)
    noise = real_number(noise, "noise", minimum=0.0)
    lam, v = check_spectrum(eigenvalues, target_coeffs)
    n = check_n(n, lam)
    k = _check_k(k)
    if ridge == 0.0:
        check_below_rank(min(n, k), lam, "k" if k < n else "n")
    return _rf_predict(lam, v, n, k, ridge, noise)


def rf_learning_curve(eigenvalues, target_coeffs, ns, ks, *, ridge: float = 0.0,
                      noise: float = 0.0) -> RFRiskCurve:
    """:func:`rf_risk` on the grid ``ns x ks`` (a scalar counts as a grid of one).

    **Returns:** an :class:`RFRiskCurve` (arrays ``(Tn, Tk)``, ``(Tn, Tk, O)`` for an
    ``(M, O)`` target), float64.

    Example:
        >>> lam = 1.0 / torch.arange(1, 1001, dtype=torch.float64) ** 1.5
        >>> curve = rf_learning_curve(lam, lam.sqrt(), 100, [10, 100, 1000], ridge=0.0)
        >>> curve.test_mse.shape, bool(curve.test_mse[0, 1].isinf())  # k = n: the peak
        (torch.Size([1, 3]), True)
    """
    ridge = real_number(ridge, "ridge", minimum=0.0)
    noise = real_number(noise, "noise", minimum=0.0)
    lam, v = check_spectrum(eigenvalues, target_coeffs)
    ns = [check_n(n, lam, "ns") for n in as_grid(np.atleast_1d(np.asarray(ns)), "ns")]
    ks = [_check_k(k, "ks") for k in as_grid(np.atleast_1d(np.asarray(ks)), "ks")]
    if ridge == 0.0:
        for n in ns:
            for k in ks:
                check_below_rank(min(n, k), lam, "ks" if k < n else "ns")
    preds = [[_rf_predict(lam, v, n, k, ridge, noise) for k in ks] for n in ns]
    f64 = {"dtype": torch.float64, "device": lam.device}

    def grid(field: str) -> Tensor:
        return torch.tensor([[getattr(p, field) for p in row] for row in preds], **f64)

    return RFRiskCurve(
        ns=torch.tensor(ns, **f64), ks=torch.tensor(ks, **f64), ridge=ridge, noise=noise,
        kappa=grid("kappa"), gamma=grid("gamma"), e0=grid("e0"),
        test_mse=torch.stack([torch.stack([p.test_mse for p in row]) for row in preds]),
        train_mse=torch.stack([torch.stack([p.train_mse for p in row]) for row in preds]))


def optimal_ridge(eigenvalues, target_coeffs, n, k=math.inf, *,
                  noise: float = 0.0) -> RFRiskPrediction:
    """The ridge ``>= 0`` that minimises the predicted test MSE of :func:`rf_risk` (of
    :func:`eigenlearning` for ``k = inf``), summed over outputs for an ``(M, O)`` target.

    Searched over ``0`` (where allowed) and 64 log-spaced ridges from ``1e-10`` to ``10 n``
    times ``sum_i lambda_i`` (the kernel's mean diagonal on the measure), then refined by
    golden-section search on ``log ridge`` between the best grid point's neighbours. A
    negative optimal ridge (possible for some noiseless tasks) is reported as 0.

    **Returns:** the :class:`RFRiskPrediction` at the optimal ridge (its ``ridge`` field).

    Example:
        >>> lam = 1.0 / torch.arange(1, 1001, dtype=torch.float64) ** 1.5
        >>> best = optimal_ridge(lam, lam.sqrt(), 100, 200, noise=0.5)
        >>> best.ridge > 0, float(best.test_mse) <= float(rf_risk(lam, lam.sqrt(), 100, 200,
        ...                                                     ridge=1e-6, noise=0.5).test_mse)
        (True, True)
    """
    noise = real_number(noise, "noise", minimum=0.0)
    lam, v = check_spectrum(eigenvalues, target_coeffs)
    n = check_n(n, lam)
    k = _check_k(k)
    rank = int((lam > 0).sum())
    scale = float(lam.sum())
    if scale <= 0:
        raise ValueError("eigenvalues are all zero: the kernel learns nothing at any ridge")

    def risk(log_ridge: float) -> float:
        return float(_rf_predict(lam, v, n, k, math.exp(log_ridge), noise).test_mse.sum())

    logs = np.linspace(math.log(1e-10 * scale), math.log(10 * n * scale), 64)
    values = [risk(t) for t in logs]
    i = int(np.argmin(values))
    if min(n, k) < rank and k != n:
        at_zero = _rf_predict(lam, v, n, k, 0.0, noise)
        if float(at_zero.test_mse.sum()) <= values[i]:
            return at_zero
    a, b = logs[max(i - 1, 0)], logs[min(i + 1, len(logs) - 1)]
    golden = (math.sqrt(5) - 1) / 2
    c, d = b - golden * (b - a), a + golden * (b - a)
    fc, fd = risk(c), risk(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - golden * (b - a)
            fc = risk(c)
        else:
            a, c, fc = c, d, fd
            d = a + golden * (b - a)
            fd = risk(d)
    best = min([(values[i], logs[i]), (fc, c), (fd, d)])[1]
    return _rf_predict(lam, v, n, k, math.exp(best), noise)


def _check_k(k, name: str = "k") -> float:
    if isinstance(k, float) and k == math.inf:
        return k
    k = real_number(k, name)
    if k <= 0:
        raise ValueError(f"{name} (the number of random features) must be > 0; got {k}")
    return k


def _rf_predict(lam: Tensor, v: Tensor, n: float, k: float, ridge: float,
                noise: float) -> RFRiskPrediction:
    if k == math.inf:
        p = predict(lam, v, n, ridge, noise)
        return RFRiskPrediction(n=n, k=k, ridge=ridge, noise=noise, kappa=p.kappa,
                                gamma=p.kappa, e0=p.e0, learnabilities=p.learnabilities,
                                test_mse=p.test_mse, train_mse=p.train_mse)
    a = lam.cpu().numpy()
    desc = np.sort(a)[::-1]

    def z_of(gamma: float) -> float:
        return float((a / (a + gamma)).sum())

    if ridge == 0.0:
        if k == n:
            inf = torch.full_like(v[0], math.inf)
            return RFRiskPrediction(n=n, k=k, ridge=0.0, noise=noise, kappa=0.0, gamma=math.nan,
                                    e0=math.inf, learnabilities=torch.full_like(lam, math.nan),
                                    test_mse=inf, train_mse=inf.clone())
        m = min(n, k)  # the binding constraint: z = n (interpolation) or z = k (least squares)
        gamma = root_log(lambda g: z_of(g) - m, lower_bracket(desc, m), 2 * float(a.sum()) / m)
        kappa = gamma * (k - n) / k if k > n else 0.0
        z = m
        train_factor = 0.0 if k > n else ((n - k) / n) ** 2
    else:
        # h(gamma) = z + ridge k / (gamma (k - z)) - n decreases on z < k and is +inf where
        # z >= k; at gamma = ridge / 2n it is > 0, and it is < 0 once sum(lambda) / gamma is
        # below n / 4 and k / 2 and ridge / gamma below n / 8.
        def h(gamma: float) -> float:
            z = z_of(gamma)
            return math.inf if z >= k else z + ridge * k / (gamma * (k - z)) - n

        total = float(a.sum())
        hi = max(4 * total / n, 2 * total / k, 8 * ridge / n)
        gamma = root_log(h, ridge / (2 * n), hi)
        z = z_of(gamma)
        kappa = gamma * (k - z) / k
        train_factor = (ridge / (n * kappa)) ** 2
    learn = lam / (lam + gamma)
    q = float((learn**2).sum())
    e0 = n * (k - q) / (n * (k - q) - q * (k - 2 * z) - z**2)
    coeff = (1 - learn) ** 2 + (z - q) / (k - q) * learn * (1 - learn)
    test = e0 * (coeff @ v**2 + noise)
    return RFRiskPrediction(n=n, k=k, ridge=ridge, noise=noise, kappa=kappa, gamma=gamma,
                            e0=e0, learnabilities=learn, test_mse=test,
                            train_mse=train_factor * test)
