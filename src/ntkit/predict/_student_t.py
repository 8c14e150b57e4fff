"""Scale mixtures of NNGPs (Lee, Yun, Yang & Lee, "Scale Mixtures of Neural Network Gaussian
Processes", ICLR 2022): a prior on the variance ``sigma^2`` of the last layer turns the NNGP
into a scale mixture of Gaussian processes; the inverse-gamma prior gives a Student-t process.

Model (the paper's, with its noise convention): given ``sigma^2``, the outputs are a GP with
kernel ``sigma^2 K`` and the training targets carry noise ``sigma^2 * reg`` (``reg`` the
absolute ridge), independently per output column; one ``sigma^2`` is shared by every output,
as the last layer's weights share it. With ``q = tr(Y^T (K + reg I)^{-1} Y)`` over ``n``
training rows and ``c`` output columns, the likelihood of ``sigma^2`` is
``sigma^{-n c} exp(-q / (2 sigma^2))``, so an inverse-gamma ``IG(a, b)`` prior has the posterior
``IG(a + n c / 2, b + q / 2)`` and the posterior predictive is a multivariate t with
``2a + n c`` degrees of freedom, the GP posterior mean, and scale matrix
``(2b + q) / (2a + n c)`` times the GP posterior covariance (the paper's closed form; its
code sums ``q`` and counts ``n c`` over the output columns the same way). Any other prior is
integrated numerically (:func:`scale_mixture`), as the paper does with importance sampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._checks import positive_int, real_number
from ..kernel import Kernel
from ..solve import cholesky
from ._gp import gp_inference
from ._inputs import as_tensor, regularizer

__all__ = ["ScaleMixture", "StudentT", "scale_mixture", "student_t"]


def _residuals(y_test, mean: Tensor, name: str = "y_test") -> Tensor:
    """``y_test - mean`` as ``(m, c)``, after checking the shape."""
    y = as_tensor(y_test, name, mean.dtype).to(mean.device)
    if y.shape != mean.shape:
        raise ValueError(f"{name} must have the shape of the mean {tuple(mean.shape)}; got "
                         f"{tuple(y.shape)}")
    r = y - mean
    return r[:, None] if r.ndim == 1 else r


def _factor(cov: Tensor) -> Tensor:
    """Lower Cholesky factor of a posterior covariance (jitter for a test input that repeats a
    training input, whose posterior variance is 0)."""
    import warnings

    from ..solve import JitterWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JitterWarning)
        return cholesky(cov, name="the posterior covariance")[0]


def _gaussian_quadratic(cov: Tensor, r: Tensor) -> tuple[float, float]:
    """``(logdet cov, tr(r^T cov^{-1} r))`` for ``r`` ``(m, c)``."""
    chol = _factor(cov)
    z = torch.linalg.solve_triangular(chol, r, upper=False)
    return 2 * float(chol.diagonal().log().sum()), float((z * z).sum())


def _generator(generator: torch.Generator | None) -> torch.Generator:
    if generator is None:
        return torch.Generator().manual_seed(0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
    return generator


def _gaussians(num: int, mean: Tensor, cov: Tensor, sigma2: Tensor,
               generator: torch.Generator) -> Tensor:
    """``num`` draws of ``N(mean, sigma2_i * cov)`` (independent output columns), shape
    ``(num, *mean.shape)``."""
    chol = _factor(cov)
    m = mean.shape[0]
    cols = 1 if mean.ndim == 1 else mean.shape[1]
    z = torch.randn(num, m, cols, generator=generator, dtype=mean.dtype).to(mean.device)
    draws = (chol @ z) * sigma2.to(mean.device).sqrt()[:, None, None]
    return mean + (draws[..., 0] if mean.ndim == 1 else draws)


@dataclass(frozen=True)
class StudentT:
    """Multivariate Student-t over the test outputs: ``df`` degrees of freedom, ``mean``
    ``(m,)`` / ``(m, c)``, ``scale`` ``(m, m)`` shared by the ``c`` output columns.

    The columns share one scale variable (the last layer's ``sigma^2``), so they are
    uncorrelated but not independent: the joint law of all ``m c`` outputs is one multivariate
    t with scale ``I_c ⊗ scale``. ``variance`` is ``df / (df - 2)`` times the scale's diagonal.
    """

    df: float
    mean: Tensor
    scale: Tensor

    @property
    def variance(self) -> Tensor:
        """``(m,)`` marginal variances (``inf`` for ``df <= 2``)."""
        factor = self.df / (self.df - 2) if self.df > 2 else math.inf
        return self.scale.diagonal() * factor

    def log_prob(self, y_test) -> Tensor:
        """Joint log-density (a scalar) of ``y_test`` (the shape of ``mean``)."""
        r = _residuals(y_test, self.mean)
        p = r.numel()
        logdet, quad = _gaussian_quadratic(self.scale, r)
        nu = self.df
        out = (math.lgamma((nu + p) / 2) - math.lgamma(nu / 2) - p / 2 * math.log(nu * math.pi)
               - r.shape[1] / 2 * logdet - (nu + p) / 2 * math.log1p(quad / nu))
        return torch.tensor(out, dtype=self.mean.dtype, device=self.mean.device)

    def marginal_log_prob(self, y_test) -> Tensor:
        """Log-density of each entry of ``y_test`` under its univariate marginal (a Student-t
        with ``df`` degrees of freedom, location ``mean``, squared scale ``scale_ii``), in
        ``mean``'s shape: the per-point predictive log-likelihood."""
        r = _residuals(y_test, self.mean)
        s2 = self.scale.diagonal()[:, None]
        nu = self.df
        out = (math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
               - 0.5 * s2.log() - (nu + 1) / 2 * torch.log1p(r * r / (nu * s2)))
        return out.reshape(self.mean.shape)

    def sample(self, num: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``(num, *mean.shape)`` draws: ``w ~ Gamma(df/2, rate df/2)``, then the Gaussian with
        covariance ``scale / w`` (the scale-mixture construction)."""
        num = positive_int(num, "num")
        g = _generator(generator)
        seed = int(torch.randint(2**62, (), generator=g))
        w = np.random.default_rng(seed).gamma(self.df / 2, 2 / self.df, size=num)
        sigma2 = torch.as_tensor(1 / w, dtype=self.mean.dtype)
        return _gaussians(num, self.mean, self.scale, sigma2, g)


@dataclass(frozen=True)
class ScaleMixture:
    """A finite scale mixture of Gaussians over the test outputs: component ``j`` is
    ``N(mean, scales[j] * covariance)`` per output column with weight ``exp(log_weights[j])``
    (normalised). ``mean`` ``(m,)`` / ``(m, c)``, ``covariance`` ``(m, m)`` (the GP posterior
    at ``sigma^2 = 1``), ``scales`` and ``log_weights`` ``(S,)``."""

    log_weights: Tensor
    scales: Tensor
    mean: Tensor
    covariance: Tensor

    @property
    def effective_sample_size(self) -> float:
        """``1 / sum w_j^2``: how many equally weighted draws the weights are worth."""
        return float(1 / torch.exp(2 * self.log_weights).sum())

    @property
    def posterior_mean_scale(self) -> float:
        """``E[sigma^2 | data]`` under the weights."""
        return float((self.log_weights.exp() * self.scales).sum())

    @property
    def variance(self) -> Tensor:
        """``(m,)`` marginal variances ``E[sigma^2 | data] * covariance_ii``."""
        return self.posterior_mean_scale * self.covariance.diagonal()

    def log_prob(self, y_test) -> Tensor:
        """Joint log-density (a scalar) of ``y_test`` (the shape of ``mean``)."""
        r = _residuals(y_test, self.mean)
        p = r.numel()
        logdet, quad = _gaussian_quadratic(self.covariance, r)
        s = self.scales
        comp = -0.5 * (p * torch.log(2 * math.pi * s) + r.shape[1] * logdet + quad / s)
        return torch.logsumexp(self.log_weights + comp, 0)

    def marginal_log_prob(self, y_test) -> Tensor:
        """Log-density of each entry of ``y_test`` under its univariate marginal (a mixture
        of centred normals), in ``mean``'s shape."""
        r = _residuals(y_test, self.mean)
        v = self.covariance.diagonal()[:, None, None] * self.scales  # (m, 1, S)
        comp = -0.5 * (torch.log(2 * math.pi * v) + r[..., None] ** 2 / v)
        return torch.logsumexp(self.log_weights + comp, -1).reshape(self.mean.shape)

    def sample(self, num: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``(num, *mean.shape)`` draws: a component by its weight, then its Gaussian."""
        num = positive_int(num, "num")
        g = _generator(generator)
        pick = torch.multinomial(self.log_weights.exp().cpu(), num, replacement=True,
                                 generator=g)
        return _gaussians(num, self.mean, self.covariance, self.scales.cpu()[pick], g)


@dataclass(frozen=True)
class _Posterior:
    mean: Tensor
    covariance: Tensor
    quadratic: float  # q = tr(Y^T (K + reg I)^+ Y)
    count: int  # n c: rank of the training kernel times the output columns


def _gp_posterior(k_train_train, y_train, k_test_train, k_test_test, diag_reg: float,
                  diag_reg_absolute_scale: bool, include_noise: bool) -> _Posterior:
    """The GP posterior at ``sigma^2 = 1`` (from :func:`gp_inference`) and the sufficient
    statistics of the likelihood of ``sigma^2``."""
    if isinstance(k_train_train, Kernel):
        k_train_train = k_train_train.nngp
    if k_test_test is None:
        raise ValueError("k_test_test is required: the predictive is a distribution, and its "
                         "scale matrix needs the (m, m) kernel of the test inputs")
    predictor = gp_inference(k_train_train, y_train, diag_reg=diag_reg,
                             diag_reg_absolute_scale=diag_reg_absolute_scale)
    mean, cov = predictor(k_test_train, k_test_test)
    solver = predictor.solver("nngp")
    y = as_tensor(y_train, "y_train", solver.k.dtype).to(solver.k.device)
    y2 = y[:, None] if y.ndim == 1 else y
    quadratic = float((y2 * solver.solve(y2)).sum())
    if include_noise:
        # New targets carry the training targets' noise, scaled by sigma^2 like them.
        cov = cov.clone()
        cov.diagonal().add_(regularizer(diag_reg, diag_reg_absolute_scale, solver.k))
    # A singular kernel (pseudo-inverse) constrains sigma^2 through its rank only.
    return _Posterior(mean, cov, quadratic, solver.rank * y2.shape[1])


def student_t(k_train_train, y_train, k_test_train, k_test_test, *, a: float, b: float,
              diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False,
              include_noise: bool = False) -> StudentT:
    """Posterior predictive of the NNGP whose last-layer variance has an ``IG(a, b)`` prior.

    The prior over functions is a Student-t process with ``2a`` degrees of freedom and kernel
    ``(b / a) K``; given ``n`` training rows and ``c`` output columns, the predictive is a
    multivariate t with ``df = 2a + n c``, the GP posterior mean (as
    :func:`~ntkit.predict.gp_inference`) and scale matrix
    ``(2b + tr(Y^T (K + reg I)^{-1} Y)) / (2a + n c)`` times the GP posterior covariance.
    ``reg`` is ``diag_reg`` times the mean diagonal of ``K`` unless
    ``diag_reg_absolute_scale``; it is the noise variance of the targets at ``sigma^2 = 1``
    (the noise is scaled by ``sigma^2`` too, which keeps the posterior closed-form).

    **Arguments:**

    - ``k_train_train``: ``(n, n)`` NNGP of the training inputs (a tensor, or a
      :class:`~ntkit.Kernel` whose ``nngp`` is used).
    - ``y_train``: ``(n,)`` or ``(n, c)`` targets.
    - ``k_test_train``: ``(m, n)``; ``k_test_test``: ``(m, m)`` NNGP of the test inputs.
    - ``a >= 0``, ``b > 0``: shape and scale of the inverse-gamma prior on ``sigma^2``.
    - ``include_noise``: add the noise ``reg`` to the predictive covariance (the law of new
      noisy targets rather than of the noise-free outputs).

    **Returns:** a :class:`StudentT` ``(df, mean (m,) / (m, c), scale (m, m))`` with
    ``log_prob``, ``marginal_log_prob`` and ``sample``. A kernel that is singular to working
    precision is solved on its range (as :class:`~ntkit.solve.PSDSolver`) and ``n`` is then
    its numerical rank.

    Example:
        >>> k = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
        >>> y = torch.tensor([1.0, -1.0], dtype=torch.float64)
        >>> t = student_t(k[:1, :1], y[:1], k[1:, :1], k[1:, 1:], a=2.0, b=1.0)
        >>> t.df, [round(v, 12) for v in t.mean.tolist()]  # 2a + n; GP mean 0.5 * 1
        (5.0, [0.5])
        >>> round(float(t.scale), 12)  # (2b + y^2 / 1) / 5 * (1 - 0.5^2)
        0.45
    """
    a = real_number(a, "a", minimum=0.0)
    b = real_number(b, "b")
    if b <= 0:
        raise ValueError(f"b must be > 0 (the inverse-gamma prior's scale); got {b}")
    post = _gp_posterior(k_train_train, y_train, k_test_train, k_test_test, diag_reg,
                         diag_reg_absolute_scale, include_noise)
    df = 2 * a + post.count
    return StudentT(df, post.mean, (2 * b + post.quadratic) / df * post.covariance)


def _log_likelihood(scales: Tensor, post: _Posterior) -> Tensor:
    """``log p(Y | sigma^2)`` up to a constant: ``-(n c / 2) log s - q / (2 s)``."""
    return -0.5 * post.count * torch.log(scales) - 0.5 * post.quadratic / scales


def scale_mixture(k_train_train, y_train, k_test_train, k_test_test, *, prior,
                  method: str = "auto", num_samples: int = 2000,
                  support: tuple[float, float] | None = None,
                  generator: torch.Generator | None = None, diag_reg: float = 0.0,
                  diag_reg_absolute_scale: bool = False,
                  include_noise: bool = False) -> ScaleMixture:
    """Posterior predictive of the NNGP with any prior on the last layer's variance ``sigma^2``.

    Given ``sigma^2`` the predictive is the GP posterior with covariance scaled by
    ``sigma^2``, so the predictive is the mixture over the posterior of ``sigma^2``, whose
    likelihood is ``sigma^{-n c} exp(-q / (2 sigma^2))`` (module docstring). Two ways to
    integrate it:

    - ``"importance"``: ``num_samples`` draws from the prior (a
      ``torch.distributions.Distribution``), weighted by the likelihood (self-normalised
      importance sampling with the prior as proposal, the paper's Section 3.3).
    - ``"quadrature"``: the trapezoid rule on ``num_samples`` nodes equally spaced in
      ``log sigma^2`` over ``support`` (default: the likelihood's mode ``q / (n c)`` times
      ``exp(+-40 sqrt(2 / (n c)))``, 40 standard deviations of ``log sigma^2`` under the
      likelihood); ``prior`` is a ``Distribution`` or a callable giving the log-density of
      ``sigma^2`` at a tensor of values. Give ``support`` for a prior that puts its mass far
      from the data's scale.

    ``"auto"``: importance sampling for a ``Distribution``, quadrature for a callable.

    **Arguments:** as :func:`student_t`, with ``prior`` in place of ``a, b``; ``generator``
    seeds the importance draws.

    **Returns:** a :class:`ScaleMixture` (``log_weights``, ``scales`` ``(S,)``, ``mean``,
    ``covariance`` ``(m, m)``) with ``log_prob``, ``marginal_log_prob``, ``sample``.

    Example:
        >>> k = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
        >>> y = torch.tensor([1.0, -1.0], dtype=torch.float64)
        >>> ig = torch.distributions.InverseGamma(torch.tensor(3.0, dtype=torch.float64),
        ...                                       torch.tensor(1.0, dtype=torch.float64))
        >>> mix = scale_mixture(k[:1, :1], y[:1], k[1:, :1], k[1:, 1:], prior=ig.log_prob,
        ...                     num_samples=4000)
        >>> t = student_t(k[:1, :1], y[:1], k[1:, :1], k[1:, 1:], a=3.0, b=1.0)
        >>> abs(float(mix.variance[0] - t.variance[0])) < 1e-6
        True
    """
    if method not in ("auto", "importance", "quadrature"):
        raise ValueError(f"method must be 'auto', 'importance' or 'quadrature'; got {method!r}")
    is_dist = isinstance(prior, torch.distributions.Distribution)
    if not is_dist and not callable(prior):
        raise TypeError(f"prior must be a torch.distributions.Distribution or a callable "
                        f"log-density of sigma^2; got {type(prior).__name__}")
    if method == "auto":
        method = "importance" if is_dist else "quadrature"
    if method == "importance" and not is_dist:
        raise TypeError("method='importance' draws from the prior: pass a "
                        "torch.distributions.Distribution (or use method='quadrature')")
    num = positive_int(num_samples, "num_samples")
    post = _gp_posterior(k_train_train, y_train, k_test_train, k_test_test, diag_reg,
                         diag_reg_absolute_scale, include_noise)
    dtype, device = post.mean.dtype, post.mean.device
    if method == "importance":
        seed = int(torch.randint(2**62, (), generator=_generator(generator)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            scales = prior.sample((num,)).to(dtype=dtype, device=device).reshape(-1)
        if scales.numel() != num or not bool((scales > 0).all()):
            raise ValueError("prior must be a distribution over sigma^2 > 0 with scalar draws")
        log_w = _log_likelihood(scales, post)
    else:
        if num < 2:
            raise ValueError(f"num_samples must be >= 2 quadrature nodes; got {num}")
        if support is None:
            mode = math.log(max(post.quadratic, 1e-300) / post.count)
            half = 40 * math.sqrt(2 / post.count)
            lo, hi = math.exp(mode - half), math.exp(mode + half)
        else:
            if len(support) != 2:
                raise ValueError(f"support must be a pair (low, high); got {support!r}")
            lo = real_number(support[0], "support[0]")
            hi = real_number(support[1], "support[1]")
            if not 0 < lo < hi:
                raise ValueError(f"support must satisfy 0 < low < high; got {support!r}")
        u = torch.linspace(math.log(lo), math.log(hi), num, dtype=dtype, device=device)
        scales = u.exp()
        log_prior = torch.as_tensor(prior(scales), dtype=dtype, device=device)
        if log_prior.shape != scales.shape:
            raise ValueError(f"prior must return one log-density per value of sigma^2 (shape "
                             f"{tuple(scales.shape)}); got shape {tuple(log_prior.shape)}")
        trapezoid = torch.ones_like(u)
        trapezoid[[0, -1]] = 0.5
        # d sigma^2 = sigma^2 d(log sigma^2): the Jacobian of the log-spaced nodes.
        log_w = log_prior + u + trapezoid.log() + _log_likelihood(scales, post)
    if not bool(torch.isfinite(log_w).any()):
        raise ValueError("every weight of the scale posterior is zero or NaN: the prior puts "
                         "no mass where the data's likelihood is (check prior and support)")
    log_w = torch.nan_to_num(log_w, nan=-math.inf)
    return ScaleMixture(log_w - torch.logsumexp(log_w, 0), scales, post.mean, post.covariance)
