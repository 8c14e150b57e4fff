"""Reproduction of Borup & Andersen (NeurIPS 2021), Figure "test error vs distillation step for
several alpha": self-distilled kernel ridge regression on a noisy 1-D sinusoid with the NNGP of
a ReLU network, ``alpha`` fixed per curve, plus the greedy optimal ``alpha`` chosen on a noisy
held-out split (:func:`ntkit.predict.optimal_alpha`). Used by
``examples/plot_self_distillation.py`` and its test."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import layers as L  # noqa: N812 - the documented alias
from ..predict import optimal_alpha, self_distill

__all__ = ["DistillationCurves", "self_distillation_curves"]

KERNEL = L.serial(L.Dense(1, W_std=2.0, b_std=1.0), L.ReLU(), L.Dense(1, W_std=2.0, b_std=1.0),
                  L.ReLU(), L.Dense(1, W_std=1.0))


@dataclass(frozen=True)
class DistillationCurves:
    """``test_mse`` ``(seeds, len(alphas) + 1, steps + 1)``: the test error against the
    noise-free function at steps ``0 .. steps`` for each fixed ``alpha`` and (last row) the
    optimal schedule; ``limit_mse`` ``(seeds, len(alphas))`` the infinite-step limit;
    ``optimal`` ``(seeds, steps)`` the chosen weights; ``signal`` the test mean of ``f^2``
    (the error of the zero function, where ``alpha = 0`` collapses)."""

    alphas: tuple[float, ...]
    test_mse: np.ndarray
    limit_mse: np.ndarray
    optimal: np.ndarray
    signal: float


def _task(seed: int, n_train: int, n_val: int, n_test: int, noise: float):
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.rand(n_train + n_val, 1, generator=g, dtype=torch.float64) - 1
    y = torch.sin(2 * math.pi * x[:, 0]) + noise * torch.randn(n_train + n_val, generator=g,
                                                               dtype=torch.float64)
    x_test = torch.linspace(-1, 1, n_test, dtype=torch.float64)[:, None]
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], x_test, \
        torch.sin(2 * math.pi * x_test[:, 0])


def self_distillation_curves(*, alphas=(0.0, 0.1, 0.25, 0.5, 1.0), steps: int = 20,
                             seeds: int = 10, n_train: int = 30, n_val: int = 30,
                             n_test: int = 200, noise: float = 0.5,
                             ridge: float = 0.02) -> DistillationCurves:
    """Test error of every distillation step for each ``alpha`` and the optimal schedule.

    ``ridge`` is relative to the mean diagonal of the training kernel (small, so that the
    teacher overfits the noise and a few steps of distillation help)."""
    mse = np.zeros((seeds, len(alphas) + 1, steps + 1))
    limit = np.zeros((seeds, len(alphas)))
    chosen = np.zeros((seeds, steps))
    signal = 0.0
    for seed in range(seeds):
        x, y, x_val, y_val, x_test, f_test = _task(seed, n_train, n_val, n_test, noise)
        k = KERNEL.kernel(x).nngp
        lam = ridge * float(k.diagonal().mean())
        k_test = KERNEL.kernel(x_test, x).nngp
        best = optimal_alpha(k, y, steps, ridge=lam, y_ref=y_val,
                             k_ref_train=KERNEL.kernel(x_val, x).nngp)
        chosen[seed] = best.numpy()
        for i, a in enumerate([*alphas, best]):
            out = self_distill(k, y, steps, alpha=a, ridge=lam, k_test_train=k_test)
            mse[seed, i] = ((out.test - f_test) ** 2).mean(-1).numpy()
            if i < len(alphas):
                limit[seed, i] = float(((out.limit_test - f_test) ** 2).mean())
        signal += float((f_test ** 2).mean()) / seeds
    return DistillationCurves(tuple(alphas), mse, limit, chosen, signal)
