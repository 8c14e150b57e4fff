"""``ntkit.predict.self_distill`` / ``optimal_alpha`` (Borup & Andersen 2021): the closed form
against the iterated kernel ridge fits, the infinite-step limit, the greedy optimal weight
against a grid search, and the errors."""

from __future__ import annotations

import pytest
import torch

from ntkit import layers as L  # noqa: N812 - the documented alias
from ntkit.predict import optimal_alpha, self_distill
from ntkit.solve import PSDSolver

pytestmark = pytest.mark.usefixtures("single_thread")

NET = L.serial(L.Dense(1, W_std=1.5, b_std=0.3), L.ReLU(), L.Dense(1, W_std=1.5, b_std=0.3))
RIDGE = 0.05


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    k = NET.kernel(x).nngp
    y = torch.sin(2 * x[:, :2]) + 0.3 * torch.randn(40, 2, generator=g, dtype=torch.float64)
    # 24 training, 8 held-out (reference) and 8 test inputs; two output columns.
    return k[:24, :24], y[:24], k[24:32, :24], y[24:32], k[32:, :24]


def iterate(k, y, kt, alphas, ridge):
    """The definition: refit kernel ridge regression to alpha y + (1 - alpha) f_prev(X)."""
    solver = PSDSolver(k, diag_reg=ridge)
    coef = solver.solve(y)
    train, test = [k @ coef], [kt @ coef]
    for a in alphas:
        coef = solver.solve(a * y + (1 - a) * train[-1])
        train.append(k @ coef)
        test.append(kt @ coef)
    return torch.stack(train), torch.stack(test)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0, [0.9, 0.1, 0.5, 0.0, 0.7, 0.2]])
def test_closed_form_equals_iterated_fits(problem, alpha):
    k, y, _, _, kt = problem
    out = self_distill(k, y, 6, alpha=alpha, ridge=RIDGE, k_test_train=kt)
    alphas = [alpha] * 6 if isinstance(alpha, float) else alpha
    train, test = iterate(k, y, kt, alphas, RIDGE)
    # Both are O(cond(K + ridge I) eps)-accurate solves of the same systems; the outputs are
    # O(1), and cond <= (lambda_max + 0.05) / 0.05 ~ 1e3 here, so 1e-8 has margin 1e4.
    torch.testing.assert_close(out.train, train, rtol=0, atol=1e-8)
    torch.testing.assert_close(out.test, test, rtol=0, atol=1e-8)


def test_infinite_step_limit_is_ridge_over_alpha(problem):
    k, y, _, _, kt = problem
    alpha = 0.3
    out = self_distill(k, y, 1, alpha=alpha, ridge=RIDGE, k_test_train=kt)
    # Many iterations: the error contracts by r = (1 - alpha) s <= 0.7 per step, so 200
    # steps leave 0.7^200 ~ 1e-31 of it.
    train, test = iterate(k, y, kt, [alpha] * 200, RIDGE)
    torch.testing.assert_close(out.limit_train, train[-1], rtol=0, atol=1e-8)
    torch.testing.assert_close(out.limit_test, test[-1], rtol=0, atol=1e-8)
    # Theorem: one kernel ridge fit with the ridge amplified by 1 / alpha.
    coef = PSDSolver(k, diag_reg=RIDGE / alpha).solve(y)
    torch.testing.assert_close(out.limit_test, kt @ coef, rtol=0, atol=1e-8)
    # The limit does not depend on how many steps were asked for (none, here).
    none = self_distill(k, y, 0, alpha=alpha, ridge=RIDGE, k_test_train=kt)
    assert none.train.shape == (1, 24, 2)
    torch.testing.assert_close(none.limit_test, out.limit_test, rtol=0, atol=1e-12)


def test_alpha_one_is_plain_kernel_ridge_and_alpha_zero_collapses(problem):
    k, y, _, _, kt = problem
    coef = PSDSolver(k, diag_reg=RIDGE).solve(y)
    out = self_distill(k, y, 3, alpha=1.0, ridge=RIDGE, k_test_train=kt)
    for t in range(4):
        torch.testing.assert_close(out.test[t], kt @ coef, rtol=0, atol=1e-9)
    torch.testing.assert_close(out.limit_test, kt @ coef, rtol=0, atol=1e-9)
    # Without guidance the filter is s^(t+1) (Mobahi et al. 2020) and its limit is 0.
    zero = self_distill(k, y, 3, alpha=0.0, ridge=RIDGE)
    s = zero.evals / (zero.evals + RIDGE)
    torch.testing.assert_close(zero.filters, s ** torch.arange(1, 5, dtype=s.dtype)[:, None],
                               rtol=0, atol=1e-14)
    assert float(zero.limit_train.abs().max()) == 0.0


def test_optimal_alpha_equals_grid_search(problem):
    k, y, k_ref, y_ref, _ = problem
    steps, grid = 4, torch.linspace(0, 1, 2001, dtype=torch.float64)
    # At this ridge (about a third of the mean diagonal) the held-out risk is minimised
    # inside (0, 1) at every step, so the check is not a boundary case.
    ridge = 1.0
    best = optimal_alpha(k, y, steps, ridge=ridge, y_ref=y_ref, k_ref_train=k_ref)
    assert bool(((best > 0.3) & (best < 0.7)).all()), best
    solver = PSDSolver(k, diag_reg=ridge)
    for t in range(steps):
        # Step t + 1 by its definition for every grid value, after the optimal earlier steps.
        prev = iterate(k, y, k_ref, best[:t].tolist(), ridge)[0][-1]  # f_t(X), (24, 2)
        targets = grid * y[..., None] + (1 - grid) * prev[..., None]  # (24, 2, G)
        fits = torch.einsum("rn,ncg->rcg", k_ref,
                            solver.solve(targets.reshape(24, -1)).reshape(targets.shape))
        risks = ((fits - y_ref[..., None]) ** 2).sum((0, 1))
        i = int(torch.argmin(risks))
        # The grid's best is within one grid step (5e-4) of the exact minimiser.
        assert abs(float(best[t]) - float(grid[i])) <= 5e-4 + 1e-12, (t, best, grid[i])
    # With the training targets themselves as the reference, the least regularised fit wins:
    # the unconstrained minimiser is above 1 (per eigen-direction (1 + s) / s), clipped to 1.
    assert optimal_alpha(k, y, 1, ridge=RIDGE, y_ref=y).tolist() == [1.0]


def test_errors(problem):
    k, y, k_ref, y_ref, kt = problem
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        self_distill(k, y, 2, alpha=1.5, ridge=RIDGE)
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        self_distill(k, y, 2, alpha=[0.5, -0.1], ridge=RIDGE)
    with pytest.raises(ValueError, match="alpha contains NaN"):
        self_distill(k, y, 2, alpha=[0.5, float("nan")], ridge=RIDGE)
    with pytest.raises(ValueError, match="alpha must be finite"):
        self_distill(k, y, 2, alpha=float("nan"), ridge=RIDGE)
    with pytest.raises(ValueError, match=r"one value per step, shape \(2,\)"):
        self_distill(k, y, 2, alpha=[0.5], ridge=RIDGE)
    with pytest.raises(TypeError, match="alpha must be a number"):
        self_distill(k, y, 2, alpha="half", ridge=RIDGE)
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        self_distill(k, y, -1, alpha=0.5, ridge=RIDGE)
    with pytest.raises(ValueError, match="ridge must be >= 0"):
        self_distill(k, y, 2, alpha=0.5, ridge=-1.0)
    with pytest.raises(ValueError, match="y_train must have shape"):
        self_distill(k, y[:5], 2, alpha=0.5, ridge=RIDGE)
    with pytest.raises(ValueError, match="k_train_train contains NaN"):
        self_distill(k * float("nan"), y, 2, alpha=0.5, ridge=RIDGE)
    with pytest.raises(ValueError, match="k_test_train must have shape"):
        self_distill(k, y, 2, alpha=0.5, ridge=RIDGE, k_test_train=kt[:, :3])
    with pytest.raises(ValueError, match="y_ref must have shape"):
        optimal_alpha(k, y, 2, ridge=RIDGE, y_ref=y_ref[:3], k_ref_train=k_ref)
    with pytest.raises(ValueError, match="y_ref contains NaN"):
        optimal_alpha(k, y, 2, ridge=RIDGE, y_ref=y_ref * float("nan"), k_ref_train=k_ref)
