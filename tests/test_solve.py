import warnings

import numpy as np
import pytest
import torch

from ntkit.solve import (
    CGConvergenceWarning,
    JitterWarning,
    NotPSDError,
    PSDSolver,
    _psd,
    centred_one_hot,
    cg_solve,
    cholesky,
    eigh,
    kernel_ridge,
    lanczos_eigsh,
)


def test_kernel_ridge_equals_a_dense_solve():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 5, dtype=torch.float64, generator=g)
    k = a @ a.T  # rank 5: singular without the ridge
    y = torch.randn(20, 3, dtype=torch.float64, generator=g)
    coef = kernel_ridge(k, y, alpha=1e-3)
    want = np.linalg.solve(k.numpy() + 1e-3 * np.mean(np.diag(k.numpy())) * np.eye(20), y.numpy())
    # Both are backward-stable solves of a system with condition ~1e4: agreement to ~1e-11.
    assert np.allclose(coef.numpy(), want, rtol=1e-9, atol=1e-12)
    assert kernel_ridge(k, y[:, 0], alpha=1e-3).shape == (20, 1)


def test_kernel_ridge_rejects_an_indefinite_kernel():
    k = torch.diag(torch.tensor([1.0, -5.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="alpha"):
        kernel_ridge(k, torch.ones(2, dtype=torch.float64), alpha=0.0)


def test_centred_one_hot():
    t = centred_one_hot(torch.tensor([0, 2, 1]), 3)
    assert torch.allclose(t.sum(1), torch.zeros(3, dtype=t.dtype), atol=1e-15)  # centred
    assert t.argmax(1).tolist() == [0, 2, 1]


# --------------------------------------------------------------------------------------------
# cholesky, eigh, conjugate gradients (ntkit.solve._cholesky, _eigh, _cg, _psd).



def _rbf(n, seed=0, lengthscale=1.0):
    x = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return torch.exp(-torch.cdist(x, x) ** 2 / (2 * lengthscale**2))


def test_cholesky_of_a_well_conditioned_kernel_adds_nothing():
    k = _rbf(30) + 0.1 * torch.eye(30, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chol, jitter = cholesky(k)
    assert jitter == 0.0
    torch.testing.assert_close(chol @ chol.T, k, rtol=0, atol=1e-14)


def test_cholesky_adds_increasing_jitter_to_a_singular_kernel_and_says_how_much():
    a = torch.randn(40, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    k = a @ a.T  # rank 5: exactly singular, fails without jitter
    assert int(torch.linalg.cholesky_ex(k)[1]) != 0
    with pytest.warns(JitterWarning, match=r"added jitter \d") as rec:
        chol, jitter = cholesky(k)
    # The jitter stays at the round-off scale n eps max K_ii, named in the warning.
    scale = 40 * torch.finfo(torch.float64).eps * float(k.diagonal().max())
    assert 0 < jitter <= scale
    assert f"{jitter:.3g}" in str(rec[0].message)
    torch.testing.assert_close(chol @ chol.T, k + jitter * torch.eye(40, dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_non_psd_kernel_raises_with_its_most_negative_eigenvalue():
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(2)))
    evals = torch.tensor([-2e-6, 0.5, 1, 1, 2, 3, 4, 5], dtype=torch.float64)
    k = q @ torch.diag(evals) @ q.T
    for fn in (cholesky, eigh):
        with pytest.raises(NotPSDError, match=r"most negative eigenvalue is -2e-06\b"):
            fn(k)
    # A ridge larger than the negative part makes it factorisable (and reports no jitter).
    chol, jitter = cholesky(k, diag_reg=1e-5)
    assert jitter == 0.0


def test_eigh_clamps_round_off_negatives_only():
    a = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    k = a @ a.T  # 17 zero eigenvalues, computed as +-1e-15
    evals, evecs = eigh(k)
    assert float(evals.min()) >= 0.0
    torch.testing.assert_close(evecs @ torch.diag(evals) @ evecs.T, k, rtol=0, atol=1e-12)
    np.testing.assert_allclose(evals[-3:].numpy(), np.linalg.eigvalsh(k.numpy())[-3:],
                               rtol=1e-12)


def test_cg_path_equals_the_cholesky_path():
    k = _rbf(200, lengthscale=0.7)
    b = torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    reg = 1e-2
    chol = PSDSolver(k, diag_reg=reg, method="cholesky").solve(b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # CG converges (condition ~25 after preconditioning)
        cg = PSDSolver(k, diag_reg=reg, method="cg").solve(b)
    # Condition number ~3e3 and CG's relative residual 1e-10: agreement to ~1e-7 at worst.
    torch.testing.assert_close(cg, chol, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(cg_solve(k, b[:, 0], diag_reg=reg), chol[:, 0], rtol=1e-7,
                               atol=1e-9)


def test_auto_switches_to_cg_above_the_threshold(monkeypatch):
    k = _rbf(50) + 0.01 * torch.eye(50, dtype=torch.float64)
    assert PSDSolver(k).method == "cholesky"
    monkeypatch.setattr(_psd, "CG_THRESHOLD", 49)
    assert PSDSolver(k).method == "cg"


def test_cg_warns_when_it_stops_short():
    k = _rbf(100, lengthscale=2.0)  # condition ~1e16 without a ridge
    with pytest.warns(CGConvergenceWarning, match="max_iter=3"):
        cg_solve(k, torch.ones(100, dtype=torch.float64), max_iter=3, rank=2)


def test_solve_rejects_bad_kernels():
    with pytest.raises(ValueError, match="square"):
        cholesky(torch.ones(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="symmetric"):
        eigh(torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        cholesky(torch.tensor([[float("nan")]], dtype=torch.float64))


def test_all_finite_survives_overflowing_sums():
    from ntkit._checks import all_finite

    huge = torch.full((4, 4), 1e308, dtype=torch.float64)  # finite entries, infinite sum
    assert all_finite(huge)
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.ones(3, 3, dtype=torch.float64)
        x[1, 2] = bad
        assert not all_finite(x)


def test_cho_solve_equals_torch_cholesky_solve():
    from ntkit.solve import cho_solve

    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 30, generator=g, dtype=torch.float64)
    chol = torch.linalg.cholesky(a @ a.T + 30 * torch.eye(30, dtype=torch.float64))
    b = torch.randn(30, 3, generator=g, dtype=torch.float64)
    # Both are two triangular solves with the same factor; they agree to rounding (1e-12
    # relative on a condition number ~ 4).
    torch.testing.assert_close(cho_solve(chol, b), torch.cholesky_solve(b, chol), rtol=1e-12,
                               atol=0)
    torch.testing.assert_close(cho_solve(chol, b[:, 0]), torch.cholesky_solve(b, chol)[:, 0],
                               rtol=1e-12, atol=0)


def test_psd_solver_on_a_low_rank_kernel_is_the_pseudo_inverse():
    # Rank 5 of 20: Cholesky leaves rounding-level pivots on the 15 dependent rows, and the
    # solver falls back to the pseudo-inverse on the range (the minimum-norm solution).
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 5, dtype=torch.float64, generator=g)
    k = a @ a.T
    b = torch.randn(20, 3, dtype=torch.float64, generator=g)
    solver = PSDSolver(k, method="cholesky")
    assert solver.rank == 5
    want = np.linalg.pinv(k.numpy(), rcond=1e-10, hermitian=True) @ b.numpy()
    # Condition ~1e2 on the range: both pseudo-inverses agree to ~1e-13.
    np.testing.assert_allclose(solver.solve(b).numpy(), want, rtol=1e-9, atol=1e-11)
    proj = a @ torch.linalg.lstsq(a, b).solution  # projection on the range, by least squares
    torch.testing.assert_close(solver.range_part(b), proj, rtol=1e-9, atol=1e-11)
    # A definite kernel stays on the Cholesky path: rank n, the right-hand side unprojected.
    definite = PSDSolver(k + torch.eye(20, dtype=torch.float64))
    assert definite.rank == 20 and definite.range_part(b) is b


def test_lanczos_top_k_equals_eigvalsh_on_a_kernel_matrix():
    # The top 10 eigenvalues of a 2000 x 2000 ReLU-type kernel by Lanczos against LAPACK's full
    # eigvalsh: two computations of the same numbers, float64; the stopping rule (residual
    # <= 1e-10 |theta_1|) puts eigenvalue errors near residual^2 / gap, far below 1e-9.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 20, dtype=torch.float64, generator=g)
    k = torch.relu(x @ x.T / 20) + 0.1 * (x @ x.T / 20) ** 2
    exact = torch.linalg.eigvalsh(k).flip(0)[:10]
    evals, evecs = lanczos_eigsh(lambda v: k @ v, 2000, 10, generator=g)
    assert ((evals - exact).abs() / exact).max() < 1e-9
    assert torch.linalg.vector_norm(k @ evecs - evecs * evals, dim=0).max() < 1e-7 * exact[0]
    torch.testing.assert_close(evecs.T @ evecs, torch.eye(10, dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_lanczos_finds_repeated_eigenvalues_past_an_invariant_subspace():
    # diag(3, 3, 3, 1, 1): a start vector spans only one direction of each eigenspace, so the
    # Krylov space is invariant after 2 steps; the restart must find the second 3 and the 1s.
    a = torch.diag(torch.tensor([3.0, 3.0, 3.0, 1.0, 1.0], dtype=torch.float64))
    evals, _ = lanczos_eigsh(lambda v: a @ v, 5, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(evals, torch.tensor([3.0, 3.0, 3.0, 1.0], dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_lanczos_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k must be"):
        lanczos_eigsh(lambda v: v, 5, 6)
    with pytest.raises(ValueError, match="n must be"):
        lanczos_eigsh(lambda v: v, 0, 1)
    with pytest.raises(ValueError, match="matvec must return"):
        lanczos_eigsh(lambda v: v[:2], 5, 1)
