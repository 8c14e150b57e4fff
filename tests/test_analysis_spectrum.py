"""ntkit.analysis spectra and scalar diagnostics (_spectrum, _checks) and the power-law fit and
plot (_plots): reference values, closed forms, multi-output flattening, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntkit import analysis as A
from ntkit.analysis import _spectrum
from ntkit.solve import NotPSDError

F64 = torch.float64


def _wishart(n: int, p: int, seed: int, dtype=F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, p, dtype=F64, generator=g)
    return (z @ z.T / p).to(dtype)


def _rotated(evals: torch.Tensor, seed: int, reflections: int = 3) -> torch.Tensor:
    """``Q diag(evals) Q^T`` with ``Q`` a product of Householder reflections: a dense matrix
    with a known spectrum, built in ``O(N^2)``."""
    g = torch.Generator().manual_seed(seed)
    k = torch.diag(evals.to(F64))
    for _ in range(reflections):
        v = torch.randn(evals.numel(), dtype=F64, generator=g)
        v = v / v.norm()
        k = k - 2 * torch.outer(v, v @ k)  # H K
        k = k - 2 * torch.outer(k @ v, v)  # (H K) H
    return (k + k.T) / 2


# --------------------------------------------------------------------------------------------
# spectrum


def test_spectrum_equals_lapack_eigh_on_small_matrices():
    k = _wishart(40, 60, seed=0)
    want_vals, want_vecs = np.linalg.eigh(k.numpy())
    want_vals, want_vecs = want_vals[::-1], want_vecs[:, ::-1]
    s = A.spectrum(k)
    assert s.eigenvalues.shape == (40,) and s.eigenvectors.shape == (40, 40)
    assert s.eigenvalues.dtype == F64
    # Two backward-stable eigensolvers agree to a few eps * ||K|| (||K|| ~ 4 here).
    assert np.abs(s.eigenvalues.numpy() - want_vals).max() < 1e-10
    # An eigenvector is determined up to sign, to eps ||K|| / gap: the smallest gap is asserted
    # so that 1e-10 is a real bound (eps * 4 / 1e-3 ~ 1e-12).
    assert np.diff(want_vals).__abs__().min() > 1e-3
    signs = np.sign((s.eigenvectors.numpy() * want_vecs).sum(0))
    assert np.abs(s.eigenvectors.numpy() * signs - want_vecs).max() < 1e-10
    top = A.spectrum(k, 5)
    assert top.eigenvalues.shape == (5,) and top.eigenvectors.shape == (40, 5)
    assert np.abs(top.eigenvalues.numpy() - want_vals[:5]).max() < 1e-10


def test_spectrum_accepts_numpy_and_zeroes_the_null_space():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(30, 4, dtype=F64, generator=g)
    s = A.spectrum((z @ z.T).numpy())  # rank 4
    assert (s.eigenvalues[:4] > 1).all()
    # The 26 null eigenvalues are rounding noise of size ~ eps ||K||, set to exactly 0 by the
    # rank rule of ntkit.solve.eigh.
    assert s.eigenvalues[4:].abs().max() == 0


def test_lanczos_route_matches_the_exact_top_k_at_n_2000():
    n, k = 2000, 10
    i = torch.arange(1, n + 1, dtype=F64)
    # A kernel-like spectrum: power-law decay with a repeated eigenvalue among the top k (as a
    # dot-product kernel's degenerate spherical harmonics) and one straddling the cut.
    lam = i**-1.5
    lam[2:5] = lam[2]
    lam[9:12] = lam[9]
    K = _rotated(lam, seed=2)
    s = A.spectrum(K, k, method="lanczos", generator=torch.Generator().manual_seed(0))
    want = lam[:k]
    # Residual tolerance 1e-10 relative: an eigenvalue is then off by ~(1e-10)^2 / gap, far
    # below 1e-8 relative; the repeated eigenvalues are found with their multiplicity.
    assert ((s.eigenvalues - want).abs() / want).max() < 1e-8
    resid = K @ s.eigenvectors - s.eigenvectors * s.eigenvalues
    assert resid.norm(dim=0).max() < 1e-8 * lam[0]
    assert (s.eigenvectors.T @ s.eigenvectors - torch.eye(k, dtype=F64)).abs().max() < 1e-10


def test_auto_takes_lanczos_only_for_a_small_k_of_a_large_kernel(monkeypatch):
    calls = []
    solver = _spectrum.lanczos_eigsh

    def counting(*args, **kwargs):
        calls.append(args[2])
        return solver(*args, **kwargs)

    monkeypatch.setattr(_spectrum, "lanczos_eigsh", counting)
    K = _rotated(0.9 ** torch.arange(1000, dtype=F64), seed=3, reflections=1)
    want = 0.9 ** torch.arange(5, dtype=F64)
    for k, route in ((5, [5]), (100, [5, 100]), (101, [5, 100])):
        s = A.spectrum(K, k)
        assert calls == route, k
        # Both routes give the known spectrum (geometric: well separated, fast Lanczos).
        assert ((s.eigenvalues[:5] - want).abs() / want).max() < 1e-10
    A.spectrum(K[:999, :999], 5)  # N < 1000: eigh
    assert calls == [5, 100]


def test_float32_kernels_on_both_routes():
    lam = 0.8 ** torch.arange(1000, dtype=F64)
    K = _rotated(lam, seed=4, reflections=2)
    for method in ("eigh", "lanczos"):
        s = A.spectrum(K.float(), 5, method=method, generator=torch.Generator().manual_seed(0))
        assert s.eigenvalues.dtype == torch.float32 and s.eigenvectors.dtype == torch.float32
        # Rounding K to float32 moves an eigenvalue by at most ||dK||_2 <= N eps32 max|K| ~ 1e-4
        # in the worst case; in practice ~sqrt(N) eps32: 1e-5 relative to lambda_5 = 0.41.
        assert ((s.eigenvalues.double() - lam[:5]).abs() / lam[:5]).max() < 1e-5, method


def test_multi_output_kernels_are_flattened_example_major():
    g = torch.Generator().manual_seed(5)
    n, o = 6, 3
    z = torch.randn(n * o, 10, dtype=F64, generator=g)
    flat = z @ z.T  # rows i * O + a
    K4 = flat.reshape(n, o, n, o).permute(0, 2, 1, 3)  # K4[i, j, a, b] = flat[iO + a, jO + b]
    s = A.spectrum(K4)
    want = np.linalg.eigvalsh(flat.numpy())[::-1]
    assert s.eigenvalues.shape == (n * o,) and s.eigenvectors.shape == (n * o, n * o)
    assert np.abs(s.eigenvalues.numpy() - want).max() < 1e-10
    v = s.eigenvectors[:, 0]
    assert torch.allclose(flat @ v, s.eigenvalues[0] * v, rtol=0, atol=1e-10)
    # Theta ⊗ I_O (the NTK of O independent outputs): each eigenvalue O times, so the entropy
    # and participation effective ranks, and the trace, are O times those of Theta; the
    # condition number is the same.
    theta = _wishart(8, 20, seed=6)
    kron = torch.einsum("ij,ab->ijab", theta, torch.eye(o, dtype=F64))
    for kind in ("entropy", "participation"):
        assert math.isclose(A.effective_rank(kron, kind=kind),
                            o * A.effective_rank(theta, kind=kind), rel_tol=1e-12)
    assert math.isclose(A.trace_norm(kron), o * A.trace_norm(theta), rel_tol=1e-14)
    assert math.isclose(A.condition_number(kron), A.condition_number(theta), rel_tol=1e-8)


# --------------------------------------------------------------------------------------------
# scalar diagnostics


def test_effective_rank_of_a_padded_scaled_identity_is_its_rank():
    lam = torch.zeros(12, dtype=F64)
    lam[:5] = 3.7
    K = _rotated(lam, seed=7)
    for kind in ("entropy", "participation"):
        # p_i = 1/5 on 5 eigenvalues: exp(log 5) = 5 and 25 c^2 / (5 c^2) = 5; the 7 zero
        # eigenvalues are rounding noise ~1e-15 before the rank rule sets them to 0.
        assert math.isclose(A.effective_rank(K, kind=kind), 5.0, rel_tol=1e-12), kind
        assert math.isclose(A.effective_rank(lam, kind=kind), 5.0, rel_tol=1e-14), kind


def test_effective_rank_closed_forms_and_ordering():
    lam = torch.tensor([4.0, 2.0, 1.0, 1.0], dtype=F64)
    p = lam / lam.sum()
    want_entropy = math.exp(-float((p * p.log()).sum()))
    assert math.isclose(A.effective_rank(lam), want_entropy, rel_tol=1e-14)
    assert math.isclose(A.effective_rank(lam, kind="participation"), 64 / 22, rel_tol=1e-14)
    # The participation ratio is exp of the Renyi-2 entropy, which never exceeds the Shannon
    # entropy: participation <= entropy form, on any spectrum.
    s = A.spectrum(_wishart(30, 10, seed=8)).eigenvalues
    assert A.effective_rank(s, kind="participation") < A.effective_rank(s) <= 10 + 1e-9
    # From K or from its eigenvalues: the same number (one eigendecomposition per record).
    K = _wishart(30, 10, seed=8)
    assert math.isclose(A.effective_rank(K), A.effective_rank(s), rel_tol=1e-12)


def test_condition_number_and_trace_norm():
    lam = torch.tensor([8.0, 3.0, 2.0, 0.5], dtype=F64)
    K = _rotated(lam, seed=9)
    assert math.isclose(A.condition_number(K), 16.0, rel_tol=1e-12)
    assert math.isclose(A.condition_number(lam), 16.0, rel_tol=1e-15)
    assert math.isclose(A.trace_norm(K), 13.5, rel_tol=1e-14)
    assert math.isclose(A.trace_norm(lam), 13.5, rel_tol=1e-15)
    singular = _rotated(torch.tensor([2.0, 1.0, 0.0], dtype=F64), seed=10)
    assert A.condition_number(singular) == math.inf
    assert A.condition_number(torch.zeros(3, 3, dtype=F64)) == math.inf
    assert math.isclose(A.condition_number(K.float()), 16.0, rel_tol=1e-5)  # float32 works


# --------------------------------------------------------------------------------------------
# power law and plot


def test_power_law_exponent_recovers_alpha():
    i = torch.arange(1, 201, dtype=F64)
    assert math.isclose(A.power_law_exponent(2.5 * i**-1.3), 1.3, rel_tol=1e-12)
    # A head off the power law is skipped by start; stop cuts the tail.
    lam = i**-2.0
    lam[:3] = 10.0
    assert math.isclose(A.power_law_exponent(lam, start=4), 2.0, rel_tol=1e-12)
    assert math.isclose(A.power_law_exponent(lam, start=4, stop=50), 2.0, rel_tol=1e-12)
    assert A.power_law_exponent(lam) > 2.1  # the raised head steepens a fit over everything
    # From a kernel: the same as from its spectrum.
    K = _rotated(i[:50] ** -1.7, seed=11)
    assert math.isclose(A.power_law_exponent(K), 1.7, rel_tol=1e-10)


def test_plot_spectrum_draws_the_fit_with_its_exponent():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    i = torch.arange(1, 101, dtype=F64)
    ax = A.plot_spectrum(_rotated(3 * i**-1.5, seed=12), start=2)
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["eigenvalues", r"fit: $\alpha$ = 1.50"]
    line = ax.get_lines()[1]
    # The fitted line is the power law itself: 3 i^-1.5 at i = 2 and 100.
    assert np.allclose(line.get_ydata()[[0, -1]], [3 * 2**-1.5, 3 * 100**-1.5], rtol=1e-9)
    fig, ax2 = plt.subplots()
    assert A.plot_spectrum(i**-1.0, ax=ax2, fit=False) is ax2 and len(ax2.get_lines()) == 1
    plt.close("all")


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("fn", [A.spectrum, A.condition_number, A.effective_rank,
                                A.trace_norm, A.power_law_exponent])
def test_bad_kernels_raise_naming_the_argument(fn):
    good = _wishart(5, 8, seed=13)
    name = "eigenvalues" if fn is A.power_law_exponent else "K"
    with pytest.raises(ValueError, match=f"{name} must be a square"):
        fn(good[:, :4])
    with pytest.raises(ValueError, match=f"{name} must be a square"):
        fn(good[None])
    with pytest.raises(ValueError, match=f"{name} is empty"):
        fn(torch.zeros(0, 0, dtype=F64))
    for bad in (math.nan, math.inf):
        k = good.clone()
        k[1, 2] = k[2, 1] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            fn(k)
    k = good.clone()
    k[0, 1] += 1e-6
    with pytest.raises(ValueError, match=r"symmetric: max\|K - K\^T\| = 1e-06 exceeds the "
                                         r"tolerance 1e3 \* eps \* max\|K\|"):
        fn(k)
    with pytest.raises(TypeError, match="float32 or float64"):
        fn(good.to(torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor or numpy array"):
        fn(good.tolist())


def test_asymmetry_within_round_off_is_accepted():
    k = _wishart(5, 8, seed=13)
    k[0, 1] += 100 * torch.finfo(F64).eps * float(k.abs().max())
    assert A.spectrum(k).eigenvalues.shape == (5,)


@pytest.mark.parametrize("fn", [A.spectrum, A.condition_number, A.effective_rank,
                                A.power_law_exponent])
def test_negative_eigenvalues_beyond_round_off_raise(fn):
    K = _rotated(torch.tensor([3.0, 1.0, -1e-3], dtype=F64), seed=14)
    with pytest.raises(NotPSDError, match=r"not positive semi-definite.*-0\.001"):
        fn(K)
    if fn is A.spectrum:  # takes a matrix only
        return
    with pytest.raises(ValueError, match="PSD kernel; the most negative is -0.001"):
        fn(torch.tensor([3.0, 1.0, -1e-3], dtype=F64))
    # Round-off-sized negatives are noise: set to 0, not an error.
    fn(torch.tensor([3.0, 1.0, -1e-16], dtype=F64))


def test_bad_options_raise():
    K = _wishart(20, 30, seed=15)
    for k in (0, 21, 2.0, True):
        with pytest.raises(ValueError, match=r"k must be None or an int in \[1, N = 20\]"):
            A.spectrum(K, k)
    with pytest.raises(ValueError, match="method must be"):
        A.spectrum(K, 2, method="lobpcg")
    with pytest.raises(ValueError, match="pass k"):
        A.spectrum(K, method="lanczos")
    with pytest.raises(ValueError, match="kind must be"):
        A.effective_rank(K, kind="renyi")
    with pytest.raises(ValueError, match="zero kernel"):
        A.effective_rank(torch.zeros(3, 3, dtype=F64))
    with pytest.raises(ValueError, match="must be a non-empty 1-D"):
        A.effective_rank(torch.zeros(0, dtype=F64))
    lam = torch.arange(10.0, 0.0, -1.0, dtype=F64)
    with pytest.raises(ValueError, match="start must be an int >= 1"):
        A.power_law_exponent(lam, start=0)
    with pytest.raises(ValueError, match="stop must be None or an int >= start"):
        A.power_law_exponent(lam, start=3, stop=3)
    with pytest.raises(ValueError, match="exceeds the number of positive eigenvalues, 10"):
        A.power_law_exponent(lam, stop=11)
