"""The layer-by-layer NTK sketch (``NTKSketch`` with ``b_std > 0`` and ``depth >= 2``): its
polynomials, the kernel it converges to, exact unbiasedness of one layer given the previous,
the O(1/m) bias of the composition, and m^-1/2 convergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntkit import layers as L
from ntkit.features import NTKSketch
from ntkit.features._ntk_sketch import relu_polynomials

F64 = torch.float64


def _net(depth, W_std, b_std):
    return L.serial(*[L.Dense(1, W_std=W_std, b_std=b_std), L.ReLU()] * depth,
                    L.Dense(1, W_std=W_std, b_std=b_std))


def _poly(a, c):
    return sum(float(v) * c**j for j, v in enumerate(a))


def _limit(x, *, depth, W_std, b_std, degree):
    """``[(q_{l+1}, Theta_{l+1})]`` per hidden layer of the recursion with kappa_1, kappa_0
    replaced by the pinned polynomials, written from the module docstring of
    ntkit.features._ntk_sketch (not from its code): q_1 = W^2 x.x'/d + b^2, s_l^2 the exact
    variances (s_{l+1}^2 = W^2 s_l^2 / 2 + b^2), c_l = q_l / (s_l s_l'), q_{l+1} = W^2 s s'
    P_1(c_l) + b^2, Theta_{l+1} = q_{l+1} + W^2 P_0(c_l) Theta_l."""
    a1, a0, _, _ = relu_polynomials(degree)
    q = W_std**2 * x @ x.T / x.shape[1] + b_std**2
    s = q.diagonal().sqrt()
    theta, out = q, []
    for _ in range(depth):
        ss = torch.outer(s, s)
        c = q / ss
        q = W_std**2 * ss * _poly(a1, c) + b_std**2
        theta = q + W_std**2 * _poly(a0, c) * theta
        s = (W_std**2 * s * s / 2 + b_std**2).sqrt()
        out.append((q, theta))
    return out


def _pairs() -> torch.Tensor:
    """Five inputs: x = x' (rows 0, 1), a nearly parallel pair (0, 2), a generic and an obtuse
    one."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 6, dtype=F64, generator=g)
    return torch.stack([a, a, a + 1e-3 * b, b, -a + 0.3 * b])


def test_relu_polynomials_are_nonnegative_pinned_and_close():
    # P_1, P_0 have nonnegative coefficients (the sketch needs sqrt(a_j)), equal kappa(1) = 1/2
    # exactly (to round-off, 1e-13), and are within the reported error of ntkit's ReLU
    # expectations at cosines other than those the error was measured on; kappa_0's error (a
    # square-root singularity at c = 1) falls with the degree.
    c = torch.rand(3000, dtype=F64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    one = torch.ones_like(c)
    k1, k0 = L.ReLU().expectations(c, one, one, ntk=True)
    errs = []
    for degree in (4, 8, 16):
        a1, a0, e1, e0 = relu_polynomials(degree)
        assert (a1 >= 0).all() and (a0 >= 0).all()
        assert abs(a1.sum() - 0.5) < 1e-13 and abs(a0.sum() - 0.5) < 1e-13
        assert float((_poly(a1, c) - k1).abs().max()) <= 0.5 * e1 * 1.01
        assert float((_poly(a0, c) - k0).abs().max()) <= 0.5 * e0 * 1.01
        errs.append(e0)
    assert errs[0] > errs[1] > errs[2], errs


def test_limit_is_close_to_the_ntk_and_exact_on_the_diagonal():
    # The kernel the sketch converges to: its diagonal is the NTK's (the polynomials are pinned
    # at c = 1; 1e-12 relative, round-off of a few layers), and off the diagonal it is within
    # poly_error_ sqrt(Theta(x, x) Theta(y, y)) of the NTK on inputs whose mean squares are in
    # {1/4, 1, 4} (where poly_error_ is measured, on a grid of 2001 cosines: 1% slack for
    # cosines between grid points). poly_error_ falls with the degree.
    g = torch.Generator().manual_seed(2)
    d = 5
    u = torch.randn(12, d, dtype=F64, generator=g)
    u[1] = u[0] + 1e-3 * u[1]  # a nearly parallel pair (of different norms)
    ms = torch.tensor([0.25, 1.0, 4.0], dtype=F64).repeat(4)
    x = u / u.norm(dim=1, keepdim=True) * (ms * d).sqrt()[:, None]
    for depth, w, b in ((2, 1.3, 0.3), (3, 0.9, 0.6)):
        ntk = _net(depth, w, b).kernel(x).ntk
        errs = []
        for degree in (4, 8, 16):
            limit = _limit(x, depth=depth, W_std=w, b_std=b, degree=degree)[-1][1]
            torch.testing.assert_close(limit.diagonal(), ntk.diagonal(), rtol=1e-12, atol=0)
            err = NTKSketch(64, depth=depth, W_std=w, b_std=b, degree=degree).fit(x).poly_error_
            scale = torch.outer(ntk.diagonal(), ntk.diagonal()).sqrt()
            assert bool(((limit - ntk).abs() <= 1.01 * err * scale).all())
            errs.append(err)
        assert errs[0] > errs[1] > errs[2], errs
    assert errs[-1] < 0.04  # depth 3, degree 16: 0.033 measured


def test_one_layer_given_the_previous_is_exactly_unbiased():
    # Layer 1 reads x~ itself, so its phi, psi are exactly unbiased for q_2 and Theta_2 of the
    # limit recursion: mean over 400 independent maps on every pair of _pairs() (x = x', nearly
    # parallel, obtuse), within 4 standard errors (plus 1e-12 relative for entries the map
    # gets exactly). Both the default tree width and a narrow one (sketch_dim=3).
    x = _pairs()
    q2, t2 = _limit(x, depth=1, W_std=1.2, b_std=0.3, degree=6)[0]
    for sketch_dim in (None, 3):
        gen = torch.Generator().manual_seed(3)
        grams = []
        for _ in range(400):
            phi = NTKSketch(16, depth=2, W_std=1.2, b_std=0.3, degree=6, sketch_dim=sketch_dim,
                            random_state=gen).fit(x)
            f, p = next(phi._steps(x))
            grams.append(torch.stack([f @ f.T, p @ p.T]))
        grams = torch.stack(grams)
        mean, se = grams.mean(0), grams.std(0) / math.sqrt(len(grams))
        for k, target in enumerate((q2, t2)):
            gap = (mean[k] - target).abs()
            assert bool((gap <= 4 * se[k] + 1e-12 * target.abs()).all()), (k, gap / se[k])


def test_composed_bias_shrinks_like_one_over_m():
    # Depth 2. Given layer 1's features (phi, psi), layer 2 is unbiased, so E[k_hat] = E[f]
    # with f = W^2 s s' P_1(c_hat) + b^2 + W^2 P_0(c_hat) (psi . psi'), c_hat the cosine of
    # phi, phi' and s the exact standard deviations; the bias E[f] - Theta_P is second order
    # in the error of layer 1's Grams, hence O(1/m). E[f] is estimated with those Grams minus
    # their exact means (test above) as control variates, which leaves a standard error of
    # order 1/m, so m * bias is compared across m at a few per cent.
    x = _pairs()[[0, 3]]
    w, b, degree = 1.2, 0.3, 6
    a1, a0, _, _ = relu_polynomials(degree)
    steps = _limit(x, depth=2, W_std=w, b_std=b, degree=degree)
    (q2, t2), (_, t3) = steps
    s2 = q2.diagonal().sqrt()  # exact, since P_1(1) = kappa_1(1)
    ms, draws = (16, 64, 256, 1024), 1000
    scaled_bias, scaled_se = [], []
    for m in ms:
        gen = torch.Generator().manual_seed(m)
        f, controls = [], []
        for _ in range(draws):
            phi, psi = next(NTKSketch(m, depth=2, W_std=w, b_std=b, degree=degree,
                                      random_state=gen).fit(x)._steps(x))
            g, h = phi @ phi.T, psi @ psi.T
            c = g[0, 1] / (g[0, 0] * g[1, 1]).sqrt()
            f.append(w * w * s2[0] * s2[1] * _poly(a1, c) + b * b + w * w * _poly(a0, c) * h[0, 1])
            controls.append(torch.stack([g[0, 0], g[1, 1], g[0, 1], h[0, 0], h[1, 1], h[0, 1]])
                            - torch.stack([q2[0, 0], q2[1, 1], q2[0, 1],
                                           t2[0, 0], t2[1, 1], t2[0, 1]]))
        f = torch.stack(f)
        design = torch.cat([torch.ones(draws, 1, dtype=F64), torch.stack(controls)], 1)
        coef = torch.linalg.lstsq(design, f[:, None]).solution[:, 0]
        se = (f - design @ coef).std() / math.sqrt(draws)
        scaled_bias.append(m * float(coef[0] - t3[0, 1]))
        scaled_se.append(m * float(se))
    # The bias is real (more than 4 standard errors at every m) ...
    assert all(abs(v) > 4 * s for v, s in zip(scaled_bias, scaled_se, strict=True)), scaled_bias
    # ... m * bias is the same at m = 256 and 1024 within 4 combined standard errors (measured
    # 0.294, 0.273 +- 0.015 for an entry of 1.04), which a bias of order m^-1/2 (m * bias
    # doubling from 256 to 1024) would fail; and the expansion bias = A/m + B/m^2 fits all four
    # m (weighted least squares: every residual within 4 standard errors), with the next order
    # visible at small m (measured m * bias 0.84, 0.35 at m = 16, 64).
    gap = abs(scaled_bias[2] - scaled_bias[3])
    assert gap <= 4 * math.hypot(scaled_se[2], scaled_se[3]), (scaled_bias, scaled_se)
    mb, se_mb = np.array(scaled_bias), np.array(scaled_se)
    design = np.stack([np.ones(len(ms)), 1.0 / np.array(ms)], 1)
    fit = np.linalg.lstsq(design / se_mb[:, None], mb / se_mb, rcond=None)[0]
    assert bool((np.abs(design @ fit - mb) <= 4 * se_mb).all()), (fit, scaled_bias, scaled_se)
    # The map itself has this bias: its plain Monte Carlo mean at m = 16 agrees with it.
    gen = torch.Generator().manual_seed(7)
    k = torch.stack([(lambda z: z[0] @ z[1])(NTKSketch(16, depth=2, W_std=w, b_std=b,
                                                       degree=degree, random_state=gen)
                                             .fit(x)(x)) for _ in range(1500)])
    se = float(k.std()) / math.sqrt(len(k))
    assert abs(float(k.mean() - t3[0, 1]) - scaled_bias[0] / 16) <= 4 * math.hypot(
        se, scaled_se[0] / 16)


@pytest.mark.parametrize("depth", [2, 3])
def test_relative_frobenius_error_decays_like_inverse_sqrt_m(depth):
    # 500 inputs, m = 64 ... 2048, against the limit (the error against the NTK levels off at
    # poly_error_): RMS over 4 draws per m, fitted log-log slope -1/2 within 0.1 (as for the
    # other feature maps in test_features_random.py). The O(1/m) bias is below the noise.
    x = torch.randn(500, 8, dtype=F64, generator=torch.Generator().manual_seed(3))
    k = _limit(x, depth=depth, W_std=1.4, b_std=0.1, degree=8)[-1][1]
    ms = [64, 128, 256, 512, 1024, 2048]
    errs = []
    for m in ms:
        sq = []
        for s in range(4):
            f = NTKSketch(m, depth=depth, W_std=1.4, b_std=0.1, random_state=10 * m + s).fit(x)(x)
            sq.append(float(torch.linalg.matrix_norm(f @ f.T - k) / torch.linalg.matrix_norm(k)))
        errs.append(math.sqrt(np.mean(np.square(sq))))
    slope = np.polyfit(np.log(ms), np.log(errs), 1)[0]
    assert -0.6 <= slope <= -0.4, (slope, errs)
