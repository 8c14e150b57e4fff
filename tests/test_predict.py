"""Closed forms of ``ntkit.predict`` (``_mse.py``, ``_gp.py``, ``_ensemble.py``): identities
that hold exactly, checked to rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntkit import layers as L  # noqa: N812 - the documented alias
from ntkit.predict import (
    gp_inference,
    gradient_descent_mse,
    gradient_descent_mse_ensemble,
    max_learning_rate,
)
from ntkit.solve import NotPSDError

pytestmark = pytest.mark.usefixtures("single_thread")

NET = L.serial(L.Dense(1, W_std=1.5, b_std=0.05), L.ReLU(), L.Dense(1, W_std=1.5, b_std=0.05))


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(14, 5, generator=g, dtype=torch.float64)
    k = NET.kernel(x)
    y = torch.randn(10, 2, generator=g, dtype=torch.float64)
    f0 = torch.randn(10, 2, generator=g, dtype=torch.float64)
    ft0 = torch.randn(4, 2, generator=g, dtype=torch.float64)
    return x, k.ntk[:10, :10], k.ntk[10:, :10], y, f0, ft0, k


def test_t0_gives_the_initial_outputs(problem):
    _, k, kt, y, f0, ft0, _ = problem
    predict = gradient_descent_mse(k, y, learning_rate=0.5)
    a, b = predict(0.0, f0, ft0, kt)
    torch.testing.assert_close(a, f0, rtol=0, atol=1e-14)
    torch.testing.assert_close(b, ft0, rtol=0, atol=1e-14)


def test_convergence_is_kernel_regression_and_the_limit_of_large_t(problem):
    _, k, kt, y, f0, ft0, _ = problem
    predict = gradient_descent_mse(k, y, learning_rate=0.5)
    a, b = predict(None, f0, ft0, kt)
    want = ft0.numpy() + kt.numpy() @ np.linalg.solve(k.numpy(), (y - f0).numpy())
    # Backward-stable solves of a kernel with condition ~1e3: agreement to ~1e-12.
    np.testing.assert_allclose(b.numpy(), want, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(a, y)
    a_late, b_late = predict(1e9, f0, ft0, kt)  # exp(-lambda_min t / n) underflows to 0
    np.testing.assert_allclose(b_late.numpy(), want, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a_late.numpy(), y.numpy(), rtol=1e-9, atol=1e-11)


def test_outputs_solve_the_gradient_flow(problem):
    # d f_train / dt = -eta / y.size K (f_train - y) and d f_test / dt = -eta / y.size K_td
    # (f_train - y): checked by a central difference (error ~ h^2 f''' ~ 1e-9).
    _, k, kt, y, f0, ft0, _ = problem
    eta, h = 0.7, 1e-3
    predict = gradient_descent_mse(k, y, learning_rate=eta)
    (a0, a1, a2), (b0, b1, b2) = predict(torch.tensor([5 - h, 5.0, 5 + h], dtype=torch.float64), f0,
                                                 ft0, kt)
    drift = -eta / y.numel() * (a1 - y)
    torch.testing.assert_close((a2 - a0) / (2 * h), k @ drift, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close((b2 - b0) / (2 * h), kt @ drift, rtol=1e-6, atol=1e-9)


def test_vectorised_times_equal_scalar_calls_and_columns_are_independent(problem):
    _, k, kt, y, f0, ft0, _ = problem
    predict = gradient_descent_mse(k, y, learning_rate=0.5)
    t = torch.tensor([3.0, 0.0, 40.0])
    a, b = predict(t, f0, ft0, kt)
    assert a.shape == (3, 10, 2) and b.shape == (3, 4, 2)
    for i, ti in enumerate(t.tolist()):
        ai, bi = predict(ti, f0, ft0, kt)
        torch.testing.assert_close(a[i], ai, rtol=1e-13, atol=1e-14)
        torch.testing.assert_close(b[i], bi, rtol=1e-13, atol=1e-14)
    # One column alone, with the time rescaled by the output count (loss / y.size), is the
    # same flow: nt's convention ties the time scale to y_train.size.
    one = gradient_descent_mse(k, y[:, 0], learning_rate=0.25)
    a1, b1 = one(t, f0[:, 0], ft0[:, 0], kt)
    torch.testing.assert_close(a1, a[:, :, 0], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(b1, b[:, :, 0], rtol=1e-12, atol=1e-13)


def test_diag_reg_relative_and_absolute(problem):
    _, k, kt, y, f0, ft0, _ = problem
    r = 0.1 * float(k.diagonal().mean())
    want = kt.numpy() @ np.linalg.solve(k.numpy() + r * np.eye(10), y.numpy())
    for predict in (gradient_descent_mse(k, y, diag_reg=0.1),
                    gradient_descent_mse(k, y, diag_reg=r, diag_reg_absolute_scale=True)):
        np.testing.assert_allclose(predict(None, 0.0, 0.0, kt)[1].numpy(), want, rtol=1e-10)
        # The regularised flow converges to the same ridge solution.
        np.testing.assert_allclose(predict(1e9, 0.0, 0.0, kt)[1].numpy(), want, rtol=1e-8)


def test_max_learning_rate_separates_convergent_from_divergent_descent(problem):
    _, k, _, y, _, _, _ = problem
    lr = max_learning_rate(k, y.numel())
    lam = float(torch.linalg.eigvalsh(k)[-1])
    assert lr == pytest.approx(2 * y.numel() / lam, rel=1e-10)
    assert max_learning_rate(k, y.numel(), momentum=0.5) == pytest.approx(1.5 * lr, rel=1e-12)
    for factor, converges in ((0.98, True), (1.02, False)):
        f = torch.zeros_like(y)
        for _ in range(3000):
            f = f - factor * lr * k @ (f - y) / y.numel()
        assert bool(torch.isfinite(f).all() and (f - y).abs().max() < 1e-3) is converges


def test_gp_inference_posterior(problem):
    _, k, kt, y, _, _, kall = problem
    # A GP with the NTK as its kernel: its test block is the NTK's too (an NNGP test block
    # would make variances negative, which gp_inference rejects).
    mean, cov = gp_inference(k, y)(kt, kall.ntk[10:, 10:])
    want = kt.numpy() @ np.linalg.solve(k.numpy(), kt.numpy().T)
    np.testing.assert_allclose(cov.numpy(), kall.ntk[10:, 10:].numpy() - want, rtol=1e-8,
                               atol=1e-10)
    ktt = kall.nngp[10:, 10:]
    np.testing.assert_allclose(mean.numpy(), kt.numpy() @ np.linalg.solve(k.numpy(), y.numpy()),
                               rtol=1e-9, atol=1e-11)
    # With Kernel records: the NTK covariance, written out (Lee et al. 2019, eq. 16).
    tr = kall.replace(nngp=kall.nngp[:10, :10], ntk=kall.ntk[:10, :10])
    te = kall.replace(nngp=kall.nngp[10:, :10], ntk=kall.ntk[10:, :10])
    out = gp_inference(tr, y)(te, ktt)
    a = np.linalg.solve(k.numpy(), kt.numpy().T).T  # Theta_td Theta^-1
    kn, knt = kall.nngp[:10, :10].numpy(), kall.nngp[10:, :10].numpy()
    want = ktt.numpy() + a @ kn @ a.T - a @ knt.T - knt @ a.T
    np.testing.assert_allclose(out["ntk"].covariance.numpy(), want, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(out["nngp"].mean.numpy(), kall.nngp[10:, :10].numpy()
                               @ np.linalg.solve(kn, y.numpy()), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_ensemble_t0_is_the_prior_and_large_t_the_converged_posterior(problem, get):
    x, _, _, y, _, _, kall = problem
    predict = gradient_descent_mse_ensemble(NET, x[:10], y, learning_rate=0.5)
    mean0, cov0 = predict(0.0, x[10:], get=get, compute_cov=True)
    torch.testing.assert_close(mean0, torch.zeros_like(mean0), rtol=0, atol=1e-14)
    torch.testing.assert_close(cov0, kall.nngp[10:, 10:], rtol=1e-12, atol=1e-13)
    inf = predict(None, x[10:], get=get, compute_cov=True)
    late = predict(torch.tensor([1e9]), x[10:], get=get, compute_cov=True)
    torch.testing.assert_close(late.mean[0], inf.mean, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(late.covariance[0], inf.covariance, rtol=1e-6, atol=1e-8)
    # The mean is gradient_descent_mse from zero initial outputs with the same kernel.
    k = getattr(kall, get)
    _, want = gradient_descent_mse(k[:10, :10], y, learning_rate=0.5)(7.0, 0.0, 0.0, k[10:, :10])
    torch.testing.assert_close(predict(7.0, x[10:], get=get), want, rtol=1e-12, atol=1e-13)


def test_ensemble_covariance_is_that_of_linearised_nets_from_gaussian_starts(problem):
    # Draw f(0) ~ N(0, NNGP) jointly on train and test, run the exact linear flow, and compare
    # the sample covariance at t with the closed form: 20000 draws, relative error ~1 %.
    x, _, _, y, _, _, kall = problem
    y1 = y[:, 0]
    predict = gradient_descent_mse_ensemble(NET, x[:10], y1, learning_rate=0.5)
    mean, cov = predict(30.0, x[10:], get="ntk", compute_cov=True)
    g = torch.Generator().manual_seed(0)
    chol = torch.linalg.cholesky(kall.nngp + 1e-12 * torch.eye(14, dtype=torch.float64))
    f0 = chol @ torch.randn(14, 20000, generator=g, dtype=torch.float64)
    flow = gradient_descent_mse(kall.ntk[:10, :10], y1[:, None].expand(10, 20000),
                                learning_rate=0.5 * 20000)  # same time scale per column
    _, ft = flow(30.0, f0[:10], f0[10:], kall.ntk[10:, :10])
    rel = torch.linalg.norm(torch.cov(ft) - cov) / torch.linalg.norm(cov)
    assert float(rel) < 0.04
    assert float((ft.mean(1) - mean).abs().max()) < 4 * float(cov.diagonal().max() / 2e4) ** 0.5


def test_ensemble_train_set_at_convergence_is_the_targets(problem):
    x, _, _, y, _, _, _ = problem
    out = gradient_descent_mse_ensemble(NET, x[:10], y)(None, None, compute_cov=True)
    for g in ("nngp", "ntk"):
        torch.testing.assert_close(out[g].mean, y)
        assert float(out[g].covariance.abs().max()) == 0.0


# --------------------------------------------------------------------------------------------
# Bad input.


def test_errors_name_the_argument(problem):
    x, k, kt, y, f0, ft0, _ = problem
    bad = k.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="k_train_train contains NaN"):
        gradient_descent_mse(bad, y)
    with pytest.raises(ValueError, match="y_train must have shape"):
        gradient_descent_mse(k, y[:5])
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        gradient_descent_mse(k, y, learning_rate=0.0)
    predict = gradient_descent_mse(k, y, learning_rate=0.5)
    with pytest.raises(ValueError, match="t must be >= 0"):
        predict(-1.0)
    with pytest.raises(ValueError, match="t must be a number or a 1-D"):
        predict(torch.ones(2, 2))
    with pytest.raises(ValueError, match="t contains NaN"):
        predict(float("nan"))
    with pytest.raises(ValueError, match="k_test_train must have shape"):
        predict(1.0, f0, ft0, kt[:, :3])
    with pytest.raises(ValueError, match="fx_test_0 was given without k_test_train"):
        predict(1.0, f0, ft0)
    with pytest.raises(ValueError, match="fx_train_0 must broadcast"):
        predict(1.0, f0[:3])
    lr = max_learning_rate(k, y.numel())
    with pytest.raises(ValueError, match="above the maximal learning rate"):
        gradient_descent_mse(k, y, learning_rate=1.01 * lr)(1.0)
    gradient_descent_mse(k, y, learning_rate=0.99 * lr)(1.0)  # fine
    ens = gradient_descent_mse_ensemble(NET, x[:10], y)
    with pytest.raises(ValueError, match="unknown kernel 'nnpg'"):
        ens(1.0, x[10:], get="nnpg")
    with pytest.raises(ValueError, match="x1 and x2 must have the same feature shape"):
        ens(1.0, x[10:, :3])
    with pytest.raises(TypeError, match="net must be"):
        gradient_descent_mse_ensemble(3, x, y)


def test_non_psd_kernel_is_reported_with_its_eigenvalue():
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(0)))
    k = q @ torch.diag(torch.tensor([-1e-3, 1, 2, 3, 4, 5], dtype=torch.float64)) @ q.T
    predict = gradient_descent_mse(k, torch.ones(6, dtype=torch.float64), learning_rate=0.1)
    with pytest.raises(NotPSDError, match=r"most negative eigenvalue is -0\.001\b"):
        predict(1.0)
    with pytest.raises(ValueError, match=r"-0\.001\b"):
        predict(None, 0.0, 0.0, k[:2])
