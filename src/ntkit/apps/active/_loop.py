"""The active-learning loop: train on the labeled set, score the test set, select, repeat."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..._checks import positive_int
from ._select import select

__all__ = ["LearningCurve", "loop", "plot_curves"]


@dataclass(frozen=True)
class LearningCurve:
    """One run of :func:`loop`: ``n_labeled[r]`` labels gave test ``rmse[r]`` after round
    ``r``; ``labeled`` holds the pool indices in the order they were labeled."""

    method: str
    n_labeled: tuple[int, ...]
    rmse: tuple[float, ...]
    labeled: tuple[int, ...]


def loop(model_factory: Callable, pool_x: Tensor, pool_y: Tensor, *, rounds: int, batch: int,
         method: str, test: tuple[Tensor, Tensor], initial: int | Sequence[int] | None = None,
         features: Callable | None = None, sigma2: float | None = None,
         generator: torch.Generator | None = None) -> LearningCurve:
    """Batch active learning for ``rounds`` rounds of ``batch`` labels each.

    Each round trains ``model = model_factory(x_labeled, y_labeled)``, records the RMSE of
    ``model(test_x)`` against ``test_y``, and labels the ``batch`` points that
    :func:`select` chooses with ``method`` on ``features(model, pool_x)``.

    **Arguments:** ``model_factory(x (m, ...), y (m, ...)) -> model``, a callable
    ``model(x) -> predictions`` shaped like ``y``; ``pool_x`` ``(P, ...)`` and ``pool_y``
    ``(P, ...)``, the labels revealed as points are chosen; ``test = (x, y)``.
    ``initial``: labeled indices to start from, or how many to draw at random (default
    ``batch``). ``features(model, x) -> (P, p)``: the selection kernel's features (e.g.
    last-layer activations or projected eNTK features); default: ``pool_x`` flattened.
    ``sigma2`` and ``generator`` go to :func:`select` (``generator`` also draws ``initial``).

    **Returns:** a :class:`LearningCurve` with ``rounds + 1`` points.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(200, 3, generator=g, dtype=torch.float64)
        >>> y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
        >>> def fit(a, b):
        ...     w = torch.linalg.lstsq(a, b).solution
        ...     return lambda z: z @ w
        >>> c = loop(fit, x[:150], y[:150], rounds=2, batch=3, method="coding_rate",
        ...          test=(x[150:], y[150:]), initial=[0], generator=g)
        >>> c.n_labeled, c.rmse[-1] < 1e-10
        ((1, 4, 7), True)
    """
    rounds = positive_int(rounds, "rounds")
    batch = positive_int(batch, "batch")
    if pool_x.shape[0] != pool_y.shape[0]:
        raise ValueError(f"pool_y must have one label per pool point: pool_x has "
                         f"{pool_x.shape[0]} rows, pool_y {pool_y.shape[0]}")
    test_x, test_y = test
    if test_x.shape[0] != test_y.shape[0]:
        raise ValueError(f"test labels must match test inputs: {test_x.shape[0]} inputs, "
                         f"{test_y.shape[0]} labels")
    p = pool_x.shape[0]
    if initial is None:
        initial = batch
    if isinstance(initial, int):
        if not 0 < initial <= p:
            raise ValueError(f"initial must be in [1, {p}]; got {initial}")
        labeled = torch.randperm(p, generator=generator)[:initial].tolist()
    else:
        labeled = [int(i) for i in initial]
    if len(labeled) + rounds * batch > p:
        raise ValueError(f"{len(labeled)} initial labels plus rounds * batch = {rounds * batch} "
                         f"exceed the pool of {p}")
    n_labeled, rmse = [], []
    for r in range(rounds + 1):
        model = model_factory(pool_x[labeled], pool_y[labeled])
        err = model(test_x).reshape(test_y.shape) - test_y
        n_labeled.append(len(labeled))
        rmse.append(float(err.double().pow(2).mean().sqrt()))
        if r == rounds:
            break
        feats = pool_x.reshape(p, -1) if features is None else features(model, pool_x)
        with torch.no_grad():
            new = select(feats.detach(), batch, method=method, labeled=labeled, sigma2=sigma2,
                         generator=generator, gram=False)
        labeled += new.tolist()
    return LearningCurve(method=method, n_labeled=tuple(n_labeled), rmse=tuple(rmse),
                         labeled=tuple(labeled))


def plot_curves(curves: Mapping[str, Sequence[LearningCurve]], *, ax=None, title: str = ""):
    """Mean test RMSE against labels, with a band of one standard error over runs.

    **Arguments:** ``curves``: for each legend label, the runs (seeds) of one method, all
    with the same ``n_labeled``; ``ax``: a matplotlib axis to draw on (default: a new figure).

    **Returns:** the matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    for label, runs in curves.items():
        rmse = torch.tensor([c.rmse for c in runs], dtype=torch.float64)
        mean = rmse.mean(0)
        se = rmse.std(0) / math.sqrt(len(runs)) if len(runs) > 1 else torch.zeros_like(mean)
        xs = list(runs[0].n_labeled)
        ax.plot(xs, mean.tolist(), label=label, marker="o", ms=3)
        ax.fill_between(xs, (mean - se).tolist(), (mean + se).tolist(), alpha=0.2)
    ax.set_xlabel("labeled points")
    ax.set_ylabel("test RMSE")
    ax.set_title(title)
    ax.legend()
    return ax.figure
