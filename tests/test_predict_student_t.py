"""``ntkit.predict.student_t`` / ``scale_mixture`` (Lee et al. 2022): the closed-form Student-t
predictive against Monte Carlo draws (scale, then GP) and SciPy's densities, the general-prior
route against the closed form, finite wide networks whose last-layer variance is drawn from
the prior, and the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.func import functional_call, stack_module_state, vmap

from ntkit import layers as L  # noqa: N812 - the documented alias
from ntkit.predict import gp_inference, scale_mixture, student_t

pytestmark = pytest.mark.usefixtures("single_thread")

NET = L.serial(L.Dense(512, W_std=1.5, b_std=0.2), L.ReLU(), L.Dense(1))
A, B = 1.5, 0.8


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(9, 3, generator=g, dtype=torch.float64)
    k = NET.kernel(x).nngp
    y = torch.randn(9, 2, generator=g, dtype=torch.float64)
    # 5 training, 4 test inputs; y_train (5, 2).
    return k[:5, :5], y[:5], k[5:, :5], k[5:, 5:], y[5:]


def test_closed_form_matches_scale_then_gp_draws(problem):
    k, y, kt, ktt, _ = problem
    t = student_t(k, y[:, 0], kt, ktt, a=A, b=B)
    gp = gp_inference(k, y[:, 0])(kt, ktt)
    q = float(y[:, 0] @ torch.linalg.solve(k, y[:, 0]))
    assert t.df == 2 * A + 5
    # Monte Carlo by the model's definition: sigma^2 from its posterior IG(a + n/2, b + q/2),
    # then the GP posterior scaled by sigma^2; the marginal at test point 0.
    rng = np.random.default_rng(0)
    sigma2 = (B + q / 2) / rng.gamma(A + 5 / 2, size=20000)
    draws = float(gp.mean[0]) + np.sqrt(sigma2 * float(gp.covariance[0, 0])) * \
        rng.standard_normal(20000)
    loc, scale = float(t.mean[0]), math.sqrt(float(t.scale[0, 0]))
    # The right law passes at the 1% level (a fixed seed: deterministic); the prior's degrees
    # of freedom 2a = 3, a classic mistake, are rejected: with 20000 draws the KS distance
    # between t_3 and t_8 after matching scales (about 0.02) is 3x the 1% critical value.
    assert stats.kstest(draws, stats.t(t.df, loc, scale).cdf).pvalue > 0.01
    assert stats.kstest(draws, stats.t(2 * A, loc, scale).cdf).pvalue < 0.01
    # The record's own sampler draws the same law.
    own = t.sample(20000, generator=torch.Generator().manual_seed(1))[:, 0].numpy()
    assert stats.kstest(own, stats.t(t.df, loc, scale).cdf).pvalue > 0.01


def test_densities_match_scipy_and_outputs_share_the_scale(problem):
    k, y, kt, ktt, y_test = problem
    t = student_t(k, y, kt, ktt, a=A, b=B)
    # Two output columns share sigma^2: df = 2a + n c and q sums over the columns.
    q = float((y * torch.linalg.solve(k, y)).sum())
    assert t.df == 2 * A + 10
    gp = gp_inference(k, y)(kt, ktt)
    torch.testing.assert_close(t.scale, (2 * B + q) / t.df * gp.covariance, rtol=1e-12,
                               atol=0)
    # Joint law of the 8 outputs: one multivariate t with scale I_2 ⊗ scale (column-major).
    big = torch.block_diag(t.scale, t.scale).numpy()
    ref = stats.multivariate_t(t.mean.T.reshape(-1).numpy(), big, df=t.df)
    assert float(t.log_prob(y_test)) == pytest.approx(ref.logpdf(y_test.T.reshape(-1)),
                                                       rel=1e-10)
    marg = stats.t.logpdf(y_test.numpy(), t.df, t.mean.numpy(),
                          np.sqrt(t.scale.diagonal().numpy())[:, None])
    np.testing.assert_allclose(t.marginal_log_prob(y_test).numpy(), marg, rtol=1e-10)
    torch.testing.assert_close(t.variance, t.scale.diagonal() * t.df / (t.df - 2))


def test_general_prior_equals_closed_form_for_inverse_gamma(problem):
    k, y, kt, ktt, y_test = problem
    t = student_t(k, y, kt, ktt, a=A, b=B, diag_reg=0.1, include_noise=True)
    ig = torch.distributions.InverseGamma(torch.tensor(A, dtype=torch.float64),
                                          torch.tensor(B, dtype=torch.float64))
    quad = scale_mixture(k, y, kt, ktt, prior=ig.log_prob, diag_reg=0.1, include_noise=True)
    # Quadrature of a smooth integrand over 40 standard deviations with 2000 nodes: the
    # trapezoid rule is spectrally accurate here, far below 1e-8.
    torch.testing.assert_close(quad.variance, t.variance, rtol=1e-8, atol=0)
    torch.testing.assert_close(quad.marginal_log_prob(y_test), t.marginal_log_prob(y_test),
                               rtol=0, atol=1e-8)
    assert float(quad.log_prob(y_test)) == pytest.approx(float(t.log_prob(y_test)), abs=1e-8)
    imp = scale_mixture(k, y, kt, ktt, prior=ig, num_samples=20000, diag_reg=0.1,
                        include_noise=True, generator=torch.Generator().manual_seed(2))
    # Self-normalised importance sampling: E[sigma^2 | data] to a few times its Monte Carlo
    # error, sqrt(Var / ESS) relative, with ESS > 1500 asserted (about 5% at most).
    ess = imp.effective_sample_size
    assert ess > 1500
    post_a, post_b = A + 5, B + float((y * torch.linalg.solve(
        k + 0.1 * k.diagonal().mean() * torch.eye(5, dtype=k.dtype), y)).sum()) / 2
    exact = post_b / (post_a - 1)
    rel_sd = 1 / math.sqrt(post_a - 2)  # sd / mean of IG(post_a, post_b)
    assert abs(imp.posterior_mean_scale / exact - 1) < 4 * rel_sd / math.sqrt(ess)
    assert abs(float(imp.log_prob(y_test) - t.log_prob(y_test))) < 0.05


def test_finite_wide_networks_with_prior_scale_match_the_posterior():
    """Finite twins of width 512 whose last-layer variance sigma^2 is drawn from IG(a, b),
    weighted by the likelihood of noisy targets (noise variance sigma^2 r, the model's), give
    the posterior predictive: importance sampling with the finite-width prior as proposal."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0.8, -0.5], dtype=torch.float64)
    k = NET.kernel(x).nngp
    a, b, r, nets = 3.0, 2.0, 0.3, 6000
    t = student_t(k[:2, :2], y, k[2:, :2], k[2:, 2:], a=a, b=b, diag_reg=r,
                  diag_reg_absolute_scale=True)
    models = [NET.module((3,), dtype=torch.float64, generator=torch.Generator().manual_seed(s))
              for s in range(nets)]
    params, buffers = stack_module_state(models)
    with torch.no_grad():
        f = vmap(lambda p, bu: functional_call(models[0], (p, bu), (x,)))(params, buffers)[..., 0]
    rng = np.random.default_rng(3)
    sigma2 = torch.as_tensor(b / rng.gamma(a, size=nets))  # IG(a, b)
    # Dense(1) has no bias here, so W_std^2 = sigma^2 scales the output by sigma exactly.
    f = f * sigma2.sqrt()[:, None]
    log_w = (-((f[:, :2] - y) ** 2).sum(1) / (2 * sigma2 * r) - torch.log(sigma2 * r))
    w = torch.softmax(log_w, 0)
    ess = float(1 / (w * w).sum())
    assert ess > 1000
    mean = float((w * f[:, 2]).sum())
    var = float((w * (f[:, 2] - mean) ** 2).sum())
    # Monte Carlo errors from the effective sample size: the mean's sd is sqrt(var / ESS);
    # the variance's relative sd is sqrt((kurtosis - 1) / ESS), kurtosis 3 + 6 / (df - 4) of a
    # t with df = 2a + 2 = 8. Finite width adds O(1/512) to the variance, far below either.
    # Four standard deviations: a false failure has probability < 1e-4.
    sd_mean = math.sqrt(var / ess)
    rel_sd_var = math.sqrt((3 + 6 / (t.df - 4) - 1) / ess)
    assert abs(mean - float(t.mean[0])) < 4 * sd_mean
    assert abs(var / float(t.variance[0]) - 1) < 4 * rel_sd_var


def test_errors(problem):
    k, y, kt, ktt, y_test = problem
    with pytest.raises(ValueError, match="a must be >= 0"):
        student_t(k, y, kt, ktt, a=-1.0, b=1.0)
    with pytest.raises(ValueError, match="b must be > 0"):
        student_t(k, y, kt, ktt, a=1.0, b=0.0)
    with pytest.raises(ValueError, match="a must be finite"):
        student_t(k, y, kt, ktt, a=float("nan"), b=1.0)
    with pytest.raises(ValueError, match="y_train contains NaN"):
        student_t(k, y * float("nan"), kt, ktt, a=1.0, b=1.0)
    with pytest.raises(ValueError, match="y_train must have shape"):
        student_t(k, y[:3], kt, ktt, a=1.0, b=1.0)
    with pytest.raises(ValueError, match="k_test_train must have shape"):
        student_t(k, y, kt[:, :2], ktt, a=1.0, b=1.0)
    with pytest.raises(ValueError, match="k_test_test must have shape"):
        student_t(k, y, kt, ktt[:2, :2], a=1.0, b=1.0)
    with pytest.raises(ValueError, match="k_test_test is required"):
        student_t(k, y, kt, None, a=1.0, b=1.0)
    t = student_t(k, y, kt, ktt, a=1.0, b=1.0)
    with pytest.raises(ValueError, match="y_test must have the shape of the mean"):
        t.log_prob(y_test[:, 0])
    with pytest.raises(ValueError, match="num must be a positive integer"):
        t.sample(0)
    with pytest.raises(TypeError, match="prior must be a torch.distributions.Distribution"):
        scale_mixture(k, y, kt, ktt, prior=3.0)
    with pytest.raises(TypeError, match="method='importance' draws from the prior"):
        scale_mixture(k, y, kt, ktt, prior=lambda s: -s, method="importance")
    with pytest.raises(ValueError, match="method must be"):
        scale_mixture(k, y, kt, ktt, prior=lambda s: -s, method="mcmc")
    with pytest.raises(ValueError, match="support must satisfy"):
        scale_mixture(k, y, kt, ktt, prior=lambda s: -s, support=(2.0, 1.0))
    with pytest.raises(ValueError, match="one log-density per value"):
        scale_mixture(k, y, kt, ktt, prior=lambda s: s.sum())
    with pytest.raises(ValueError, match="no mass where the data's likelihood is"):
        scale_mixture(k, y, kt, ktt, prior=lambda s: torch.full_like(s, -math.inf))
