"""The Krylov route of ``gradient_descent_mse`` at finite times (``ntkit.solve.lanczos_funm``)
against the eigendecomposition route, its cost model, and its bad input."""

from __future__ import annotations

import math

import pytest
import torch

import ntkit.layers as L
from ntkit.predict import gradient_descent_mse, max_learning_rate
from ntkit.predict._mse import EIGH_COST, krylov_cost
from ntkit.solve import exp_krylov_steps, lanczos_funm

F64 = torch.float64
# Both routes are accurate to ~1e-12 here (Krylov stops at a 1e-10 relative change; the
# eigendecomposition's error is ~ n eps cond); the brief's bar is 1e-8 relative.
AGREE = 1e-8


def ntk_problem(n=240, m=30, outputs=3, duplicates=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + m, 6, generator=g, dtype=F64)
    if duplicates:  # rows 1, 2 repeat row 0 and row 4 repeats row 3: a null space of dim 3
        x[1] = x[0]
        x[2] = x[0]
        x[4] = x[3]
    k = L.serial(L.Dense(256, W_std=1.5, b_std=0.05), L.ReLU(), L.Dense(1)).kernel(
        x, get="ntk").ntk
    y = torch.randn(n, outputs, generator=g, dtype=F64)
    f0 = 0.3 * torch.randn(n, outputs, generator=g, dtype=F64)
    ft0 = 0.3 * torch.randn(m, outputs, generator=g, dtype=F64)
    return k[:n, :n].contiguous(), k[n:, :n].contiguous(), y, f0, ft0


def rel(a, b):
    """Largest relative difference over output columns (and times)."""
    return float(((a - b).norm(dim=-2) / b.norm(dim=-2)).max())


@pytest.mark.parametrize("diag_reg", [0.0, 1e-3])
def test_krylov_equals_eigh_at_several_times(diag_reg):
    k, kt, y, f0, ft0 = ntk_problem()
    lr = 0.5 * max_learning_rate(k, y.numel())
    t = torch.tensor([0.0, 1e-3, 1.0, 30.0, 1e3], dtype=F64)
    kry = gradient_descent_mse(k, y, learning_rate=lr, diag_reg=diag_reg, method="krylov")
    eig = gradient_descent_mse(k, y, learning_rate=lr, diag_reg=diag_reg, method="eigh")
    a_train, a_test = kry(t, f0, ft0, kt)
    b_train, b_test = eig(t, f0, ft0, kt)
    assert kry.route == "krylov" and eig.route == "eigh"
    assert a_test.shape == (5, 30, 3)
    assert rel(a_train, b_train) < AGREE and rel(a_test, b_test) < AGREE
    # t = 0 is the initial outputs themselves (phi = 0): no rounding beyond the products.
    assert torch.allclose(a_test[0], ft0, rtol=0, atol=1e-14)
    # One scalar time, one output: the time axis dropped, same numbers.
    one = gradient_descent_mse(k, y[:, 0], learning_rate=lr / 3, diag_reg=diag_reg,
                               method="krylov")  # same eta / y.size
    s_train, s_test = one(30.0, f0[:, 0], ft0[:, 0], kt)
    assert s_test.shape == (30,)
    assert float((s_test - b_test[3, :, 0]).norm() / b_test[3, :, 0].norm()) < AGREE


def test_very_large_time_tends_to_kernel_regression():
    # With a ridge, exp(-s lambda_min) underflows at t = 1e9: the t=None solve (Cholesky).
    k, kt, y, f0, ft0 = ntk_problem(n=160, seed=1)
    lr = 0.9 * max_learning_rate(k, y.numel())  # K's; K + ridge's is a little smaller
    kry = gradient_descent_mse(k, y, learning_rate=lr, diag_reg=1e-2, method="krylov")
    a_train, a_test = kry(1e9, f0, ft0, kt)
    b_train, b_test = kry(None, f0, ft0, kt)
    assert rel(a_test, b_test) < AGREE and rel(a_train, b_train) < AGREE


def test_singular_kernel_both_routes_agree_and_keep_the_null_space():
    k, kt, y, f0, ft0 = ntk_problem(duplicates=True, seed=2)
    lr = 0.5 * max_learning_rate(k, y.numel())
    t = torch.tensor([1.0, 100.0, 1e6], dtype=F64)
    kry = gradient_descent_mse(k, y, learning_rate=lr, method="krylov")
    eig = gradient_descent_mse(k, y, learning_rate=lr, method="eigh")
    a_train, a_test = kry(t, f0, ft0, kt)
    b_train, b_test = eig(t, f0, ft0, kt)
    assert rel(a_train, b_train) < AGREE and rel(a_test, b_test) < AGREE
    # The residual's null-space part never moves and the range part is equal on duplicates:
    # rows 0 and 1 keep their initial difference f0_0 - f0_1 at every time (an identity).
    assert torch.allclose(a_train[:, 0] - a_train[:, 1], (f0[0] - f0[1]).expand(3, -1),
                          rtol=0, atol=1e-9)


def test_float32_routes_agree_to_single_precision():
    k, kt, y, f0, ft0 = (v.float() for v in ntk_problem(n=120, seed=3))
    lr = 0.5 * max_learning_rate(k, y.numel())
    a = gradient_descent_mse(k, y, learning_rate=lr, diag_reg=1e-3, method="krylov")(
        10.0, f0, ft0, kt)[1]
    b = gradient_descent_mse(k, y, learning_rate=lr, diag_reg=1e-3, method="eigh")(
        10.0, f0, ft0, kt)[1]
    assert a.dtype == torch.float32
    assert rel(a, b) < 1e-4  # float32: eps 1.2e-7 times n and the condition of K


def flat_spectrum(n, g):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    return (q * torch.linspace(1e-6, 1.0, n, dtype=F64)) @ q.T


def test_cost_model_choices():
    g = torch.Generator().manual_seed(4)
    k, kt, y, f0, ft0 = ntk_problem(n=400, outputs=2, seed=4)
    lr = 0.5 * max_learning_rate(k, y.numel())
    # Moderate time: Krylov, and the Hochbruck-Lubich count bounds its steps.
    p = gradient_descent_mse(k, y, learning_rate=lr)
    p(1.0, f0, ft0, kt)
    assert p.route == "krylov"
    assert 4 <= p.krylov_steps <= exp_krylov_steps(p._lambda_bound() * lr / y.numel() / 4,
                                                   1e-10, 400) + 4
    # A flat spectrum over six decades at a huge time needs ~n steps: Lanczos gives up after
    # a few and the eigendecomposition is used (and its answer is the eigh route's).
    kf = flat_spectrum(400, g)
    yf = torch.randn(400, generator=g, dtype=F64)
    lrf = max_learning_rate(kf, 400)
    flat = gradient_descent_mse(kf, yf, learning_rate=lrf)
    out = flat(1e7)[0]
    assert flat.route == "eigh" and flat.krylov_steps <= 40
    want = gradient_descent_mse(kf, yf, learning_rate=lrf, method="eigh")(1e7)[0]
    assert float((out - want).norm() / want.norm()) < 1e-12  # the same eigh computation
    # Tiny kernels: fewer than 8 steps fit in an eigendecomposition's cost.
    tiny = gradient_descent_mse(k[:4, :4], y[:4], learning_rate=1e-3)
    tiny(1.0)
    assert tiny.route == "eigh"
    # Rent or buy: repeated Krylov calls switch to eigh once they have spent about one
    # eigendecomposition, and stay there (it is cached).
    routes, spent = [], []
    for _ in range(60):
        p(1.0, f0, ft0, kt)
        routes.append(p.route)
        spent.append(p._spent)
    switch = routes.index("eigh")
    assert set(routes[switch:]) == {"eigh"} and switch > 3
    assert spent[switch] <= EIGH_COST * 400**3 < spent[switch] + krylov_cost(400, 2, 40)


def test_lanczos_funm_reaches_its_tolerance():
    # exp(-A) b and phi(z) = (1 - exp(-z)) / z (phi(0) = 1) on a diagonal A with known
    # values and one zero eigenvalue (singular).
    n = 300
    lam = torch.linspace(0.0, 50.0, n, dtype=F64)
    a = torch.diag(lam)
    b = torch.stack([torch.ones(n, dtype=F64), torch.linspace(-1, 1, n, dtype=F64)], 1)

    def f(theta):
        return torch.stack([torch.exp(-theta), torch.where(
            theta > 0, -torch.expm1(-theta) / torch.where(theta > 0, theta, 1.0), 1.0)])

    for tol in (1e-6, 1e-12):
        out = lanczos_funm(lambda v: a @ v, b, f, tol=tol, first_check=4)
        want = f(lam[None, :]).squeeze(1)[:, :, None] * b  # (2, n, 2)
        err = ((out.values - want).norm(dim=1) / want.norm(dim=1)).max()
        assert out.converged and out.change <= tol
        # The change between checks bounds the error (convergence is superlinear), so the
        # error is below tol; the zero eigenvalue's component gets f(0) exactly.
        assert float(err) <= tol
        assert out.steps <= exp_krylov_steps(50.0 / 4, tol, n) + 8
        assert 49.9 < out.ritz_max <= 50.0  # a lower bound on lambda_max, nearly converged
    # An invariant space (b an eigenvector) stops at once, exact; a zero column gives zeros.
    out = lanczos_funm(lambda v: a @ v, torch.stack([torch.eye(n, dtype=F64)[7],
                                                     torch.zeros(n, dtype=F64)], 1),
                       lambda th: torch.exp(-th)[None], tol=1e-12)
    assert out.steps == 1 and out.converged
    assert abs(float(out.values[0, 7, 0]) - math.exp(-float(lam[7]))) < 1e-15
    assert float(out.values[0, :, 1].abs().max()) == 0.0


def test_bad_input():
    k, kt, y, f0, ft0 = ntk_problem(n=60, seed=5)
    with pytest.raises(ValueError, match="method must be 'auto', 'eigh' or 'krylov'"):
        gradient_descent_mse(k, y, method="lanczos")
    # A learning rate above 2 y.size / lambda_max raises on both routes, with one message.
    lr = 1.5 * max_learning_rate(k, y.numel())
    for method in ("krylov", "auto", "eigh"):
        with pytest.raises(ValueError, match="above the maximal learning rate"):
            gradient_descent_mse(k, y, learning_rate=lr, method=method)(1.0)
    bad = y.clone()
    bad[3, 1] = math.nan
    with pytest.raises(ValueError, match="y_train contains NaN"):
        gradient_descent_mse(k, bad, method="krylov")
    with pytest.raises(ValueError, match="t must be >= 0"):
        gradient_descent_mse(k, y, method="krylov")(-1.0)
    with pytest.raises(ValueError, match="fx_train_0 must broadcast"):
        gradient_descent_mse(k, y, method="krylov")(1.0, torch.zeros(5))

    def mv(v):
        return k @ v

    def one(th):
        return th[None]

    with pytest.raises(TypeError, match="b must be a floating-point"):
        lanczos_funm(mv, y.long(), one, tol=1e-8)
    with pytest.raises(ValueError, match="tol must be > 0"):
        lanczos_funm(mv, y, one, tol=0.0)
    with pytest.raises(ValueError, match=r"b must have shape \(n,\) or \(n, c\)"):
        lanczos_funm(mv, y[None], one, tol=1e-8)
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        lanczos_funm(mv, y, one, tol=1e-8, max_steps=0)
    with pytest.raises(ValueError, match="matmat must return shape"):
        lanczos_funm(lambda v: v[:-1], y, one, tol=1e-8)
