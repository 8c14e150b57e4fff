"""Eigenlearning: the test and train MSE of kernel ridge regression predicted from the kernel's
eigenvalues and the target's coefficients in its eigenbasis.

Simon, Dickens, Karkada & DeWeese, "The Eigenlearning Framework: A Conservation Law Perspective
on Kernel Regression and Wide Neural Networks", TMLR 2023 (arXiv:2110.03922), Section 4, "the
eigenlearning equations". KRR with ``n`` samples drawn i.i.d. from a measure ``mu``, absolute
ridge ``delta`` (``f(x) = K(x, X) (K(X, X) + delta I)^{-1} y``), labels ``y = f*(x) + eps`` with
noise variance ``noise``; the kernel's Mercer eigenvalues ``lambda_i`` and the target's
coefficients ``v_i`` are taken with respect to ``mu``:

- ``kappa``, the effective regularization: the root of
  ``sum_i lambda_i / (lambda_i + kappa) + delta / kappa = n``;
- learnabilities ``L_i = lambda_i / (lambda_i + kappa)``;
- overfitting coefficient ``E0 = n / (n - sum_i L_i^2)``;
- test MSE ``E0 * (sum_i (1 - L_i)^2 v_i^2 + noise)``;
- train MSE ``(delta / (n kappa))^2 * test MSE``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._checks import all_finite, real_number
from ._checks import as_kernel
from ._spectrum import spectrum

__all__ = ["Eigensystem", "EigenlearningPrediction", "LearningCurve", "eigenlearning",
           "eigensystem", "learning_curve"]


class Eigensystem(NamedTuple):
    """A kernel's eigenvalues on a measure and a target's coefficients in that eigenbasis."""

    eigenvalues: Tensor
    """``(M,)`` float64, descending, ``>= 0``."""
    target_coeffs: Tensor
    """``(M,)`` or ``(M, O)`` float64: ``v_i = <f*, phi_i>`` in ``L2(mu)``."""


@dataclass(frozen=True)
class EigenlearningPrediction:
    """The eigenlearning equations solved at one sample size (see :func:`eigenlearning`).

    ``test_mse``, ``train_mse`` and ``target_learnability`` are 0-d tensors for a 1-D target
    and ``(O,)`` tensors (one per output) for an ``(M, O)`` target; ``learnabilities`` is
    ``(M,)``, in the order of the eigenvalues given.
    """

    n: float
    ridge: float
    noise: float
    kappa: float
    e0: float
    learnabilities: Tensor
    test_mse: Tensor
    train_mse: Tensor
    target_learnability: Tensor


@dataclass(frozen=True)
class LearningCurve:
    """The eigenlearning equations over a grid of ``T`` sample sizes (see
    :func:`learning_curve`). Shapes: ``ns``, ``kappa``, ``e0`` ``(T,)``; ``test_mse``,
    ``train_mse`` ``(T,)`` or ``(T, O)``; ``learnabilities`` ``(T, M)``."""

    ns: Tensor
    ridge: float
    noise: float
    kappa: Tensor
    e0: Tensor
    learnabilities: Tensor
    test_mse: Tensor
    train_mse: Tensor


def check_spectrum(eigenvalues, target_coeffs) -> tuple[Tensor, Tensor]:
    """``(eigenvalues, target_coeffs)`` as float64 tensors ``(M,)`` and ``(M,)``/``(M, O)``.

    Negative eigenvalues down to ``-M * eps * max|lambda|`` (``eps`` of the input's dtype: the
    round-off of an eigensolver) are set to 0; below that they raise. Shared with
    :mod:`~ntkit.analysis._rf_risk`.
    """
    lam = _as_float_tensor(eigenvalues, "eigenvalues")
    v = _as_float_tensor(target_coeffs, "target_coeffs")
    if lam.ndim != 1 or lam.numel() == 0:
        raise ValueError(f"eigenvalues must be a non-empty 1-D array (M,); got shape "
                         f"{tuple(lam.shape)}")
    if v.ndim not in (1, 2) or v.shape[0] != lam.shape[0] or v.numel() == 0:
        raise ValueError(
            f"target_coeffs must have shape (M,) or (M, O) with M = {lam.shape[0]}, the number "
            f"of eigenvalues; got shape {tuple(v.shape)}")
    for x, name in ((lam, "eigenvalues"), (v, "target_coeffs")):
        if not all_finite(x):
            raise ValueError(f"{name} contains NaN or infinite values")
    eps = torch.finfo(lam.dtype).eps
    lam, v = lam.to(torch.float64), v.to(torch.float64)
    tol = lam.numel() * eps * float(lam.abs().max())
    low = float(lam.min())
    if low < -tol:
        raise ValueError(
            f"eigenvalues must be >= 0 (a PSD kernel); the smallest is {low:.6g}, beyond the "
            f"round-off tolerance {tol:.3g} (M * eps * max|eigenvalue|)")
    return lam.clamp(min=0.0), v


def check_n(n, lam: Tensor, name: str = "n") -> float:
    """The sample size ``n`` as a float in ``(0, M]`` (``M`` eigenvalues given)."""
    n = real_number(n, name)
    m = lam.numel()
    if n <= 0:
        raise ValueError(f"{name} must be > 0; got {n}")
    if n > m:
        raise ValueError(f"{name}={n:g} is larger than the number of eigenvalues given ({m}); "
                         f"pass the spectrum of a larger pool of inputs")
    return n


def check_below_rank(value: float, lam: Tensor, name: str) -> None:
    """Ridgeless regression needs ``value`` (samples, or features) below the number of
    nonzero eigenvalues, else ``kappa`` would be 0 and ``E0`` infinite."""
    rank = int((lam > 0).sum())
    if value >= rank:
        raise ValueError(
            f"with ridge=0, {name} must be smaller than the number of nonzero eigenvalues "
            f"({rank}); got {name}={value:g}: ridgeless regression would interpolate with "
            f"kappa=0 and infinite E0. Pass ridge > 0 or the spectrum of a larger pool")


def root_log(fn, lo: float, hi: float) -> float:
    """The root of a decreasing ``fn`` with ``fn(lo) > 0 >= fn(hi)`` (``0 < lo < hi``), by
    bisection on ``log x`` to the last bits of float64: robust for any spectrum, ~60 steps."""
    a, b = math.log(lo), math.log(hi)
    for _ in range(400):
        mid = 0.5 * (a + b)
        if b - a <= 4 * np.finfo(np.float64).eps * max(1.0, abs(mid)):
            break
        if fn(math.exp(mid)) > 0:
            a = mid
        else:
            b = mid
    return math.exp(0.5 * (a + b))


def lower_bracket(lam_desc: np.ndarray, target: float) -> float:
    """A ``kappa > 0`` with ``sum_i lambda_i / (lambda_i + kappa) > target``, given more than
    ``target`` nonzero eigenvalues (descending): with ``j = floor(target) + 1`` the top ``j``
    terms alone exceed ``target`` for ``kappa < lambda_j (j - target) / target``."""
    j = math.floor(target) + 1
    return 0.5 * lam_desc[j - 1] * (j - target) / target


def solve_kappa(lam: Tensor, n: float, ridge: float) -> float:
    """``kappa`` of the eigenlearning equations: the root of
    ``sum_i lambda_i / (lambda_i + kappa) + ridge / kappa = n``, whose left side decreases
    from ``> n`` to 0 (brackets: ``ridge / (2n)`` or :func:`lower_bracket`, and
    ``2 (sum lambda + ridge) / n``, where the sum is below ``(sum lambda + ridge) / kappa``)."""
    a = lam.cpu().numpy()
    lo = ridge / (2 * n) if ridge > 0 else lower_bracket(np.sort(a)[::-1], n)
    hi = 2 * (float(a.sum()) + ridge) / n
    return root_log(lambda k: float((a / (a + k)).sum()) + ridge / k - n, lo, hi)


def eigenlearning(eigenvalues, target_coeffs, n, *, ridge: float = 0.0,
                  noise: float = 0.0) -> EigenlearningPrediction:
    """The predicted test and train MSE of kernel ridge regression on ``n`` samples.

    The eigenlearning equations of Simon et al. (TMLR 2023, Section 4): ``kappa`` solves
    ``sum_i L_i + ridge / kappa = n`` with ``L_i = lambda_i / (lambda_i + kappa)``;
    ``E0 = n / (n - sum_i L_i^2)``; test MSE ``E0 (sum_i (1 - L_i)^2 v_i^2 + noise)``; train
    MSE ``(ridge / (n kappa))^2`` times the test MSE. ``kappa`` is found in float64 by
    bisection on ``log kappa`` (to the last bits, so ``sum_i L_i = n`` at ``ridge = 0`` holds
    to ~1e-13 relative).

    Conventions (the paper's): ``ridge`` is the absolute ``delta`` added to the ``(n, n)``
    training kernel, ``f(x) = K(x, X) (K(X, X) + delta I)^{-1} y``. ``noise`` is the *variance*
    of i.i.d. label noise, on training labels and test labels alike: ``test_mse`` is the
    expected MSE against noisy test labels (subtract ``noise`` for the error against the clean
    target), ``train_mse`` the expected MSE against the noisy training labels. The theory
    assumes the eigenfunctions behave like independent Gaussians on the samples; it is exact
    only as ``n`` and the number of modes grow (see ``docs/learning_curves.md``).

    **Arguments:**

    - ``eigenvalues``: ``(M,)`` the kernel's eigenvalues on the input measure (any order,
      ``>= 0``), e.g. from :func:`eigensystem`.
    - ``target_coeffs``: ``(M,)`` or ``(M, O)`` the target's coefficients ``v_i`` in the
      matching orthonormal eigenfunctions; ``sum_i v_i^2`` is the target's mean square.
    - ``n``: number of training samples, ``0 < n <= M`` (and, with ``ridge = 0``, fewer than
      the nonzero eigenvalues); need not be an integer.
    - ``ridge``: ``delta >= 0``. ``noise``: label-noise variance ``>= 0``.

    **Returns:** an :class:`EigenlearningPrediction`: ``kappa``, ``e0`` floats;
    ``learnabilities`` ``(M,)``; ``test_mse``, ``train_mse`` and ``target_learnability``
    (``sum_i L_i v_i^2 / sum_i v_i^2``) 0-d for a 1-D target, ``(O,)`` otherwise.

    Example:
        >>> lam = 1.0 / torch.arange(1, 1001, dtype=torch.float64) ** 2
        >>> v = torch.zeros(1000, dtype=torch.float64); v[0] = v[4] = 1.0
        >>> pred = eigenlearning(lam, v, 10)
        >>> round(float(pred.learnabilities.sum()), 10)  # conservation: sum_i L_i = n
        10.0
        >>> 0 < float(pred.test_mse) < 2.0, float(pred.train_mse)  # ridgeless: interpolates
        (True, 0.0)
    """
    ridge = real_number(ridge, "ridge", minimum=0.0)
    noise = real_number(noise, "noise", minimum=0.0)
    lam, v = check_spectrum(eigenvalues, target_coeffs)
    n = check_n(n, lam)
    if ridge == 0.0:
        check_below_rank(n, lam, "n")
    return predict(lam, v, n, ridge, noise)


def learning_curve(eigenvalues, target_coeffs, ns, *, ridge: float = 0.0,
                   noise: float = 0.0) -> LearningCurve:
    """:func:`eigenlearning` at each sample size of ``ns``, stacked.

    **Arguments:** as :func:`eigenlearning`, with ``ns`` a non-empty 1-D sequence, array or
    tensor of ``T`` sample sizes (each checked as ``n``).

    **Returns:** a :class:`LearningCurve` with ``ns``, ``kappa``, ``e0`` ``(T,)``,
    ``test_mse`` and ``train_mse`` ``(T,)`` (``(T, O)`` for an ``(M, O)`` target) and
    ``learnabilities`` ``(T, M)``, float64.

    Example:
        >>> lam = 1.0 / torch.arange(1, 501, dtype=torch.float64) ** 2
        >>> curve = learning_curve(lam, lam.sqrt(), [5, 20, 80], ridge=1e-3)
        >>> bool((curve.test_mse.diff() < 0).all())  # more data, lower risk
        True
    """
    ridge = real_number(ridge, "ridge", minimum=0.0)
    noise = real_number(noise, "noise", minimum=0.0)
    lam, v = check_spectrum(eigenvalues, target_coeffs)
    grid = as_grid(ns, "ns")
    grid = [check_n(n, lam, "ns") for n in grid]
    if ridge == 0.0:
        check_below_rank(max(grid), lam, "ns")
    preds = [predict(lam, v, n, ridge, noise) for n in grid]
    f64 = {"dtype": torch.float64, "device": lam.device}
    return LearningCurve(
        ns=torch.tensor(grid, **f64), ridge=ridge, noise=noise,
        kappa=torch.tensor([p.kappa for p in preds], **f64),
        e0=torch.tensor([p.e0 for p in preds], **f64),
        learnabilities=torch.stack([p.learnabilities for p in preds]),
        test_mse=torch.stack([p.test_mse for p in preds]),
        train_mse=torch.stack([p.train_mse for p in preds]))


def eigensystem(k_pool, y_pool) -> Eigensystem:
    """Eigenvalues and target coefficients on the empirical measure of a pool of ``P`` inputs.

    With the pool as the measure ``mu`` (each input weight ``1/P``), the kernel's integral
    operator has eigenvalues ``lambda_i = eig(K_pool)_i / P`` and orthonormal eigenfunctions
    ``phi_i(x_j) = sqrt(P) u_ij`` (``u_i`` the unit eigenvectors), so the target's
    coefficients are ``v_i = mean_j phi_i(x_j) y_j = u_i . y / sqrt(P)`` and
    ``sum_i v_i^2 = mean_j y_j^2``. Training sets drawn from the pool and the test error
    averaged over the pool are then what :func:`eigenlearning` predicts; for a continuous
    distribution, a pool several times larger than the largest ``n`` approximates it.
    Computed in float64 by :func:`~ntkit.analysis.spectrum` (all eigenpairs; round-off
    eigenvalues set to 0).

    **Arguments:** ``k_pool`` ``(P, P)`` symmetric PSD kernel of the pool; ``y_pool`` ``(P,)``
    or ``(P, O)`` the target on the pool (without label noise).

    **Returns:** an :class:`Eigensystem` ``(eigenvalues (P,), target_coeffs (P,) or (P, O))``,
    float64, eigenvalues descending.

    Example:
        >>> x = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> y = x[:, 0]
        >>> lam, v = eigensystem(x @ x.T, y)
        >>> bool(torch.allclose((v ** 2).sum(), (y ** 2).mean()))  # Parseval on the pool
        True
        >>> int((lam > 0).sum())  # a linear kernel in 3 dimensions has rank 3
        3
    """
    k = as_kernel(k_pool, "k_pool", multi_output=False).to(torch.float64)
    y = _as_float_tensor(y_pool, "y_pool").to(torch.float64)
    if y.ndim not in (1, 2) or y.shape[0] != k.shape[0]:
        raise ValueError(f"y_pool must have shape (P,) or (P, O) with the same P as k_pool "
                         f"(P = {k.shape[0]}); got shape {tuple(y.shape)}")
    if not all_finite(y):
        raise ValueError("y_pool contains NaN or infinite values")
    evals, evecs = spectrum(k, method="eigh")
    p = k.shape[0]
    return Eigensystem(evals / p, evecs.T @ y / math.sqrt(p))


def as_grid(values, name: str) -> list[float]:
    """A non-empty 1-D sequence of finite reals as a list of floats."""
    arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.number) \
            or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers; got {values!r}")
    return [real_number(float(a), name) for a in arr]


def predict(lam: Tensor, v: Tensor, n: float, ridge: float,
             noise: float) -> EigenlearningPrediction:
    """The eigenlearning equations on checked float64 inputs (shared with the RF risk)."""
    kappa = solve_kappa(lam, n, ridge)
    learn = lam / (lam + kappa)
    e0 = n / (n - float((learn**2).sum()))
    v2 = v**2
    test = e0 * ((1 - learn) ** 2 @ v2 + noise)
    power = v2.sum(0)
    learned = (learn @ v2) / torch.where(power > 0, power, torch.ones_like(power))
    return EigenlearningPrediction(
        n=n, ridge=ridge, noise=noise, kappa=kappa, e0=e0, learnabilities=learn,
        test_mse=test, train_mse=(ridge / (n * kappa)) ** 2 * test,
        target_learnability=learned)


def _as_float_tensor(x, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    elif isinstance(x, (list, tuple)):
        x = torch.as_tensor(x, dtype=torch.float64)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, numpy array or sequence of numbers; "
                        f"got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold real numbers; got dtype {x.dtype}")
    return x if x.is_floating_point() else x.to(torch.float64)
