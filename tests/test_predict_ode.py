"""``ntkit.predict._ode``: the integrated function-space ODE against closed forms and steps."""

from __future__ import annotations

import pytest
import torch

from ntkit import layers as L  # noqa: N812 - the documented alias
from ntkit.predict import gradient_descent, gradient_descent_mse, max_learning_rate

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(12, 4, generator=g, dtype=torch.float64)
    net = L.serial(L.Dense(1, W_std=1.5, b_std=0.05), L.ReLU(), L.Dense(1))
    k = net.kernel(x).ntk
    labels = torch.arange(8) % 3
    y = torch.nn.functional.one_hot(labels, 3).double()
    f0 = 0.3 * torch.randn(8, 3, generator=g, dtype=torch.float64)
    ft0 = 0.3 * torch.randn(4, 3, generator=g, dtype=torch.float64)
    return k[:8, :8], k[8:, :8], y, f0, ft0


@pytest.mark.parametrize("loss", ["mse", lambda f, y: ((f - y) ** 2).sum() / (2 * y.numel())])
def test_ode_reproduces_the_closed_form_on_mse(problem, loss):
    k, kt, y, f0, ft0 = problem
    lr = 0.5 * max_learning_rate(k, y.numel())
    t = torch.tensor([0.0, 3.0, 30.0, 300.0], dtype=torch.float64)
    a, b = gradient_descent(loss, k, y, learning_rate=lr)(t, f0, ft0, kt)
    wa, wb = gradient_descent_mse(k, y, learning_rate=lr)(t, f0, ft0, kt)
    # solve_ivp at rtol 1e-8, atol 1e-10: global error a few 1e-8 over these times.
    torch.testing.assert_close(a, wa, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b, wb, rtol=1e-6, atol=1e-7)


def _euler(grad, k, kt, f, ft, lr, steps):
    for _ in range(steps):
        g = grad(f)
        f, ft = f - lr * k @ g, ft - lr * kt @ g
    return f, ft


def test_cross_entropy_ode_matches_small_step_gradient_descent(problem):
    # Discrete function-space gradient descent with step lr / 100 over 100x the steps is the
    # ODE's Euler scheme: it differs from the exact flow by O(step) ~ 1e-4 here.
    k, kt, y, f0, ft0 = problem
    lr = 2.0

    def grad(f):
        return (torch.softmax(f, -1) - y) / y.numel()

    a, b = gradient_descent("cross_entropy", k, y, learning_rate=lr)(40.0, f0, ft0, kt)
    wa, wb = _euler(grad, k, kt, f0, ft0, lr / 100, 4000)
    torch.testing.assert_close(a, wa, rtol=0, atol=2e-3)
    torch.testing.assert_close(b, wb, rtol=0, atol=2e-3)
    assert float((a - f0).abs().max()) > 0.3  # it did move
    half = gradient_descent("cross_entropy", k, y, learning_rate=lr)
    c, _ = half(torch.tensor([20.0, 40.0]), f0)
    torch.testing.assert_close(c[1], a, rtol=1e-6, atol=1e-7)


def test_momentum_ode_matches_heavy_ball_at_small_learning_rate(problem):
    # Heavy ball: v <- mu v - lr K dL/df, f <- f + v. Its continuous limit (in units of
    # sqrt(lr) steps) is the momentum ODE, up to O(sqrt(lr)) = 1e-2 relative at lr = 1e-4.
    k, kt, y, f0, ft0 = problem
    lr, mu, steps = 1e-4 * max_learning_rate(k, y.numel()), 0.9, 600
    a, b = gradient_descent("mse", k, y, learning_rate=lr, momentum=mu)(float(steps), f0, ft0,
                                                                          kt)
    f, ft, v, vt = f0, ft0, torch.zeros_like(f0), torch.zeros_like(ft0)
    for _ in range(steps):
        g = (f - y) / y.numel()
        v, vt = mu * v - lr * k @ g, mu * vt - lr * kt @ g
        f, ft = f + v, ft + vt
    moved = float((f - f0).abs().max())
    assert moved > 0.1
    assert float((a - f).abs().max()) < 0.05 * moved
    assert float((b - ft).abs().max()) < 0.05 * float((ft - ft0).abs().max())


def test_ode_bad_input(problem):
    k, kt, y, f0, _ = problem
    with pytest.raises(ValueError, match="loss must be one of"):
        gradient_descent("hinge", k, y)
    with pytest.raises(ValueError, match="cross_entropy' needs y_train of shape"):
        gradient_descent("cross_entropy", k, y[:, 0])
    with pytest.raises(ValueError, match="momentum must be in"):
        gradient_descent("mse", k, y, momentum=1.0)
    with pytest.raises(ValueError, match="above the maximal learning rate"):
        gradient_descent("mse", k, y, learning_rate=1.1 * max_learning_rate(k, y.numel()))
    predict = gradient_descent("cross_entropy", k, y)
    with pytest.raises(ValueError, match="t=None"):
        predict(None)
    with pytest.raises(ValueError, match="t must be >= 0"):
        predict(torch.tensor([1.0, -2.0]))
    with pytest.raises(ValueError, match="y_train_size must be a positive int"):
        max_learning_rate(k, 0)
