"""Reproduction of Lee et al. (ICLR 2022)'s robustness claim for the Student-t NNGP: under
corrupted test inputs, the predictive log-likelihood of the inverse-gamma scale mixture beats
the Gaussian NNGP's. Offline data: scikit-learn's bundled diabetes regression set (442 x 10).
Used by ``examples/plot_student_t_nngp.py`` and its test."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from .. import layers as L  # noqa: N812 - the documented alias
from ..predict import gp_inference, student_t

__all__ = ["RobustnessResult", "student_t_robustness"]

KERNEL = L.serial(L.Dense(512, W_std=1.5, b_std=0.1), L.ReLU(), L.Dense(512, W_std=1.5,
                  b_std=0.1), L.ReLU(), L.Dense(1, W_std=1.0))
DIAG_REGS = (0.03, 0.1, 0.3, 1.0)
SCALES = tuple(np.geomspace(0.03, 3.0, 21).tolist())  # Gaussian: last-layer variance sigma^2
SHAPES = (1.0, 4.0, 16.0)  # inverse-gamma a; b = a * prior scale
PRIOR_SCALES = tuple(np.geomspace(0.03, 3.0, 9).tolist())


@dataclass(frozen=True)
class RobustnessResult:
    """``gaussian``, ``student`` ``(seeds, len(corruptions))``: mean predictive log-likelihood
    per test point; ``gaussian_fixed`` the same for the NNGP at its prior scale
    ``sigma^2 = 1`` (only ``diag_reg`` chosen on validation, as the paper's baseline with a
    fixed last-layer variance); ``corruptions`` the standard deviations of the input noise
    (in units of the standardised features); ``chosen`` per seed the validation-chosen
    ``(diag_reg, sigma^2)`` of the Gaussian and ``(diag_reg, a, b)`` of the Student-t;
    ``df`` per seed the predictive's degrees of freedom."""

    corruptions: tuple[float, ...]
    gaussian: np.ndarray
    gaussian_fixed: np.ndarray
    student: np.ndarray
    chosen: list[tuple[tuple[float, float], tuple[float, float, float]]]
    df: np.ndarray


def _split(seed: int, n_train: int | None):
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    n_tr = n_train or int(0.6 * len(x))
    n_val = (len(x) - n_tr) // 2
    parts = np.split(order, [n_tr, n_tr + n_val])
    mu, sd = x[parts[0]].mean(0), x[parts[0]].std(0)
    ym, ys = y[parts[0]].mean(), y[parts[0]].std()
    return [(torch.tensor((x[p] - mu) / sd), torch.tensor((y[p] - ym) / ys)) for p in parts]


def _gaussian_ll(mean, var, y) -> float:
    return float((-0.5 * (torch.log(2 * torch.pi * var) + (y - mean) ** 2 / var)).mean())


def student_t_robustness(*, seeds: int = 5, corruptions=(0.0, 0.5, 1.0, 2.0, 3.0),
                         n_train: int | None = None) -> RobustnessResult:
    """Mean test log-likelihood of the Gaussian NNGP and the Student-t NNGP at each corruption
    level, hyper-parameters chosen on a clean validation split.

    Per seed: a random 60/20/20 split of diabetes (features and targets standardised on the
    training part; ``n_train`` rows for training instead of 60% if given), the NNGP of a
    two-hidden-layer ReLU network. The Gaussian's noise ``diag_reg`` and last-layer variance
    ``sigma^2`` and the Student-t's ``diag_reg`` and ``(a, b)`` are each chosen by the clean
    validation log-likelihood (grids in this module). Test inputs get Gaussian noise of each
    standard deviation in ``corruptions`` (a fresh draw per level, the same for both models);
    both predictives include the target noise."""
    gaussian = np.zeros((seeds, len(corruptions)))
    fixed = np.zeros((seeds, len(corruptions)))
    student = np.zeros((seeds, len(corruptions)))
    chosen, dfs = [], np.zeros(seeds)
    for seed in range(seeds):
        (x, y), (xv, yv), (xt, yt) = _split(seed, n_train)
        g = torch.Generator().manual_seed(1000 + seed)
        tests = [xt + c * torch.randn(xt.shape, generator=g, dtype=xt.dtype)
                 for c in corruptions]
        k = KERNEL.kernel(x).nngp
        kv, kvv = KERNEL.kernel(xv, x).nngp, KERNEL.kernel(xv).nngp
        best_g, best_f, best_t = (-np.inf, None), (-np.inf, None), (-np.inf, None)
        for reg in DIAG_REGS:
            post = gp_inference(k, y, diag_reg=reg)(kv, kvv)
            var = post.covariance.diagonal() + reg * float(k.diagonal().mean())
            ll = _gaussian_ll(post.mean, var, yv)
            if ll > best_f[0]:
                best_f = (ll, reg)
            for s2 in SCALES:
                ll = _gaussian_ll(post.mean, s2 * var, yv)
                if ll > best_g[0]:
                    best_g = (ll, (reg, s2))
            for a, scale in itertools.product(SHAPES, PRIOR_SCALES):
                t = student_t(k, y, kv, kvv, a=a, b=a * scale, diag_reg=reg,
                              include_noise=True)
                ll = float(t.marginal_log_prob(yv).mean())
                if ll > best_t[0]:
                    best_t = (ll, (reg, a, a * scale))
        (reg_g, s2), (reg_t, a, b) = best_g[1], best_t[1]
        chosen.append(((reg_g, s2), (reg_t, a, b)))
        for j, xc in enumerate(tests):
            kt, ktt = KERNEL.kernel(xc, x).nngp, KERNEL.kernel(xc).nngp
            post = gp_inference(k, y, diag_reg=reg_g)(kt, ktt)
            var = s2 * (post.covariance.diagonal() + reg_g * float(k.diagonal().mean()))
            gaussian[seed, j] = _gaussian_ll(post.mean, var, yt)
            post = gp_inference(k, y, diag_reg=best_f[1])(kt, ktt)
            var = post.covariance.diagonal() + best_f[1] * float(k.diagonal().mean())
            fixed[seed, j] = _gaussian_ll(post.mean, var, yt)
            t = student_t(k, y, kt, ktt, a=a, b=b, diag_reg=reg_t, include_noise=True)
            student[seed, j] = float(t.marginal_log_prob(yt).mean())
            dfs[seed] = t.df
    return RobustnessResult(tuple(corruptions), gaussian, fixed, student, chosen, dfs)
