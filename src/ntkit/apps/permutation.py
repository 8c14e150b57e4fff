"""Exact learning of permutations by ensembles of wide two-layer networks.

Giapitzakis, Back de Luca & Fountoulakis, "Exact Learning of Permutations for Nonzero Binary
Inputs with Logarithmic Training Size and Quadratic Ensemble Complexity" (2025): two-layer
networks in the NTK regime, trained by gradient descent on the ``k`` standard basis vectors
``e_i -> e_pi(i)`` only, converge to a Gaussian process whose mean has the sign pattern of the
permuted input on every nonzero binary input; averaging ``M`` independently trained networks
and rounding by sign recovers ``pi(x)`` exactly with probability ``1 - delta`` once ``M`` is
large enough. The paper bounds that ensemble complexity by ``O(k log k)`` for one test input
and ``O(k^2)`` for all ``2^k - 1`` inputs at once.

Instead of training thousands of networks we use the closed form: the outputs of one trained
infinitely wide network are Gaussian with the mean and covariance of
:func:`ntkit.predict.gradient_descent_mse_ensemble` (``t=None``, ``get="ntk"``), independent
across the ``k`` output units, and the average of ``M`` of them is Gaussian with the covariance
divided by ``M``. By the symmetry of the training set (``x_train = I``), the mean at an input
with ``s`` ones is ``a(s)`` on the ``s`` permuted positions and ``b(s)`` elsewhere, and the
variance ``v(s)`` is the same on every unit, so the probability that the sign-rounded average
is exact at one input is ``Phi(a sqrt(M / v))^s Phi(-b sqrt(M / v))^(k - s)``.

- :func:`permutation_task`: the training set of a permutation.
- :func:`binary_inputs`: all nonzero binary inputs (the test set).
- :func:`ensemble_outputs`: mean and covariance of one trained network's outputs.
- :func:`sample_ensemble_means`: exact Gaussian draws of the average of ``M`` networks.
- :func:`round_outputs`: the sign rounding.
- :func:`ensemble_complexity`: models needed for one input (exact) and for all inputs (union
  bound), per ``k``; :func:`all_inputs_complexity_mc`: the exact all-input number by Monte
  Carlo over the joint Gaussian, for small ``k``.
- :func:`fit_growth`: compare ``k log k`` and ``k^2`` growth of a complexity curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import gammaln, log_ndtr
from torch import Tensor

from .. import layers as L
from .._checks import positive_int, real_number
from ..predict import Gaussian, gradient_descent_mse_ensemble

__all__ = [
    "Complexity", "all_inputs_complexity_mc", "binary_inputs", "ensemble_complexity",
    "ensemble_outputs", "fit_growth", "permutation_task", "round_outputs",
    "sample_ensemble_means", "two_layer_net",
]

# 2^k - 1 inputs are enumerated explicitly only up to this k (2^20 rows of k floats).
_MAX_ENUMERATED_K = 20


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer >= 2; got {k!r}")
    if k < 2:
        raise ValueError(f"k must be >= 2 (a permutation of at least two positions); got {k}")
    return int(k)


def _check_delta(delta) -> float:
    delta = real_number(delta, "delta")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1) (a failure probability); got {delta}")
    return delta


def _check_permutation(permutation) -> Tensor:
    if isinstance(permutation, (list, tuple, np.ndarray)):
        permutation = torch.as_tensor(np.asarray(permutation))
    if not isinstance(permutation, Tensor) or permutation.dtype.is_floating_point \
            or permutation.dtype == torch.bool:
        raise TypeError(f"permutation must be a 1-D integer tensor, list or array; got "
                        f"{permutation!r}")
    if permutation.ndim != 1:
        raise ValueError(f"permutation must be 1-D; got shape {tuple(permutation.shape)}")
    k = _check_k(len(permutation))
    if not torch.equal(torch.sort(permutation.long()).values, torch.arange(k)):
        raise ValueError(f"permutation must hold each of 0..{k - 1} exactly once; got "
                         f"{permutation.tolist()}")
    return permutation.long()


def two_layer_net(k: int, *, width: int = 1024, W_std: float = 1.0, b_std: float = 0.0):
    """The paper's architecture as an ``ntkit.layers`` spec: ``Dense(width) - ReLU -
    Dense(k)`` in NTK parametrization (the kernel does not depend on ``width``; the finite
    twin ``net.module((k,))`` does).

    **Arguments:** ``k`` inputs and outputs; ``width`` hidden units; ``W_std``, ``b_std`` of
    both layers (``b_std=0``: no biases).

    **Returns:** an ``ntkit.layers`` network.

    Example:
        >>> net = two_layer_net(4)
        >>> net.kernel(torch.eye(4, dtype=torch.float64)).ntk.shape
        torch.Size([4, 4])
    """
    k = _check_k(k)
    width = positive_int(width, "width")
    W_std = real_number(W_std, "W_std", minimum=0.0)
    b_std = real_number(b_std, "b_std", minimum=0.0)
    return L.serial(L.Dense(width, W_std=W_std, b_std=b_std), L.ReLU(),
                    L.Dense(k, W_std=W_std, b_std=b_std))


def permutation_task(permutation, *, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """The training set of the paper: the standard basis vectors and their images.

    **Arguments:** ``permutation``: ``(k,)`` integers, each of ``0..k-1`` once; ``pi(i) =
    permutation[i]``.

    **Returns:** ``(x_train, y_train)``, both ``(k, k)``: ``x_train = I`` and
    ``y_train[i] = e_pi(i)``.

    Example:
        >>> x, y = permutation_task([2, 0, 1])
        >>> y.argmax(1).tolist()
        [2, 0, 1]
    """
    permutation = _check_permutation(permutation)
    k = len(permutation)
    eye = torch.eye(k, dtype=dtype)
    return eye, eye[permutation]


def binary_inputs(k: int, *, min_ones: int = 1, dtype: torch.dtype = torch.float64) -> Tensor:
    """All binary vectors of length ``k`` with at least ``min_ones`` ones.

    **Arguments:** ``k`` (``2 <= k <= 20``); ``min_ones`` (``1``: every nonzero input;
    ``2``: the inputs unseen in training).

    **Returns:** ``(m, k)`` with ``m = sum_{s >= min_ones} C(k, s)``, in binary counting order.

    Example:
        >>> binary_inputs(3).shape, binary_inputs(3, min_ones=2).shape
        (torch.Size([7, 3]), torch.Size([4, 3]))
    """
    k = _check_k(k)
    if k > _MAX_ENUMERATED_K:
        raise ValueError(f"k must be <= {_MAX_ENUMERATED_K} to enumerate all 2^k - 1 inputs; "
                         f"got {k} (use ensemble_complexity, which needs one input per weight)")
    min_ones = positive_int(min_ones, "min_ones")
    codes = torch.arange(1, 2 ** k)
    bits = ((codes[:, None] >> torch.arange(k - 1, -1, -1)) & 1).to(dtype)
    return bits[bits.sum(1) >= min_ones]


def _check_binary(x_test: Tensor, k: int) -> Tensor:
    if not isinstance(x_test, Tensor) or not x_test.is_floating_point():
        raise TypeError(f"x_test must be a floating-point tensor; got {x_test!r}")
    if x_test.ndim != 2 or x_test.shape[1] != k or x_test.shape[0] == 0:
        raise ValueError(f"x_test must have shape (m, {k}) with m >= 1; got "
                         f"{tuple(x_test.shape)}")
    if not bool(((x_test == 0) | (x_test == 1)).all()) or bool((x_test.sum(1) == 0).any()):
        raise ValueError("x_test must hold nonzero binary vectors (entries 0 or 1, at least "
                         "one 1 per row)")
    return x_test


def ensemble_outputs(permutation, x_test: Tensor, *, net=None) -> Gaussian:
    """Distribution of the outputs of one infinitely wide network trained to convergence on
    :func:`permutation_task` (the NTK-GP of Lee et al. 2019, ``t = infinity``).

    **Arguments:**

    - ``permutation``: ``(k,)``.
    - ``x_test``: ``(m, k)`` nonzero binary inputs.
    - ``net``: an ``ntkit.layers`` spec; default :func:`two_layer_net` ``(k)``.

    **Returns:** a :class:`~ntkit.predict.Gaussian` with ``mean (m, k)`` and ``covariance
    (m, m)``, the covariance of every output unit (units are independent).

    Example:
        >>> g = ensemble_outputs([1, 2, 0], binary_inputs(3, min_ones=2))
        >>> round_outputs(g.mean).tolist()  # pi(011) = 101: e_1 -> e_2, e_2 -> e_0
        [[1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    permutation = _check_permutation(permutation)
    k = len(permutation)
    x_test = _check_binary(x_test, k)
    x_train, y_train = permutation_task(permutation, dtype=x_test.dtype)
    predict = gradient_descent_mse_ensemble(net if net is not None else two_layer_net(k),
                                            x_train, y_train)
    mean, cov = predict(None, x_test, get="ntk", compute_cov=True)
    return Gaussian(mean, cov)


def sample_ensemble_means(outputs: Gaussian, models: int, draws: int, *,
                          generator: torch.Generator | None = None) -> Tensor:
    """Exact Gaussian draws of the average output of ``models`` independently trained networks.

    **Arguments:** ``outputs``: :func:`ensemble_outputs`'s ``mean (m, k)`` and ``covariance
    (m, m)``; ``models`` (``M``); ``draws``; ``generator`` for reproducibility.

    **Returns:** ``(draws, m, k)``: ``mean + C^{1/2} z / sqrt(M)`` with ``z`` standard normal,
    independent across the ``k`` units.

    Example:
        >>> g = ensemble_outputs([1, 0], binary_inputs(2))
        >>> sample_ensemble_means(g, 10, 5, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([5, 3, 2])
    """
    models = positive_int(models, "models")
    draws = positive_int(draws, "draws")
    mean, cov = outputs.mean, outputs.covariance
    if cov is None or mean.ndim != 2 or cov.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError("outputs must be a Gaussian with mean (m, k) and covariance (m, m)")
    # The covariance is PSD but exactly singular at training inputs (zero variance there):
    # an eigendecomposition square root tolerates that where a Cholesky factor would not.
    evals, evecs = torch.linalg.eigh(cov)
    root = evecs * evals.clamp_min(0).sqrt()
    z = torch.randn(draws, mean.shape[0], mean.shape[1], dtype=mean.dtype, generator=generator)
    return mean + (root @ z) / math.sqrt(models)


def round_outputs(outputs: Tensor) -> Tensor:
    """The sign rounding: ``1`` where an output is positive, else ``0`` (same shape)."""
    return (outputs > 0).to(outputs.dtype)


@dataclass(frozen=True)
class Complexity:
    """Ensemble complexity of one ``k`` (models needed for exact sign-rounded output with
    probability ``>= 1 - delta``).

    - ``k``, ``delta``.
    - ``weights``: ``(k - 1,)`` input weights ``s = 2..k`` (the number of ones).
    - ``a``, ``b``, ``variance``: ``(k - 1,)`` the single-network mean on the permuted
      positions, elsewhere (``nan`` at ``s = k``, which has none), and the variance per unit.
    - ``per_weight``: ``(k - 1,)`` models needed at one input of each weight (exact).
    - ``one``: the largest of them (the hardest single input).
    - ``all_inputs``: models needed for all ``2^k - 1 - k`` unseen inputs at once by the union
      bound over inputs (an upper bound on the exact number).
    """

    k: int
    delta: float
    weights: np.ndarray
    a: np.ndarray
    b: np.ndarray
    variance: np.ndarray
    per_weight: np.ndarray
    one: int
    all_inputs: int


def _log_success(c_a: np.ndarray, c_b: np.ndarray, weights: np.ndarray, k: int,
                 models: float) -> np.ndarray:
    """log P(exact at one input of each weight) for ``models`` networks; ``c = mean / sd``."""
    root = math.sqrt(models)
    on = weights * log_ndtr(c_a * root)
    off = np.where(weights < k, (k - weights) * log_ndtr(np.nan_to_num(c_b) * root), 0.0)
    return on + off


def _smallest(ok) -> int:
    """The smallest integer ``M >= 1`` with ``ok(M)``, for ``ok`` monotone in ``M``."""
    hi = 1
    while not ok(hi):
        hi *= 2
        if hi > 2 ** 60:
            raise ValueError("no ensemble size up to 2^60 reaches the requested probability: "
                             "the mean has the wrong sign at some input for this network")
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def ensemble_complexity(k: int, *, delta: float = 0.1, net=None) -> Complexity:
    """Models needed for the sign-rounded ensemble average to equal ``pi(x)``, with
    probability ``>= 1 - delta``, at the hardest single unseen input and at all of them.

    One representative input per weight ``s`` suffices (the distribution at an input of
    weight ``s`` is the same for every such input and every permutation, up to relabelling),
    so this runs for any ``k`` in milliseconds. The single-input number is exact; the
    all-input number is the union bound ``sum_s C(k, s) P(error at weight s) <= delta``
    (:func:`all_inputs_complexity_mc` gives the exact number for small ``k``).

    **Arguments:** ``k >= 2``; ``delta`` in ``(0, 1)``; ``net`` as in :func:`ensemble_outputs`.

    **Returns:** a :class:`Complexity`.

    Example:
        >>> c = ensemble_complexity(6)
        >>> c.one <= c.all_inputs, c.per_weight.shape
        (True, (5,))
    """
    k = _check_k(k)
    delta = _check_delta(delta)
    reps = torch.tril(torch.ones(k, k, dtype=torch.float64))[1:]  # row s-2: the first s ones
    g = ensemble_outputs(torch.arange(k), reps, net=net)
    weights = np.arange(2, k + 1)
    a = g.mean[:, 0].numpy()
    b = g.mean[:, -1].numpy().copy()
    b[-1] = np.nan
    variance = g.covariance.diagonal().numpy()
    if (variance <= 0).any():
        raise ValueError("the ensemble's variance vanishes at an unseen input; the rounded "
                         "average is then deterministic and no ensemble size applies")
    sd = np.sqrt(variance)
    c_a, c_b = a / sd, -b / sd
    target = math.log1p(-delta)
    per_weight = np.array([
        _smallest(lambda m, i=i: _log_success(c_a[i:i + 1], c_b[i:i + 1], weights[i:i + 1],
                                              k, m)[0] >= target)
        for i in range(len(weights))])
    log_count = gammaln(k + 1) - gammaln(weights + 1) - gammaln(k - weights + 1)

    def all_ok(m: int) -> bool:
        fail = -np.expm1(_log_success(c_a, c_b, weights, k, m))
        return float(np.exp(log_count + np.log(np.maximum(fail, 1e-300))).sum()) <= delta

    return Complexity(k=k, delta=delta, weights=weights, a=a, b=b, variance=variance,
                      per_weight=per_weight, one=int(per_weight.max()),
                      all_inputs=_smallest(all_ok))


def all_inputs_complexity_mc(k: int, *, delta: float = 0.1, draws: int = 2000, net=None,
                             generator: torch.Generator | None = None) -> int:
    """The exact number of models for all unseen inputs at once, by Monte Carlo over the
    joint Gaussian of every input's outputs (``2^k - 1 - k`` inputs: small ``k`` only).

    One draw ``f`` of a single network's outputs makes an ensemble of ``M`` exact iff
    ``sqrt(M) > max_{x, j} (-sign_j(x) (f - mean)_{x j} / |mean_{x j}|)``: the ensemble average
    is distributed as ``mean + (f - mean) / sqrt(M)``. The answer is the ``1 - delta``
    quantile of that critical ``M`` over draws.

    **Arguments:** ``k`` (``2 <= k <= 20``), ``delta``, ``draws``, ``net``, ``generator``.

    **Returns:** the number of models (an ``int``).
    """
    k = _check_k(k)
    delta = _check_delta(delta)
    draws = positive_int(draws, "draws")
    x = binary_inputs(k, min_ones=2)
    g = ensemble_outputs(torch.arange(k), x, net=net)
    noise = sample_ensemble_means(g, 1, draws, generator=generator) - g.mean  # (D, m, k)
    sign = torch.where(x > 0, 1.0, -1.0).to(noise.dtype)  # the rounded target: x itself
    if bool((g.mean * sign <= 0).any()):
        raise ValueError("the mean has the wrong sign at some input: no ensemble is exact")
    ratio = (-sign * noise / g.mean.abs()).clamp_min(0).amax(dim=(1, 2))
    critical = torch.floor(ratio ** 2) + 1
    return int(torch.quantile(critical, 1 - delta, interpolation="higher"))


def fit_growth(ks, models) -> dict[str, float]:
    """Which of ``M = c k log k`` and ``M = c k^2`` fits a complexity curve better.

    Each model has one free scale ``c``, fitted by least squares on ``log M``; the power law
    ``M = c k^p`` gives the local exponent ``p`` for reference (``k log k`` over
    ``k = 5..30`` has ``p`` about 1.4).

    **Arguments:** ``ks``, ``models``: equal-length sequences (at least 3) of positive numbers.

    **Returns:** ``{"exponent": p, "rms_klogk": ..., "rms_k2": ...}``, the root-mean-square
    residuals on ``log M``.

    Example:
        >>> ks = [5, 10, 20, 30]
        >>> fit = fit_growth(ks, [k * k for k in ks])
        >>> round(fit["exponent"], 6), fit["rms_k2"] < fit["rms_klogk"]
        (2.0, True)
    """
    k = np.asarray(ks, dtype=float)
    m = np.asarray(models, dtype=float)
    if k.ndim != 1 or k.shape != m.shape or len(k) < 3:
        raise ValueError(f"ks and models must be 1-D of equal length >= 3; got shapes "
                         f"{k.shape} and {m.shape}")
    if not (np.isfinite(k).all() and np.isfinite(m).all() and (k > 1).all() and (m > 0).all()):
        raise ValueError("ks must be > 1 and models > 0, all finite")
    logm = np.log(m)

    def rms(log_shape: np.ndarray) -> float:
        resid = logm - log_shape
        return float(np.sqrt(np.mean((resid - resid.mean()) ** 2)))

    exponent = float(np.polyfit(np.log(k), logm, 1)[0])
    return {"exponent": exponent, "rms_klogk": rms(np.log(k * np.log(k))),
            "rms_k2": rms(2 * np.log(k))}
