"""Shortcut bias of trained networks and of the NTK predictor (Hermann, Mobahi, Fel & Mozer,
"On the Foundations of Shortcut Learning", ICLR 2024) on :func:`ntkit.datasets.shortcut`.

Reliance (their section 2): probe a classifier on a Cartesian grid of latents, ``z_c`` and
``z_s`` each on ``[-3 mu_i, 3 mu_i]`` and independent, with predictions ``yhat = +-1``:
``R = (|sum yhat sign(z_s)| - |sum yhat sign(z_c)|) / N`` (``+1``: uses only the shortcut,
``-1``: only the core). The shortcut bias is ``R_model - R_optimal``, with the Bayes-optimal
(LDA) rule of the generating distribution as the reference.

- :func:`reliance`, :func:`shortcut_bias`.
- :func:`availability_sweep`: bias of the NTK predictor, a linear model and trained MLPs over
  a grid of the shortcut's availability, over seeds (the reproduction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .. import layers as L
from .._checks import positive_int
from .._shortcut import ShortcutData, shortcut
from ..predict import gradient_descent_mse_ensemble

__all__ = ["SweepResult", "availability_sweep", "probe_grid", "reliance", "shortcut_bias"]


def probe_grid(data: ShortcutData, *, points: int = 20) -> Tensor:
    """``(points^2, 2)`` latents on the Cartesian grid ``[-3 mu_c, 3 mu_c] x [-3 mu_s, 3 mu_s]``
    (a feature with ``mu_i < 1/3``, nearly useless, gets ``[-1, 1]``); ``points`` is even so
    that no probe has a zero coordinate."""
    points = positive_int(points, "points")
    if points % 2:
        raise ValueError(f"points must be even (no probe on a zero coordinate); got {points}")
    half = torch.clamp(3 * data.means.abs(), min=1.0)
    axes = [torch.linspace(-h, h, points, dtype=data.means.dtype) for h in half]
    zc, zs = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([zc.flatten(), zs.flatten()], 1)


def reliance(predictions: Tensor, z_probe: Tensor) -> float:
    """Reliance on the shortcut relative to the core, in ``[-1, 1]``.

    **Arguments:** ``predictions``: ``(N,)`` real scores (their sign is the decision);
    ``z_probe``: ``(N, 2)`` latents ``(z_c, z_s)`` of the probes.

    **Returns:** ``(|sum yhat sign(z_s)| - |sum yhat sign(z_c)|) / N``.

    Example:
        >>> z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
        >>> reliance(z[:, 1], z), reliance(z[:, 0], z)
        (1.0, -1.0)
    """
    if predictions.ndim != 1 or z_probe.shape != (len(predictions), 2):
        raise ValueError(f"predictions must be (N,) and z_probe (N, 2); got "
                         f"{tuple(predictions.shape)} and {tuple(z_probe.shape)}")
    yhat = torch.sign(predictions)
    on_short = (yhat * torch.sign(z_probe[:, 1])).sum().abs()
    on_core = (yhat * torch.sign(z_probe[:, 0])).sum().abs()
    return float((on_short - on_core) / len(yhat))


def shortcut_bias(predict, data: ShortcutData, *, points: int = 20) -> float:
    """``R(model) - R(Bayes-optimal rule)`` on :func:`probe_grid`.

    **Arguments:** ``predict``: maps inputs ``(N, dim)`` to scores ``(N,)``; ``data``.

    **Returns:** the shortcut bias (``> 0``: more reliance on the shortcut than optimal).
    """
    z = probe_grid(data, points=points)
    scores = torch.as_tensor(predict(data.embed(z))).reshape(-1)
    return reliance(scores, z) - reliance(z @ data.bayes_direction(), z)


def _relu_net(width: int, b_std: float):
    return L.serial(L.Dense(width, b_std=b_std), L.ReLU(), L.Dense(1, b_std=b_std))


def _mlp_scores(data: ShortcutData, x_probe: Tensor, *, width: int, steps: int, seed: int,
                lr: float, b_std: float) -> Tensor:
    """A finite twin of :func:`_relu_net` (NTK parametrization) trained by full-batch
    gradient descent on the squared error for ``steps`` steps (early stopping)."""
    net = _relu_net(width, b_std)
    model = net.module((data.x.shape[1],), dtype=data.x.dtype,
                       generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    y = data.y[:, None]
    for _ in range(steps):
        opt.zero_grad()
        ((model(data.x) - y) ** 2).mean().backward()
        opt.step()
    with torch.no_grad():
        return model(x_probe).reshape(-1)


@dataclass(frozen=True)
class SweepResult:
    """Shortcut bias ``(len(ratios), seeds)`` per model over the shortcut availabilities
    ``ratios`` (``alpha_s / alpha_c``): ``bias = {"ntk": ..., "linear": ..., "mlp": ...}``."""

    ratios: np.ndarray
    bias: dict[str, np.ndarray]


def availability_sweep(ratios, *, n: int = 400, seeds: int = 5,
                       predictivity=(0.9, 0.7), dim: int = 100, b_std: float = 1.0,
                       diag_reg: float = 1.0, mlp_width: int = 512, mlp_steps: int = 300,
                       mlp_lr: float = 0.5, points: int = 20) -> SweepResult:
    """Shortcut bias of three learners as the shortcut becomes more available.

    For each ratio ``alpha_s / alpha_c`` (core amplitude 1) and seed: draw ``n`` examples of
    :func:`ntkit.datasets.shortcut` (the shortcut less predictive than the core by default),
    then measure :func:`shortcut_bias` of (1) the NTK predictor: kernel ridge regression of the
    ``+-1`` labels with the NTK of ``Dense - ReLU - Dense`` (biases ``b_std``), the mean of
    :func:`ntkit.predict.gradient_descent_mse_ensemble` at ``t=None`` with ``diag_reg``
    (relative to the mean diagonal; the classes overlap, and without a ridge the predictor
    interpolates label noise); (2) the same for a linear network ``Dense(1)``, the paper's
    control; (3) a finite twin of (1) of width ``mlp_width`` trained by full-batch gradient
    descent for ``mlp_steps`` steps (``0`` skips it).

    **Returns:** a :class:`SweepResult`.
    """
    ratios = np.asarray(ratios, dtype=float)
    if ratios.ndim != 1 or len(ratios) == 0 or not (ratios > 0).all():
        raise ValueError(f"ratios must be a non-empty 1-D sequence of positive numbers; got "
                         f"{ratios!r}")
    seeds = positive_int(seeds, "seeds")
    nets = {"ntk": _relu_net(512, b_std), "linear": L.serial(L.Dense(1, b_std=b_std))}
    names = [*nets, "mlp"] if mlp_steps > 0 else list(nets)
    bias = {name: np.zeros((len(ratios), seeds)) for name in names}
    for i, ratio in enumerate(ratios):
        for s in range(seeds):
            data = shortcut(n, predictivity=predictivity, availability=(1.0, float(ratio)),
                            dim=dim, seed=s)
            for name, net in nets.items():
                predict = gradient_descent_mse_ensemble(net, data.x, data.y[:, None],
                                                        diag_reg=diag_reg)
                bias[name][i, s] = shortcut_bias(
                    lambda x, p=predict: p(None, x, get="ntk"), data, points=points)
            if mlp_steps > 0:
                bias["mlp"][i, s] = shortcut_bias(
                    lambda x, d=data, s=s: _mlp_scores(d, x, width=mlp_width, steps=mlp_steps,
                                                       seed=1000 + s, lr=mlp_lr,
                                                       b_std=b_std),
                    data, points=points)
    return SweepResult(ratios=ratios, bias=bias)
