"""Reproduction of Yang et al. (ICML 2023)'s UCI comparison of deep kernel machines with the
NNGP: the DKM (learned per-layer Grams) against the NNGP of the same network (the DKM's
``nu -> inf`` limit), test RMSE and log-likelihood over folds on offline sets: scikit-learn's
diabetes regression and sets of ``../shared/data/uci-dev`` (ordinal class labels as a
regression target; other multi-class sets as one-vs-rest regression on one-hot targets).
Used by ``examples/plot_dkm_vs_nngp.py`` and its test."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..dkm import DKM
from ..dkm._sgpr import output_layer
from ..predict import gp_inference

__all__ = ["DATASETS", "METHODS", "DKMComparison", "dkm_vs_nngp"]

METHODS = ("dkm", "nngp", "sparse_nngp")

# name -> target kind: "regression", "ordinal" (the class index as a number) or "one_vs_rest".
DATASETS = {"diabetes": "regression", "wine-quality-red": "ordinal", "abalone": "ordinal",
            "yeast": "one_vs_rest", "pima": "one_vs_rest",
            "vertebral-column-3clases": "one_vs_rest"}
NOISES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


@dataclass(frozen=True)
class DKMComparison:
    """Per data set, ``(folds,)`` arrays: ``rmse[method]`` (test RMSE over all output columns,
    of standardised numeric targets or centred one-hot targets) and ``ll[method]`` (mean test
    Gaussian log-likelihood per target entry) for ``method`` in :data:`METHODS`: the DKM, the
    exact NNGP, and the sparse NNGP (the DKM's ``nu -> inf`` limit on the same inducing
    points); ``noise`` the noise variance chosen per fold by the NNGP's marginal likelihood
    (shared by all three); ``nu`` the DKM's validation-chosen ``nu``."""

    names: tuple[str, ...]
    rmse: dict[str, dict[str, np.ndarray]]
    ll: dict[str, dict[str, np.ndarray]]
    noise: dict[str, np.ndarray]
    nu: dict[str, np.ndarray]


def _folds(name: str, data_dir: Path | None, n_max: int | None, n_folds: int):
    """``[(x_train, y_train, x_test, y_test)]`` float64 tensors, targets ``(n, k)``
    standardised with the training fold."""
    rng = np.random.default_rng(0)
    if name == "diabetes":
        from sklearn.datasets import load_diabetes

        x, y = load_diabetes(return_X_y=True)
        y = y[:, None]
        perm = rng.permutation(len(x))
        parts = np.array_split(perm, 4)
        folds = [(np.concatenate(parts[:i] + parts[i + 1:]), parts[i]) for i in range(4)]
    else:
        from ..datasets import load_uci

        ds = load_uci(Path(data_dir) / name)
        x, labels = ds.x, ds.y
        if DATASETS[name] == "ordinal":
            y = labels[:, None].astype(np.float64)
        else:
            y = np.eye(ds.n_classes)[labels]
            y = y[:, 1:] if ds.n_classes == 2 else y  # two classes: one column suffices
        folds = ds.folds
    out = []
    for train, test in folds[:n_folds]:
        train = rng.permutation(train)  # the DKM's validation split takes the last 20 %
        if n_max is not None and len(train) > n_max:
            train = rng.choice(train, n_max, replace=False)
        if n_max is not None and len(test) > n_max:
            test = rng.choice(test, n_max, replace=False)
        mu, sd = x[train].mean(0), x[train].std(0)
        sd[sd == 0] = 1.0
        ym = y[train].mean(0)
        # One-hot targets are only centred (a rare class would be blown up by its tiny
        # standard deviation); numeric targets are standardised.
        ys = np.ones_like(ym) if DATASETS[name] == "one_vs_rest" else y[train].std(0)
        out.append(tuple(torch.tensor(a) for a in ((x[train] - mu) / sd, (y[train] - ym) / ys,
                                                      (x[test] - mu) / sd, (y[test] - ym) / ys)))
    return out


def _gaussian_ll(mean, std, y) -> float:
    std = std[:, None] if mean.ndim == 2 else std
    return float((-0.5 * math.log(2 * math.pi) - std.log()
                  - 0.5 * ((y - mean) / std) ** 2).mean())


def _dkm(x, y, nu: float, steps: int, *, depth: int, n_inducing: int, noise: float) -> DKM:
    """The reproduction's DKM (ReLU, ``W_std = sqrt 2``, ``b_std = 0.1``) fitted on ``x, y``;
    ``steps = 0`` leaves the Grams at the prior: the sparse NNGP."""
    return DKM(depth, nu=nu, n_inducing=min(n_inducing, len(x)), W_std=2**0.5, b_std=0.1,
               noise=noise, max_steps=steps).fit(x, y)


def dkm_vs_nngp(names=tuple(DATASETS), *, data_dir=None, depth: int = 2,
                nus=(1.0, 10.0, 100.0), n_inducing: int = 100, max_steps: int = 60,
                n_max: int | None = None, n_folds: int = 4) -> DKMComparison:
    """DKM vs NNGP on each set of ``names`` over ``n_folds`` folds (the UCI sets' own 4 folds;
    diabetes: 4 random folds).

    The DKM (ReLU, ``W_std = sqrt 2``, ``b_std = 0.1``, ``depth`` learned Grams) is fitted on
    80 % of the training fold for each ``nu`` of ``nus``; the one with the lowest RMSE on the
    other 20 % is refitted on the whole training fold, as are the NNGPs.

    **Arguments:** ``data_dir`` the ``uci-dev`` folder (needed for the UCI names); ``depth``,
    ``nus``, ``n_inducing`` (capped at the training size), ``max_steps`` of the DKM;
    ``n_max`` caps training and test points per fold.

    **Returns:** a :class:`DKMComparison`.
    """
    rmse = {m: {} for m in METHODS}
    ll = {m: {} for m in METHODS}
    noises, chosen = {}, {}
    for name in names:
        rows = []
        for x, y, xt, yt in _folds(name, data_dir, n_max, n_folds):
            spec = DKM(depth, nu=1.0, n_inducing=1).nngp_spec()
            k = spec.kernel(x).nngp
            kd = k.diagonal()
            # The noise all three share: the NNGP's exact log marginal likelihood (the
            # collapsed bound with every training point inducing) over a grid.
            noise = max(NOISES, key=lambda s: float(output_layer(k, k, kd, y, s).log_likelihood))
            gp = gp_inference(k, y, diag_reg=noise, diag_reg_absolute_scale=True)
            mean, cov = gp(spec.kernel(xt, x).nngp, spec.kernel(xt).nngp)
            std = (cov.diagonal().clamp(min=0) + noise).sqrt()
            n_fit = int(0.8 * len(x))

            cfg = dict(depth=depth, n_inducing=n_inducing, noise=noise)
            fits = [_dkm(x[:n_fit], y[:n_fit], nu, max_steps, **cfg) for nu in nus]
            val = [float((f.predict(x[n_fit:]) - y[n_fit:]).square().mean()) for f in fits]
            best = int(np.argmin(val))
            row = [noise, nus[best]]
            for pred in (_dkm(x, y, nus[best], max_steps, **cfg).predict(xt, return_std=True),
                         (mean, std),
                         _dkm(x, y, 1.0, 0, **cfg).predict(xt, return_std=True)):
                row += [float((pred[0] - yt).square().mean().sqrt()), _gaussian_ll(*pred, yt)]
            rows.append(row)
        rows = np.array(rows)
        noises[name], chosen[name] = rows[:, 0], rows[:, 1]
        for j, m in enumerate(METHODS):
            rmse[m][name], ll[m][name] = rows[:, 2 + 2 * j], rows[:, 3 + 2 * j]
    return DKMComparison(tuple(names), rmse, ll, noises, chosen)
