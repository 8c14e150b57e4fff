"""ntkit.apps.permutation: the closed-form ensemble of Giapitzakis et al. (2025) against trained
networks and Monte Carlo, and the direction of the ensemble-complexity growth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import log_ndtr

from _training import train_twins
from ntkit.apps import permutation as P
from ntkit.predict import max_learning_rate


def test_closed_form_matches_trained_networks():
    k, perm, twins = 4, torch.tensor([2, 0, 3, 1]), 64
    x, y = P.permutation_task(perm)
    x_test = P.binary_inputs(k, min_ones=2)
    closed = P.ensemble_outputs(perm, x_test)
    net = P.two_layer_net(k, width=512)
    lr = 0.5 * max_learning_rate(net.kernel(x, get="ntk").ntk, y.numel())
    fit, out = train_twins(net, x, y, x_test, seeds=range(twins), learning_rate=lr, steps=[200])
    assert float((fit[0] - y).abs().max()) < 1e-6  # trained to convergence (t = infinity)
    out = out[0]
    var = closed.covariance.diagonal()
    # 44 means, each within 4.5 standard errors (P(any beyond) ~ 3e-4 for a Gaussian) plus
    # the O(width^-1/2) finite-width shift, which is well inside that here.
    z = (out.mean(0) - closed.mean) / (var[:, None] / twins).sqrt()
    assert float(z.abs().max()) < 4.5
    # Variance per input pooled over the 4 units: 256 draws, relative SE ~ 0.09, so a ratio
    # in [0.6, 1.6] is > 4 standard errors wide on both sides.
    ratio = out.var(0).mean(1) / var
    assert float(ratio.min()) > 0.6 and float(ratio.max()) < 1.6


def test_mean_has_the_sign_pattern_of_the_permutation():
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    x = P.binary_inputs(6)
    g = P.ensemble_outputs(perm, x)
    target = x[:, perm.argsort()]  # output unit pi(i) carries input bit i
    assert torch.equal(P.round_outputs(g.mean)[x.sum(1) > 1],
                       target[x.sum(1) > 1])


def test_single_input_complexity_matches_gaussian_draws():
    k, delta = 5, 0.1
    c = P.ensemble_complexity(k, delta=delta)
    s, m = 2, int(c.per_weight[0])
    sd = math.sqrt(c.variance[0])

    def exact(models):
        return math.exp(s * log_ndtr(c.a[0] * math.sqrt(models) / sd)
                        + (k - s) * log_ndtr(-c.b[0] * math.sqrt(models) / sd))

    assert exact(m) >= 1 - delta > exact(m - 1)  # the smallest such M
    x = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]])
    g = P.ensemble_outputs(torch.arange(k), x)
    draws = P.sample_ensemble_means(g, m, 20000, generator=torch.Generator().manual_seed(0))
    hit = float((P.round_outputs(draws) == x).all(-1).double().mean())
    assert abs(hit - exact(m)) < 0.01  # binomial SE sqrt(.9 * .1 / 20000) = 0.002


def test_union_bound_is_tight_against_exact_monte_carlo():
    c = P.ensemble_complexity(5)
    mc = P.all_inputs_complexity_mc(5, draws=4000, generator=torch.Generator().manual_seed(1))
    # The union bound is an upper bound; the Monte Carlo quantile has a few percent of noise.
    assert 0.9 * c.all_inputs <= mc <= 1.03 * c.all_inputs


def test_models_needed_grow_with_k_and_closer_to_k_log_k_than_k2():
    ks = list(range(5, 15))
    rows = [P.ensemble_complexity(k) for k in ks]
    one = np.array([r.one for r in rows])
    every = np.array([r.all_inputs for r in rows])
    assert (np.diff(one) > 0).all() and (np.diff(every) > 0).all() and (every >= one).all()
    # The paper: k log k for one input (agrees), k^2 for all inputs (an upper bound: ours,
    # exact up to the union bound, also grows like k log k: the hardest inputs have two ones
    # and there are only C(k, 2) of them).
    for curve in (one, every):
        fit = P.fit_growth(ks, curve)
        assert fit["rms_klogk"] < fit["rms_k2"] and fit["exponent"] < 1.5


def test_bad_inputs():
    with pytest.raises(ValueError, match="k must be >= 2"):
        P.ensemble_complexity(1)
    with pytest.raises(TypeError, match="k must be an integer"):
        P.binary_inputs(3.0)
    with pytest.raises(ValueError, match="k must be <= 20"):
        P.binary_inputs(21)
    for delta in (0.0, 1.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
            P.ensemble_complexity(5, delta=delta)
    with pytest.raises(ValueError, match="delta must be finite"):
        P.ensemble_complexity(5, delta=float("nan"))
    with pytest.raises(ValueError, match="exactly once"):
        P.permutation_task([0, 0, 1])
    with pytest.raises(ValueError, match="k must be >= 2"):
        P.permutation_task([0])
    with pytest.raises(TypeError, match="integer"):
        P.permutation_task(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="nonzero binary"):
        P.ensemble_outputs([1, 0], torch.tensor([[0.0, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="nonzero binary"):
        P.ensemble_outputs([1, 0], torch.tensor([[0.5, 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(m, 2\)"):
        P.ensemble_outputs([1, 0], torch.ones(1, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="models must be a positive"):
        P.sample_ensemble_means(P.ensemble_outputs([1, 0], P.binary_inputs(2)), 0, 3)
    with pytest.raises(ValueError, match="equal length >= 3"):
        P.fit_growth([5, 6], [1, 2])
    with pytest.raises(ValueError, match="models > 0"):
        P.fit_growth([5, 6, 7], [1, 0, 2])
