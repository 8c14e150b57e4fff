"""Reproduction: task structure and nonlinearity shape the learned representation (Alleman,
Lindsey & Fusi, "Task structure and nonlinearity jointly determine learned representational
geometry", ICLR 2024).

Their claim: one-hidden-layer networks trained on the same task learn different geometries
depending on the activation. Tanh hidden layers come to mirror the structure of the *targets*;
ReLU hidden layers keep more of the structure of the *inputs*. They measure both by the kernel
alignment of the hidden layer's Gram matrix with the target kernel ``Y Y^T`` and with the input
kernel ``X X^T``.

Our task is of their structured kind: ``D`` binary latent factors ``z in {-1, +1}^D`` (every
one of the ``2^D`` combinations, ``repeats`` noisy samples of each) embedded in ``N`` input
dimensions by a random linear map plus isotropic noise; the targets are the first ``K < D``
factors, so the inputs carry ``D - K`` factors the task ignores. The alignments are linear CKA
(:func:`ntkit.analysis.cka`, the centred alignment of the linear kernels) of the hidden
activations with ``Y`` and with ``X``, recorded during training.

The effect needs feature learning: the readout starts small (``readout_std``), so the hidden
layer has to move to fit the targets. With a readout of standard size (``readout_std=1``) the
network fits through the readout nearly lazily and the hidden geometry hardly changes; a wider
hidden layer is lazier too (under Adam each readout weight moves by about the learning rate per
step, so the readout's share of the fit grows with the width).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import positive_int, real_number
from ..analysis import cka

__all__ = ["ACTIVATIONS", "GeometryRecord", "latent_factor_task", "task_geometry"]

#: The activations the reproduction compares, by name.
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}

MEASURES = ("target_alignment", "input_alignment", "train_loss")


@dataclass(frozen=True)
class GeometryRecord:
    """Per-seed alignments of the hidden representation during training.

    - ``activations``: the activation names, in the order given.
    - ``seeds``: the seeds; seed ``s`` draws the same task and the same initial weights for
      every activation (paired comparisons).
    - ``steps``: ``(T,)`` the training steps at which the measures were taken (0 = at init).
    - ``target_alignment``, ``input_alignment``, ``train_loss``: each a dict from activation
      name to a ``(S, T)`` array: linear CKA of the hidden activations with the targets ``Y``
      and with the inputs ``X``, and the mean squared training error.
    """

    activations: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: tuple[int, ...]
    target_alignment: dict[str, np.ndarray]
    input_alignment: dict[str, np.ndarray]
    train_loss: dict[str, np.ndarray]

    def interval(self, measure: str, activation: str, *,
                 level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean over seeds and its Student-t confidence interval at every recorded step.

        **Arguments:** ``measure`` (``"target_alignment"``, ``"input_alignment"`` or
        ``"train_loss"``); ``activation`` (a name in ``activations``); ``level`` in ``(0, 1)``.

        **Returns:** ``(mean, low, high)``, each ``(T,)``.
        """
        return _t_interval(self._values(measure, activation), level)

    def difference(self, measure: str, first: str, second: str, *,
                   level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The paired difference ``first - second`` over seeds (same task, same initial
        weights), its mean and Student-t confidence interval at every recorded step.

        **Arguments:** ``measure``; ``first``, ``second`` activation names; ``level``.

        **Returns:** ``(mean, low, high)``, each ``(T,)``.
        """
        return _t_interval(self._values(measure, first) - self._values(measure, second), level)

    def _values(self, measure: str, activation: str) -> np.ndarray:
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}; got {measure!r}")
        if activation not in self.activations:
            raise ValueError(f"activation must be one of {self.activations}; got "
                             f"{activation!r}")
        return getattr(self, measure)[activation]


def latent_factor_task(n_latent: int, n_relevant: int, input_dim: int, *, repeats: int = 1,
                       noise: float = 0.0, generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs generated from binary latent factors, targets depending on a subset of them.

    Every one of the ``2^D`` sign patterns ``z in {-1, +1}^D`` appears ``repeats`` times;
    ``x = M z / sqrt(D) + noise * eps`` with ``M`` ``(N, D)`` and ``eps`` ``(N,)`` standard
    normal, so that each latent factor contributes the same input variance and each input
    coordinate has variance ``1 + noise^2``; the targets are the first ``K`` factors.

    **Arguments:** ``n_latent`` ``D >= 2``; ``n_relevant`` ``K`` in ``[1, D)``; ``input_dim``
    ``N``; ``repeats``; ``noise >= 0``; ``generator`` (draws ``M`` and the noise); ``dtype``.

    **Returns:** ``(x, y, z)``: ``(P, N)``, ``(P, K)`` and ``(P, D)`` with
    ``P = repeats * 2^D``.

    Example:
        >>> x, y, z = latent_factor_task(3, 1, 10, repeats=2,
        ...                              generator=torch.Generator().manual_seed(0))
        >>> tuple(x.shape), tuple(y.shape), bool((y == z[:, :1]).all())
        ((16, 10), (16, 1), True)
    """
    d = positive_int(n_latent, "n_latent")
    k = positive_int(n_relevant, "n_relevant")
    n = positive_int(input_dim, "input_dim")
    repeats = positive_int(repeats, "repeats")
    noise = real_number(noise, "noise", minimum=0.0)
    if d < 2:
        raise ValueError(f"n_latent must be >= 2 (some factors relevant, some not); got {d}")
    if k >= d:
        raise ValueError(f"n_relevant must be < n_latent = {d}; got {k}")
    if d > 16:
        raise ValueError(f"n_latent must be <= 16 (the task holds all 2^n_latent patterns); "
                         f"got {d}")
    bits = torch.arange(2**d)[:, None] >> torch.arange(d) & 1
    z = (2 * bits - 1).to(dtype).repeat(repeats, 1)
    m = torch.randn(n, d, generator=generator, dtype=dtype)
    eps = torch.randn(z.shape[0], n, generator=generator, dtype=dtype)
    x = z @ m.T / math.sqrt(d) + noise * eps
    return x, z[:, :k].clone(), z


def task_geometry(*, activations: Iterable[str] = ("tanh", "relu"),
                  seeds: Iterable[int] = range(5), n_latent: int = 5, n_relevant: int = 2,
                  input_dim: int = 64, width: int = 64, repeats: int = 4,
                  noise: float = 0.2, steps: int = 1000, n_checkpoints: int = 12,
                  learning_rate: float = 2e-3, readout_std: float = 1e-3,
                  dtype: torch.dtype = torch.float64) -> GeometryRecord:
    """Train one-hidden-layer networks on :func:`latent_factor_task` and record how the hidden
    representation aligns with the targets and with the inputs.

    For every seed and activation: ``f(x) = W2 phi(W1 x + b1)`` with ``W1`` ``N(0, 1/N)``
    (about unit pre-activations), ``b1 = 0`` and ``W2`` ``N(0, readout_std^2 / width)``,
    trained full-batch by Adam on the mean squared error. A seed fixes the task draw and the
    initial weights, shared by all activations, so the activations are compared in pairs.

    **Arguments:**

    - ``activations``: names from :data:`ACTIVATIONS` (non-empty, distinct).
    - ``seeds``: non-empty distinct ints ``>= 0``.
    - ``n_latent``, ``n_relevant``, ``input_dim``, ``repeats``, ``noise``: the task
      (:func:`latent_factor_task`).
    - ``width``: hidden units; ``steps``: Adam steps; ``n_checkpoints``: about this many
      measurement steps, log-spaced, always with 0 and ``steps``.
    - ``learning_rate`` ``> 0``; ``readout_std`` ``> 0`` (small: feature learning; about 1:
      nearly lazy); ``dtype``: float32 or float64.

    **Returns:** a :class:`GeometryRecord` with ``(S, T)`` arrays per activation.

    Example:
        >>> r = task_geometry(seeds=(0,), n_latent=3, n_relevant=1, input_dim=8, width=16,
        ...                   repeats=2, steps=20, n_checkpoints=3)
        >>> r.steps, r.target_alignment["tanh"].shape
        ((0, 1, 20), (1, 3))
    """
    names = _activations(activations)
    seed_list = _seeds(seeds)
    width = positive_int(width, "width")
    steps = positive_int(steps, "steps")
    n_checkpoints = positive_int(n_checkpoints, "n_checkpoints")
    learning_rate = real_number(learning_rate, "learning_rate")
    readout_std = real_number(readout_std, "readout_std")
    for value, name in ((learning_rate, "learning_rate"), (readout_std, "readout_std")):
        if value <= 0:
            raise ValueError(f"{name} must be > 0; got {value}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64; got {dtype}")
    checkpoints = _checkpoints(steps, n_checkpoints)

    records = {m: {a: np.empty((len(seed_list), len(checkpoints))) for a in names}
               for m in MEASURES}
    for i, seed in enumerate(seed_list):
        g = torch.Generator().manual_seed(seed)
        x, y, _ = latent_factor_task(n_latent, n_relevant, input_dim, repeats=repeats,
                                     noise=noise, generator=g, dtype=dtype)
        w1 = torch.randn(width, x.shape[1], generator=g, dtype=dtype) / math.sqrt(x.shape[1])
        w2 = torch.randn(y.shape[1], width, generator=g, dtype=dtype) * readout_std
        w2 /= math.sqrt(width)
        for a in names:
            trace = _train(ACTIVATIONS[a](), x, y, w1, w2, learning_rate, checkpoints)
            for m in MEASURES:
                records[m][a][i] = trace[m]
    return GeometryRecord(activations=names, seeds=seed_list, steps=checkpoints, **records)


# --------------------------------------------------------------------------------------------
# Helpers.

def _train(phi: nn.Module, x: Tensor, y: Tensor, w1: Tensor, w2: Tensor, learning_rate: float,
           checkpoints: tuple[int, ...]) -> dict[str, list[float]]:
    """Adam on ``|W2 phi(W1 x + b1) - y|^2`` from the given weights (copied); the measures at
    each checkpoint."""
    hidden = nn.Sequential(nn.Linear(x.shape[1], w1.shape[0], dtype=x.dtype), phi)
    readout = nn.Linear(w1.shape[0], y.shape[1], bias=False, dtype=x.dtype)
    with torch.no_grad():
        hidden[0].weight.copy_(w1)
        hidden[0].bias.zero_()
        readout.weight.copy_(w2)
    optimiser = torch.optim.Adam([*hidden.parameters(), *readout.parameters()],
                                 lr=learning_rate)
    trace: dict[str, list[float]] = {m: [] for m in MEASURES}
    for step in range(checkpoints[-1] + 1):
        h = hidden(x)
        loss = ((readout(h) - y) ** 2).mean()
        if step in checkpoints:
            features = h.detach()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training diverged at step {step}: lower "
                                         f"learning_rate (got {learning_rate})")
            trace["target_alignment"].append(cka(features, y))
            trace["input_alignment"].append(cka(features, x))
            trace["train_loss"].append(float(loss.detach()))
        if step == checkpoints[-1]:
            break
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return trace


def _checkpoints(steps: int, n: int) -> tuple[int, ...]:
    """0, ``steps`` and about ``n - 2`` log-spaced steps between them, distinct, ascending."""
    inner = np.geomspace(1, steps, max(n - 1, 1)).round().astype(int).tolist()
    return tuple(sorted({0, steps, *inner}))


def _activations(activations) -> tuple[str, ...]:
    if isinstance(activations, str):
        activations = (activations,)
    names = tuple(activations)
    if not names:
        raise ValueError("activations must name at least one activation")
    for a in names:
        if a not in ACTIVATIONS:
            raise ValueError(f"activations must be names from {tuple(ACTIVATIONS)}; got {a!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"activations must be distinct; got {names}")
    return names


def _seeds(seeds) -> tuple[int, ...]:
    seed_list = tuple(seeds)
    if not seed_list:
        raise ValueError("seeds must hold at least one seed")
    for s in seed_list:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"seeds must be ints >= 0; got {s!r}")
    if len(set(seed_list)) != len(seed_list):
        raise ValueError(f"seeds must be distinct; got {seed_list}")
    return tuple(int(s) for s in seed_list)


def _t_interval(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 and its two-sided Student-t interval (zero width for one seed)."""
    from scipy import stats

    if not (isinstance(level, float) and 0 < level < 1):
        raise ValueError(f"level must be a float in (0, 1); got {level!r}")
    s = values.shape[0]
    mean = values.mean(0)
    if s < 2:
        return mean, mean.copy(), mean.copy()
    half = stats.t.ppf((1 + level) / 2, s - 1) * values.std(0, ddof=1) / math.sqrt(s)
    return mean, mean - half, mean + half
