"""``ntkit.predict`` at ``t = None`` is the ``t -> infinity`` limit of gradient flow, on singular
kernels too (duplicate inputs), and times are kept in the kernel's dtype (issue 17, 5.1 and
5.12)."""

from __future__ import annotations

import pytest
import torch

from ntkit import layers as L  # noqa: N812 - the documented alias
from ntkit.predict import gp_inference, gradient_descent_mse, gradient_descent_mse_ensemble
from ntkit.solve import NotPSDError, PSDSolver

pytestmark = pytest.mark.usefixtures("single_thread")

NET = L.serial(L.Dense(1, W_std=1.5, b_std=0.05), L.ReLU(), L.Dense(1, W_std=1.5, b_std=0.05))
F64 = torch.float64

# The kernels below have entries ~1 and, on their range, a condition number ~1e2: an
# eigendecomposition and a Cholesky solve each carry ~1e2 * eps ~ 1e-14 of relative error, so
# two such paths (or a path and a dense reference) agree to 1e-10 with a wide margin; a wrong
# limit (a null-space component divided by a rounding-level eigenvalue) is off by O(1).
RTOL, ATOL = 1e-10, 1e-10


@pytest.fixture(scope="module")
def duplicated():
    """Inputs ``[a, a, b, c]`` (row 1 repeats row 0), test inputs, and their joint kernel."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 4, generator=g, dtype=F64)
    x = torch.cat([x[:1], x])
    x_test = torch.randn(2, 4, generator=g, dtype=F64)
    k = NET.kernel(torch.cat([x, x_test]))
    return x, x_test, k


def _dedup(k, kt, y, f0):
    """The same problem with the repeated input once and the two residuals averaged: gradient
    flow moves only the sum of the twins' residuals, so its limit is this one's."""
    r = y - f0
    r_d = torch.cat([(r[:1] + r[1:2]) / 2, r[2:]])
    k_d = k[1:4, 1:4]
    alpha = torch.linalg.solve(k_d, r_d)
    fit = k_d @ alpha  # the converged residual on the distinct inputs (= r_d)
    return f0 + torch.cat([fit[:1], fit]), kt[:, 1:] @ alpha


def test_the_issue_example_two_identical_inputs_with_opposite_targets():
    # Targets 1 and -1 on one input cancel: the flow never moves the outputs there (the
    # residual lies in the kernel's null space), so the limit is 0 on train and test inputs.
    x = torch.randn(1, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    x_test = torch.randn(1, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    k = NET.kernel(torch.cat([x, x, x_test])).ntk
    y = torch.tensor([1.0, -1.0], dtype=F64)
    predict = gradient_descent_mse(k[:2, :2], y, learning_rate=0.1)
    train, test = predict(None, 0.0, 0.0, k[2:, :2])
    late_train, late_test = predict(1e8, 0.0, 0.0, k[2:, :2])
    for a, b in ((train, late_train), (test, late_test)):
        torch.testing.assert_close(a, b, rtol=0, atol=ATOL)
        torch.testing.assert_close(a, torch.zeros_like(a), rtol=0, atol=ATOL)


def test_converged_mse_on_duplicate_inputs_is_the_limit_of_long_training(duplicated):
    _, _, kall = duplicated
    k, kt = kall.ntk[:4, :4], kall.ntk[4:, :4]
    g = torch.Generator().manual_seed(3)
    y, f0, ft0 = (torch.randn(*s, generator=g, dtype=F64) for s in ((4, 2), (4, 2), (2, 2)))
    predict = gradient_descent_mse(k, y, learning_rate=0.5)
    train, test = predict(None, f0, ft0, kt)
    want_train, want_test = _dedup(k, kt, y, f0)
    torch.testing.assert_close(train, want_train, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(test, ft0 + want_test, rtol=RTOL, atol=ATOL)
    # exp(-lambda t eta / y.size) < 1e-40 on the range at t = 1e9; t = 1e300 is past it.
    for t in (1e9, 1e300):
        a, b = predict(t, f0, ft0, kt)
        torch.testing.assert_close(a, train, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(b, test, rtol=RTOL, atol=ATOL)
    # Without a test kernel the train outputs are the same limit (not y).
    torch.testing.assert_close(predict(None, f0)[0], train, rtol=0, atol=0)


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_converged_ensemble_on_duplicate_inputs_is_the_limit_of_long_training(duplicated, get):
    x, x_test, _ = duplicated
    y = torch.randn(4, generator=torch.Generator().manual_seed(4), dtype=F64)
    predict = gradient_descent_mse_ensemble(NET, x, y, learning_rate=0.5)
    for xt in (x_test, None):
        inf = predict(None, xt, get=get, compute_cov=True)
        late = predict(1e9, xt, get=get, compute_cov=True)
        torch.testing.assert_close(inf.mean, late.mean, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(inf.covariance, late.covariance, rtol=RTOL, atol=ATOL)


def test_gp_posterior_on_duplicate_inputs_is_that_of_the_distinct_inputs(duplicated):
    # The readout-only (NNGP) flow's limit: the posterior given each distinct input once, with
    # the twins' targets averaged.
    _, _, kall = duplicated
    k, kt, ktt = kall.nngp[:4, :4], kall.nngp[4:, :4], kall.nngp[4:, 4:]
    y = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=F64)
    mean, cov = gp_inference(k, y)(kt, ktt)
    _, want = _dedup(k, kt, y, torch.zeros_like(y))
    torch.testing.assert_close(mean, want, rtol=RTOL, atol=ATOL)
    k_d, kt_d = k[1:, 1:], kt[:, 1:]
    torch.testing.assert_close(cov, ktt - kt_d @ torch.linalg.solve(k_d, kt_d.T),
                               rtol=RTOL, atol=ATOL)


def test_psd_is_checked_without_a_test_kernel():
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=F64, generator=torch.Generator().manual_seed(0)))
    k = q @ torch.diag(torch.tensor([-1e-3, 1, 2, 3, 4], dtype=F64)) @ q.T
    with pytest.raises(NotPSDError, match=r"most negative eigenvalue is -0\.001\b"):
        gradient_descent_mse(k, torch.ones(5, dtype=F64))(None)


def test_gp_inference_rejects_a_test_kernel_with_negative_variances(duplicated):
    _, _, kall = duplicated
    k, kt, ktt = kall.nngp[:4, :4], kall.nngp[4:, :4], kall.nngp[4:, 4:]
    predict = gp_inference(k, torch.ones(4, dtype=F64))
    predict(kt, ktt)  # the true test kernel: fine
    # Lowering the test variances by more than they are makes the posterior's negative.
    bad = ktt - 2 * float(ktt.diagonal().max()) * torch.eye(2, dtype=F64)
    with pytest.raises(ValueError, match=r"k_test_test .*negative posterior variance"):
        predict(kt, bad)
    trk = kall.replace(nngp=kall.nngp[:4, :4], ntk=kall.ntk[:4, :4])
    tek = kall.replace(nngp=kall.nngp[4:, :4], ntk=kall.ntk[4:, :4])
    ntk_predict = gp_inference(trk, torch.ones(4, dtype=F64))
    var = ntk_predict(tek, ktt, get="ntk").covariance.diagonal()
    shift = float(var.max()) + float(ktt.diagonal().max())
    with pytest.raises(ValueError, match=r"k_test_test .*negative posterior variance"):
        ntk_predict(tek, ktt - shift * torch.eye(2, dtype=F64), get="ntk")


def test_cg_refuses_a_singular_kernel_without_a_ridge(duplicated):
    _, _, kall = duplicated
    k = kall.ntk[:4, :4]
    with pytest.raises(ValueError, match=r"k_train_train is singular.*duplicate inputs\?"):
        PSDSolver(k, method="cg")
    PSDSolver(k, method="cg", diag_reg=1e-3)  # a ridge makes it definite: fine


# --------------------------------------------------------------------------------------------
# Times in the kernel's dtype.


@pytest.fixture(scope="module")
def regular():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 4, generator=g, dtype=F64)
    k = NET.kernel(x).ntk
    return k[:4, :4], k[4:, :4], torch.randn(4, generator=g, dtype=F64)


def test_a_python_float_time_is_not_rounded_through_float32(regular):
    # The same time given as a float and as a float64 tensor runs the same computation.
    k, kt, y = regular
    predict = gradient_descent_mse(k, y, learning_rate=0.5)
    for t in (0.3, 1e-7 + 1.0):
        a = predict(t, 0.0, 0.0, kt)
        b = predict(torch.tensor(t, dtype=F64), 0.0, 0.0, kt)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    ens = gradient_descent_mse_ensemble(NET, torch.randn(4, 4, dtype=F64), y, learning_rate=0.1)
    assert torch.equal(ens(0.3, get="ntk"), ens(torch.tensor(0.3, dtype=F64), get="ntk"))


def test_huge_times_are_the_converged_outputs(regular):
    k, kt, y = regular
    predict = gradient_descent_mse(k, y, learning_rate=0.5)
    train, test = predict(None, 0.0, 0.0, kt)
    for t in (1e300, [1.0, 1e300]):
        a, b = predict(t, 0.0, 0.0, kt)
        torch.testing.assert_close(a[-1] if isinstance(t, list) else a, train, rtol=RTOL,
                                   atol=ATOL)
        torch.testing.assert_close(b[-1] if isinstance(t, list) else b, test, rtol=RTOL,
                                   atol=ATOL)


def test_a_time_too_large_for_a_float32_kernel_is_named():
    k = torch.eye(2)
    with pytest.raises(ValueError, match=r"t=1e\+300 overflows the kernel's dtype float32"):
        gradient_descent_mse(k, torch.ones(2))(1e300)
