"""Deep-limit classifiers in practice (Radhakrishnan, Belkin & Uhler, PNAS 2023): the NTK /
NNGP classifier of an ``ntkit.layers`` network of growing depth against the classifier
:func:`ntkit.theory.deep_limit_class` predicts, and the Bayes error on a sphere task."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import layers as L
from .._checks import positive_int, real_number
from ..solve import PSDSolver
from ..theory import deep_limit_class, deep_limit_kernel
from ..theory._gauss import as_activation, pair_means

__all__ = ["SphereTask", "sphere_task", "unit_variance_spec", "deep_kernel",
           "deep_classifier", "limit_predictions", "agreement_curve", "bayes_curve"]


@dataclass(frozen=True)
class SphereTask:
    """``x`` ``(n, dim + 1)`` on the positive orthant of the sphere of radius
    ``sqrt(dim + 1)`` (so that ntkit's input kernel ``x . x' / (dim + 1)`` is the cosine,
    and every cosine is ``>= 0`` as for the paper's Dirichlet data), labels ``y`` ``(n,)`` in
    ``{-1, 1}``: ``sign(x_0 - x_1)`` flipped with probability ``noise``, which is therefore
    the Bayes error."""

    x: Tensor
    y: Tensor
    noise: float


def sphere_task(n: int, *, dim: int, noise: float, generator: torch.Generator,
                imbalance: float = 0.0) -> SphereTask:
    """``n`` uniform points on the positive orthant of the ``dim``-sphere; ``imbalance``
    shifts the class boundary to ``x_0 - x_1 = imbalance`` (one class is then the majority).

    An odd activation's deep kernel is odd in the cosine, so with cosines below 0 an
    antipodal training point would act as a near neighbour with the opposite label; the
    paper's data (normalised Dirichlet samples) and this task avoid that."""
    n, dim = positive_int(n, "n"), positive_int(dim, "dim")
    noise = real_number(noise, "noise", minimum=0.0)
    if noise > 0.5:
        raise ValueError(f"noise must be in [0, 0.5]; got {noise}")
    x = torch.randn(n, dim + 1, generator=generator, dtype=torch.float64).abs()
    x = x / x.norm(dim=1, keepdim=True)
    y = torch.where(x[:, 0] - x[:, 1] > imbalance, 1.0, -1.0).double()
    flip = torch.rand(n, generator=generator, dtype=torch.float64) < noise
    y = torch.where(flip, -y, y)
    return SphereTask(x * math.sqrt(dim + 1), y, noise)


def unit_variance_spec(activation, depth: int) -> L.Serial:
    """The paper's network as an ``ntkit.layers`` spec: ``depth`` pairs of ``Dense`` (no
    bias; ``W_std = 1`` first, then ``sqrt(C_W)`` with ``C_W = 1 / E[phi^2]``) and
    ``activation``, then a ``Dense(1)`` readout."""
    act = as_activation(activation)
    w_std = math.sqrt(deep_limit_class(act).C_W)
    layers = [L.Dense(1, W_std=1.0), act]
    for _ in range(positive_int(depth, "depth") - 1):
        layers += [L.Dense(1, W_std=w_std), act]
    return L.serial(*layers, L.Dense(1, W_std=w_std))


def deep_kernel(activation, cosine: Tensor, depth: int, *, kernel: str = "ntk") -> Tensor:
    """The kernel of :func:`unit_variance_spec` on inputs with cosines ``cosine`` (any
    shape), computed on the correlations with the variance held at exactly 1.

    The spec's own kernel is the same in exact arithmetic (checked in the tests), but there
    the variance 1 is a fixed point of slope ``chi_parallel = psi'(1)``, unstable when
    ``psi'(1) > 1``: a rounding error of the input norm grows like ``psi'(1)^depth`` and
    overflows after a few dozen layers. Here the dual ``psi(xi) = C_W E[phi(u) phi(v)]``
    comes from the layer's ``expectations`` at unit variances, as in the paper.

    **Returns:** float64 tensor of ``cosine``'s shape: the NNGP or the NTK.
    """
    if kernel not in ("ntk", "nngp"):
        raise ValueError(f"kernel must be 'ntk' or 'nngp'; got {kernel!r}")
    act = as_activation(activation)
    c_w = deep_limit_class(act).C_W
    xi = torch.as_tensor(cosine, dtype=torch.float64).clamp(-1.0, 1.0)
    theta = xi.clone()  # the first Dense: NTK = NNGP = input cosine
    ntk = kernel == "ntk"
    for _ in range(positive_int(depth, "depth")):
        nngp, tdot = pair_means(act, 1.0, xi, ntk=ntk)
        xi = c_w * nngp
        if ntk:
            theta = xi + c_w * tdot * theta
    return theta if ntk else xi


def deep_classifier(activation, depth: int, x_train: Tensor, y_train: Tensor,
                    x_test: Tensor, *, kernel: str = "ntk") -> Tensor:
    """Signs ``(n_test,)`` of the kernel regression predictor ``K(x, X) K(X, X)^+ y`` of
    :func:`deep_kernel` (``ntkit.solve.PSDSolver``); inputs on the task's sphere.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> t = sphere_task(30, dim=2, noise=0.0, generator=g)
        >>> p = deep_classifier("relu", 3, t.x[:20], t.y[:20], t.x[20:])
        >>> p.shape, float((p == t.y[20:]).double().mean()) > 0.5
        (torch.Size([10]), True)
    """
    k_tt = deep_kernel(activation, _cosine(x_train, x_train), depth, kernel=kernel)
    k_st = deep_kernel(activation, _cosine(x_test, x_train), depth, kernel=kernel)
    # A ridge at round-off scale: the shallow kernels of polynomial activations have low rank
    # (xi / 2 + xi^3 / 2 on 3-d inputs: rank <= 13), and are PSD only to round-off.
    coef = PSDSolver(k_tt, diag_reg=1e-12 * float(k_tt.diagonal().mean())).solve(y_train[:, None])
    return torch.sign(k_st @ coef)[:, 0]


def _cosine(x1: Tensor, x2: Tensor) -> Tensor:
    cos = (x1 / x1.norm(dim=1, keepdim=True)) @ (x2 / x2.norm(dim=1, keepdim=True)).T
    if x1 is x2:
        cos.diagonal().fill_(1.0)
    return cos.clamp(-1.0, 1.0)


def limit_predictions(kind: str, x_train: Tensor, y_train: Tensor, x_test: Tensor, *,
                      activation=None) -> Tensor:
    """Signs ``(n_test,)`` of the classifier ``kind``: ``"majority_vote"``,
    ``"nearest_neighbor"`` or ``"singular_kernel"`` (``sign sum_i y_i h(x . x_i)`` with
    ``h`` = :func:`ntkit.theory.deep_limit_kernel` of ``activation``)."""
    if kind == "majority_vote":
        return torch.full((len(x_test),), float(torch.sign(y_train.sum())), dtype=y_train.dtype)
    cosine = _cosine(x_test, x_train)
    if kind == "nearest_neighbor":
        return y_train[cosine.argmax(dim=1)]
    if kind == "singular_kernel":
        return torch.sign(deep_limit_kernel(activation, cosine) @ y_train)
    raise ValueError(f"kind must be 'majority_vote', 'nearest_neighbor' or 'singular_kernel'; "
                     f"got {kind!r}")


def agreement_curve(activation, depths, task: SphereTask, n_train: int, *,
                    kernel: str = "ntk") -> tuple[str, list[float]]:
    """Fraction of test points (``task`` minus its first ``n_train``) where the depth-``L``
    classifier agrees with the predicted deep limit, for each ``L`` in ``depths``.

    **Returns:** ``(classifier name, agreements)``."""
    limit = deep_limit_class(activation)
    xt, yt, xs = task.x[:n_train], task.y[:n_train], task.x[n_train:]
    target = limit_predictions(limit.classifier, xt, yt, xs, activation=activation)
    out = [float((deep_classifier(activation, d, xt, yt, xs, kernel=kernel) == target)
                 .double().mean()) for d in depths]
    return limit.classifier, out


def bayes_curve(activation, ns, *, depth: int, dim: int, noise: float, n_test: int,
                seeds: int, kernel: str = "nngp") -> dict[str, list[float]]:
    """Mean test error over ``seeds`` tasks, for each training size in ``ns``: the deep
    classifier of ``activation`` (``"deep"``), 1-NN (``"1nn"``) and majority vote
    (``"majority"``); the Bayes error is ``noise``."""
    errs = {"deep": [], "1nn": [], "majority": []}
    for n in ns:
        e = {k: 0.0 for k in errs}
        for seed in range(seeds):
            g = torch.Generator().manual_seed(1000 * seed + n)
            task = sphere_task(n + n_test, dim=dim, noise=noise, generator=g)
            xt, yt, xs, ys = task.x[:n], task.y[:n], task.x[n:], task.y[n:]
            preds = {"deep": deep_classifier(activation, depth, xt, yt, xs, kernel=kernel),
                     "1nn": limit_predictions("nearest_neighbor", xt, yt, xs),
                     "majority": limit_predictions("majority_vote", xt, yt, xs)}
            for k, p in preds.items():
                e[k] += float((p != ys).double().mean()) / seeds
        for k in errs:
            errs[k].append(e[k])
    return errs
