"""ntkit.analysis similarity (_similarity): alignment identities against explicit formulas,
HSIC against its defining U-statistic, CKA invariances and Monte Carlo values, the feature form
of linear CKA, bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from ntkit import analysis as A

F64 = torch.float64


def _features(n: int, p: int, seed: int) -> torch.Tensor:
    return torch.randn(n, p, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _gram(n: int, p: int, seed: int) -> torch.Tensor:
    x = _features(n, p, seed)
    return x @ x.T


def _H(n: int) -> np.ndarray:
    return np.eye(n) - np.ones((n, n)) / n


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------------------------
# alignment, centred alignment, kernel distance


def test_kernel_alignment_and_distance_against_the_definition():
    K1, K2 = _gram(12, 5, 0), _gram(12, 7, 1)
    want = _cos(K1.numpy(), K2.numpy())
    # One Frobenius inner product of O(1)-conditioned sums: agreement to ~1e-15; 1e-13 slack.
    assert math.isclose(A.kernel_alignment(K1, K2), want, rel_tol=1e-13)
    assert math.isclose(A.kernel_alignment(K2, K1), want, rel_tol=1e-13)
    assert math.isclose(A.kernel_distance(K1, K2), 1 - want, rel_tol=1e-12)
    assert 0 < want < 1  # PSD kernels: nonnegative inner product
    assert abs(A.kernel_alignment(K1, 3.5 * K1) - 1) < 1e-15
    assert abs(A.kernel_distance(K1, K1)) < 1e-15
    assert math.isclose(A.kernel_alignment(K1.numpy(), K2.float()), want, rel_tol=1e-6)


def test_kernel_distance_keeps_its_precision_for_a_small_movement():
    K1 = _gram(20, 5, 30)
    E = _gram(20, 20, 31) - 20 * torch.eye(20, dtype=F64)
    K2 = K1 + 2e-4 * E
    a, b = K1.float(), K2.float()
    want = A.kernel_distance(a.double(), b.double())  # the same float32 matrices, in float64
    assert 1e-8 < want < 1e-7
    # The difference form keeps float32's ~1e-7 relative precision on the entries of the
    # normalised difference (~1e-3 relative here, entries 2e-4 of the kernel's); 1 - cos would
    # be off by ~1e-7 absolute, as large as the distance itself.
    assert math.isclose(A.kernel_distance(a, b), want, rel_tol=1e-2)


def test_target_alignment_against_the_definition():
    K = _gram(10, 4, 2)
    y = _features(10, 1, 3)[:, 0]
    Y = _features(10, 3, 4)
    assert math.isclose(A.target_alignment(K, y), _cos(K.numpy(), np.outer(y, y)),
                        rel_tol=1e-13)
    assert math.isclose(A.target_alignment(K, Y), _cos(K.numpy(), (Y @ Y.T).numpy()),
                        rel_tol=1e-13)
    # Cristianini et al.: y^T K y / (||K||_F ||y||^2) for one output.
    want = float(y @ K @ y / (K.norm() * (y @ y)))
    assert math.isclose(A.target_alignment(K, y), want, rel_tol=1e-13)
    assert abs(A.target_alignment(torch.outer(y, y), y) - 1) < 1e-14
    assert math.isclose(A.target_alignment(K.float(), y.float()), want, rel_tol=1e-5)


def test_centered_alignment_against_h_k_h():
    K1, K2 = _gram(9, 3, 5), _gram(9, 6, 6)
    H = _H(9)
    want = _cos(H @ K1.numpy() @ H, H @ K2.numpy() @ H)
    assert math.isclose(A.centered_alignment(K1, K2), want, rel_tol=1e-12)
    # Centring removes a constant kernel: K + c 1 1^T has the same centred alignment.
    assert math.isclose(A.centered_alignment(K1 + 4.0, K2), want, rel_tol=1e-12)
    # ... and equals the biased CKA of the same kernels ((N - 1)^2 cancels).
    assert math.isclose(A.cka_from_kernels(K1, K2), want, rel_tol=1e-12)
    y = _features(9, 2, 7)
    Hy = H @ y.numpy()
    assert math.isclose(A.centered_target_alignment(K1, y),
                        _cos(H @ K1.numpy() @ H, Hy @ Hy.T), rel_tol=1e-12)
    assert math.isclose(A.centered_target_alignment(K1, y + 10.0),
                        A.centered_target_alignment(K1, y), rel_tol=1e-12)


def test_multi_output_kernels_use_the_flattened_matrix():
    n, o = 5, 2
    f1, f2 = _gram(n * o, 4, 8), _gram(n * o, 6, 9)  # (N O, N O) with rows i * O + a

    def four(flat):
        return flat.reshape(n, o, n, o).permute(0, 2, 1, 3)

    assert math.isclose(A.kernel_alignment(four(f1), four(f2)),
                        _cos(f1.numpy(), f2.numpy()), rel_tol=1e-13)
    Y = _features(n, o, 10)
    vec = Y.reshape(-1).numpy()  # index i * O + a
    assert math.isclose(A.target_alignment(four(f1), Y), _cos(f1.numpy(), np.outer(vec, vec)),
                        rel_tol=1e-13)
    # Centred over examples: (H ⊗ I_O) on the flattened matrix.
    P = np.kron(_H(n), np.eye(o))
    assert math.isclose(A.centered_alignment(four(f1), four(f2)),
                        _cos(P @ f1.numpy() @ P, P @ f2.numpy() @ P), rel_tol=1e-12)
    Py = P @ vec
    assert math.isclose(A.centered_target_alignment(four(f1), Y),
                        _cos(P @ f1.numpy() @ P, np.outer(Py, Py)), rel_tol=1e-12)
    with pytest.raises(ValueError, match="not a multi-output kernel"):
        A.hsic(four(f1), four(f2))
    with pytest.raises(ValueError, match="not a multi-output kernel"):
        A.cka_from_kernels(four(f1), four(f2))
    with pytest.raises(ValueError, match=r"y must have shape \(N, O\) = \(5, 2\)"):
        A.target_alignment(four(f1), Y[:, 0])


# --------------------------------------------------------------------------------------------
# HSIC


def test_hsic_biased_and_unbiased_against_their_definitions():
    n = 7
    K, L = _gram(n, 3, 11).numpy(), _gram(n, 2, 12).numpy()
    H = _H(n)
    assert math.isclose(A.hsic(K, L), np.trace(K @ H @ L @ H) / (n - 1) ** 2, rel_tol=1e-12)
    # Song et al. (2012): the unbiased estimator is the U-statistic over distinct 4-tuples of
    # h = k_ij l_ij + k_ij l_qr - 2 k_ij l_iq (population HSIC = E kl + E k E l - 2 E k l').
    total = sum(K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
                for i, j, q, r in itertools.permutations(range(n), 4))
    want = total / (n * (n - 1) * (n - 2) * (n - 3))
    assert math.isclose(A.hsic(K, L, unbiased=True), want, rel_tol=1e-11)


def test_hsic_monte_carlo_for_independent_gaussian_features():
    n, p, q, draws = 20, 3, 4, 300
    g = torch.Generator().manual_seed(13)
    biased, unbiased = [], []
    for _ in range(draws):
        X = torch.randn(n, p, dtype=F64, generator=g)
        Y = torch.randn(n, q, dtype=F64, generator=g)
        K, L = X @ X.T, Y @ Y.T
        biased.append(A.hsic(K, L))
        unbiased.append(A.hsic(K, L, unbiased=True))
    biased, unbiased = np.array(biased), np.array(unbiased)
    se_b, se_u = biased.std(ddof=1) / draws**0.5, unbiased.std(ddof=1) / draws**0.5
    # Independent X, Y: the population HSIC is 0, so the unbiased estimator has mean 0. The
    # biased one has mean E ||Yc^T Xc||_F^2 / (n-1)^2 = tr(H) p q / (n-1)^2 = p q / (n-1)
    # exactly (E[Xc Xc^T] = p H). Both within 4 standard errors (a false alarm ~6e-5).
    assert abs(unbiased.mean()) < 4 * se_u
    assert abs(biased.mean() - p * q / (n - 1)) < 4 * se_b


# --------------------------------------------------------------------------------------------
# CKA


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_cka_is_one_for_identical_rotated_and_scaled_representations(kernel, unbiased):
    X = _features(40, 6, 14)
    Q = torch.linalg.qr(_features(6, 6, 15))[0]
    # Orthogonal maps and isotropic scaling preserve inner products up to c^2 (linear) and
    # distances up to c (RBF with the median bandwidth, which scales with c): the kernels are
    # proportional or equal, and CKA is 1 up to rounding.
    for Y in (X, X @ Q, 2.5 * X, -0.3 * X @ Q):
        assert abs(A.cka(X, Y, kernel=kernel, unbiased=unbiased) - 1) < 1e-12


def test_linear_cka_feature_form_equals_the_gram_form_and_forms_no_n_by_n_matrix():
    n = 300
    X, Y = _features(n, 8, 16), _features(n, 5, 17) @ _features(5, 12, 18) + 1.0
    Y = Y + 0.5 * X @ _features(8, 12, 19)  # dependent on X: CKA well away from 0

    class Shapes(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.seen = set()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                self.seen.add(tuple(out.shape))
            return out

    for unbiased in (False, True):
        with Shapes() as mode:
            value = A.cka(X, Y, unbiased=unbiased)
        assert (n, n) not in mode.seen and max(math.prod(s) for s in mode.seen) <= n * 12
        want = A.cka_from_kernels(X @ X.T, Y @ Y.T, unbiased=unbiased)
        # Same quantity by two summation orders: ~1e-14 relative; 1e-11 for the unbiased
        # estimator's cancellation between its three terms.
        assert 0.2 < value < 1 and math.isclose(value, want, rel_tol=1e-11), unbiased
    # More features than examples: the Gram form is taken, same value.
    W = _features(20, 30, 20)
    assert math.isclose(A.cka(W, W[:, :25] ** 2), A.cka_from_kernels(W @ W.T, (W[:, :25] ** 2)
                        @ (W[:, :25] ** 2).T), rel_tol=1e-12)


def test_rbf_cka_against_an_explicit_computation():
    X, Y = _features(25, 3, 21), _features(25, 4, 22)
    Y[:, 0] += X[:, 0]
    x, y = X.numpy(), Y.numpy()

    def gram(z, sigma):
        d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * sigma**2))

    def median(z):
        d = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
        return np.median(d[np.triu_indices(len(z), 1)])

    H = _H(25)

    def cka(k, l):
        return float(np.trace(k @ H @ l @ H) / np.sqrt(np.trace(k @ H @ k @ H)
                                                       * np.trace(l @ H @ l @ H)))

    assert math.isclose(A.cka(X, Y, kernel="rbf", sigma=1.7), cka(gram(x, 1.7), gram(y, 1.7)),
                        rel_tol=1e-10)
    # sigma=None: 0.8 x the median distance between distinct examples, per representation.
    want = cka(gram(x, 0.8 * median(x)), gram(y, 0.8 * median(y)))
    assert math.isclose(A.cka(X, Y, kernel="rbf"), want, rel_tol=1e-10)


def test_linear_cka_monte_carlo_for_independent_gaussian_features():
    n, p, q, draws = 100, 10, 10, 200
    g = torch.Generator().manual_seed(23)
    values = np.array([A.cka(torch.randn(n, p, dtype=F64, generator=g),
                             torch.randn(n, q, dtype=F64, generator=g)) for _ in range(draws)])
    # Biased linear CKA of independent isotropic Gaussian X (n, p), Y (n, q). Numerator:
    # E ||Yc^T Xc||_F^2 = E tr(Xc^T Yc Yc^T Xc) = tr(H q H p) = p q (n - 1). Denominator:
    # Xc^T Xc ~ Wishart_p(n - 1, I), and E tr(W^2) = m p (m + p + 1) for W ~ Wishart_p(m, I),
    # so E ||Xc^T Xc||_F^2 = (n - 1) p (n + p). The ratio of expectations is
    #     sqrt(p q / ((n + p) (n + q))) = 10 / 110 = 0.0909...
    # The denominators concentrate (relative spread ~1/sqrt(p n)), so the ratio of expectations
    # is the expectation to O(1/n): 2e5 draws give 0.09101 +- 0.00009 here (+0.1 %). Allowed:
    # 4 standard errors of this run plus 1 % for that bias.
    want = math.sqrt(p * q / ((n + p) * (n + q)))
    se = values.std(ddof=1) / draws**0.5
    assert abs(values.mean() - want) < 4 * se + 0.01 * want
    # The unbiased CKA has no such positive floor: its mean is ~0 (its numerator's is 0).
    unb = np.array([A.cka(torch.randn(n, p, dtype=F64, generator=g),
                          torch.randn(n, q, dtype=F64, generator=g), unbiased=True)
                    for _ in range(draws)])
    assert abs(unb.mean()) < 4 * unb.std(ddof=1) / draws**0.5


def test_cka_float32_and_numpy_inputs():
    X, Y = _features(50, 4, 24), _features(50, 6, 25)
    Y[:, :4] += X
    want = A.cka(X, Y)
    # float32 features: rounding of O(1) entries and sums of 50 terms, ~1e-6 relative.
    assert math.isclose(A.cka(X.float(), Y.float()), want, rel_tol=1e-5)
    assert math.isclose(A.cka(X.numpy(), Y.numpy()), want, rel_tol=1e-14)
    assert math.isclose(A.cka(X.float(), Y.float(), kernel="rbf"), A.cka(X, Y, kernel="rbf"),
                        rel_tol=1e-5)


# --------------------------------------------------------------------------------------------
# bad input


def test_bad_kernels_and_targets_raise():
    K, L = _gram(6, 3, 26), _gram(6, 4, 27)
    for fn in (A.kernel_alignment, A.kernel_distance, A.centered_alignment, A.hsic,
               A.cka_from_kernels):
        with pytest.raises(ValueError, match="K1 and K2 must have the same shape|K and L must"):
            fn(K, L[:5, :5])
        bad = K.clone()
        bad[0, 1] = math.nan
        with pytest.raises(ValueError, match="contains NaN or infinite"):
            fn(bad, L)
        bad = K.clone()
        bad[0, 1] += 1e-3
        with pytest.raises(ValueError, match="must be symmetric"):
            fn(K, bad)
        with pytest.raises(ValueError, match="must be a square"):
            fn(K[:, :3], L[:, :3])
        with pytest.raises(ValueError, match="is empty"):
            fn(K[:0, :0], L[:0, :0])
    with pytest.raises(ValueError, match="K2 is zero"):
        A.kernel_alignment(K, torch.zeros_like(K))
    with pytest.raises(ValueError, match="K1 \\(centred\\) is zero"):
        A.centered_alignment(torch.ones_like(K), L)  # a constant kernel centres to 0
    y = torch.ones(6, dtype=F64)
    for fn in (A.target_alignment, A.centered_target_alignment):
        with pytest.raises(ValueError, match=r"y must have shape \(N,\) or \(N, O\) with N = 6"):
            fn(K, y[:5])
        with pytest.raises(ValueError, match="y contains NaN"):
            fn(K, torch.full((6,), math.nan, dtype=F64))
        with pytest.raises(TypeError, match="y must be a torch.Tensor"):
            fn(K, [1.0] * 6)
    with pytest.raises(ValueError, match="y is zero \\(after centring"):
        A.centered_target_alignment(K, y)  # a constant target centres to 0


def test_bad_representations_and_options_raise():
    X, Y = _features(10, 3, 28), _features(10, 2, 29)
    with pytest.raises(ValueError, match="same examples; got N = 10 and 9"):
        A.cka(X, Y[:9])
    with pytest.raises(ValueError, match="X must be a non-empty representation"):
        A.cka(X[:, 0], Y)
    with pytest.raises(ValueError, match="Y must be a non-empty representation"):
        A.cka(X, Y[:, :0])
    bad = Y.clone()
    bad[3, 1] = math.inf
    with pytest.raises(ValueError, match="Y contains NaN or infinite"):
        A.cka(X, bad)
    with pytest.raises(TypeError, match="X must be float32 or float64"):
        A.cka(X.long(), Y)
    with pytest.raises(ValueError, match="kernel must be 'linear' or 'rbf'"):
        A.cka(X, Y, kernel="poly")
    for sigma in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="sigma must be None or a finite number > 0"):
            A.cka(X, Y, kernel="rbf", sigma=sigma)
    with pytest.raises(ValueError, match="needs N >= 4"):
        A.cka(X[:3], Y[:3], unbiased=True)
    with pytest.raises(ValueError, match="needs N >= 4"):
        A.hsic(_gram(3, 2, 30), _gram(3, 2, 31), unbiased=True)
    with pytest.raises(ValueError, match=r"HSIC\(X, X\) = 0 is not positive.*constant"):
        A.cka(torch.ones(10, 3, dtype=F64), Y)
    with pytest.raises(ValueError, match="median distance between examples is 0"):
        A.cka(torch.ones(10, 3, dtype=F64), Y, kernel="rbf")
