"""``ntkit.predict`` against finite twins trained by full-batch gradient descent (Monte Carlo)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _training import train_twins
from ntkit import layers as L  # noqa: N812 - the documented alias
from ntkit.predict import gradient_descent_mse, gradient_descent_mse_ensemble, max_learning_rate

pytestmark = pytest.mark.usefixtures("single_thread")


def _spec(width: int) -> L.Serial:
    return L.serial(L.Dense(width, W_std=1.5, b_std=0.05), L.ReLU(),
                    L.Dense(1, W_std=1.5, b_std=0.05))


def _data(n: int = 8, d: int = 8):
    g = torch.Generator().manual_seed(0)
    x_train = torch.randn(n, d, generator=g, dtype=torch.float64)
    # Two test points near training points (training shrinks their variance ~25x) and one away.
    x_test = torch.cat([x_train[:2] + 0.3 * torch.randn(2, d, generator=g, dtype=torch.float64),
                        torch.randn(1, d, generator=g, dtype=torch.float64)])
    return x_train, x_test, torch.sin(x_train.sum(1, keepdim=True))


def test_wide_twins_follow_the_closed_form_with_gap_shrinking_like_inverse_sqrt_width():
    # Each twin, from its own initial outputs, against gradient_descent_mse with the infinite
    # NTK. lr = 0.1 x max: by step 20 the continuous flow and discrete steps differ by < 1 %
    # of |y| (measured: 0.9 %, 0.3 %, 0.03 % at steps 20, 60, 200), below every gap here.
    x_train, x_test, y = _data()
    k = _spec(1).kernel(x_train)
    k_test = _spec(1).kernel(x_test, x_train).ntk
    lr = 0.1 * max_learning_rate(k.ntk, y.numel())
    predict = gradient_descent_mse(k.ntk, y, learning_rate=lr)
    steps = [0, 20, 60, 200]
    t = torch.tensor(steps[1:], dtype=torch.float64)
    widths = [64, 256, 1024, 4096]
    gaps = []
    for width in widths:
        fx_train, fx_test = train_twins(_spec(width), x_train, y, x_test, seeds=range(16),
                                        learning_rate=lr, steps=steps)
        per_seed = []
        for s in range(16):
            a, b = predict(t, fx_train[0, s], fx_test[0, s], k_test)
            diff = torch.cat([(a - fx_train[1:, s]).flatten(1), (b - fx_test[1:, s]).flatten(1)],
                             1)
            per_seed.append(float(diff.pow(2).mean(1).sqrt().max() / y.pow(2).mean().sqrt()))
        gaps.append(np.mean(per_seed))
    slope = np.polyfit(np.log(widths), np.log(gaps), 1)[0]
    # Theory (Lee et al. 2019): |f_width - f_lin| = O(width^-1/2). Measured with these seeds:
    # 0.21, 0.11, 0.064, 0.031 (slope -0.46). Sixteen seeds scatter the mean by ~10 % per
    # width, so -0.3 > slope > -0.65 separates the law from no convergence (0) or 1/width.
    assert -0.65 < slope < -0.3, gaps
    assert gaps[-1] < 0.05, gaps


def test_ensemble_covariance_matches_many_trained_twins():
    x_train, x_test, y = _data()
    net = _spec(1)
    lr = 0.1 * max_learning_rate(net.kernel(x_train).ntk, y.numel())
    predict = gradient_descent_mse_ensemble(net, x_train, y, learning_rate=lr)
    steps = [0, 50, 200]
    n_twins = 400
    _, fx_test = train_twins(_spec(256), x_train, y, x_test, seeds=range(n_twins),
                             learning_rate=lr, steps=steps)
    mean, cov = predict(torch.tensor(steps, dtype=torch.float64), x_test, get="ntk",
                        compute_cov=True)
    for i in range(len(steps)):
        out = fx_test[i, :, :, 0]
        emp_cov = torch.cov(out.T)
        # 400 twins: a sample covariance has relative standard error sqrt(2/400) = 7 %; the
        # width-256 twins add a few % (measured 6-7 % overall at width 256, 5-6 % at 1024).
        rel = float(torch.linalg.norm(emp_cov - cov[i]) / torch.linalg.norm(cov[i]))
        assert rel < 0.2, (steps[i], rel)
        # Means: within 4 standard errors sqrt(var / 400) per test point.
        z = (out.mean(0) - mean[i, :, 0]) / (cov[i].diagonal() / n_twins).sqrt()
        assert float(z.abs().max()) < 4, (steps[i], z)
    # Training shrinks the variance near training points ~25x: the check above is not
    # satisfied by the prior covariance.
    assert float(cov[-1, 0, 0]) < 0.1 * float(cov[0, 0, 0])
