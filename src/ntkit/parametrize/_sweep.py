"""Learning-rate sweeps across widths: under muP the best learning rate of a small model is the
best of a large one (Yang et al. 2022, "Tensor Programs V", Fig. 1); under SP it moves."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._coord import check_widths, parametrization_name, planned, prepare_runs, train

__all__ = ["LRSweep", "lr_sweep"]


@dataclass(frozen=True)
class LRSweep:
    """What :func:`lr_sweep` measured.

    - ``parametrization``: its name; ``widths``: ``(W,)`` ascending; ``lrs``: ``(L,)``
      ascending base-width learning rates.
    - ``loss``: ``(W, L, S)`` float64, the training loss on all of ``data`` after the last
      step, per width, learning rate and seed; ``inf`` where training diverged (a loss that
      was not finite).
    """

    parametrization: str
    widths: tuple[int, ...]
    lrs: tuple[float, ...]
    loss: Tensor

    @property
    def mean_loss(self) -> Tensor:
        """``(W, L)`` the final loss averaged over seeds (``inf`` if any seed diverged)."""
        return self.loss.mean(2)

    @property
    def optimal_lr(self) -> dict[int, float]:
        """Per width, the learning rate of the lowest seed-averaged final loss (the smaller
        learning rate on a tie); NaN for a width where every learning rate diverged."""
        out = {}
        for width, row in zip(self.widths, self.mean_loss, strict=True):
            finite = torch.isfinite(row)
            out[width] = (self.lrs[int(torch.where(finite, row, math.inf).argmin())]
                          if bool(finite.any()) else math.nan)
        return out

    def to_frame(self):
        """A long ``pandas.DataFrame`` with columns ``width, lr, seed, loss``."""
        import pandas as pd

        w, n_lr, s = self.loss.shape
        idx = torch.cartesian_prod(*(torch.arange(k) for k in (w, n_lr, s))).T
        return pd.DataFrame({"width": [self.widths[i] for i in idx[0].tolist()],
                             "lr": [self.lrs[i] for i in idx[1].tolist()],
                             "seed": idx[2].numpy(), "loss": self.loss.reshape(-1).numpy()})

    def plot(self, ax=None, *, title: str | None = None):
        """Final training loss (mean over seeds, band min to max) against learning rate, one
        line per width, log2 learning-rate axis; diverged points are left out.

        **Returns:** the ``matplotlib.figure.Figure``.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(5, 3.5))
        else:
            fig = ax.figure
        lrs = torch.tensor(self.lrs, dtype=torch.float64)
        colors = plt.cm.viridis(torch.linspace(0, 0.9, len(self.widths)).numpy())
        for width, row, color in zip(self.widths, self.loss, colors, strict=True):
            ok = torch.isfinite(row).all(1)
            mean = row.mean(1)
            ax.plot(lrs[ok].numpy(), mean[ok].numpy(), marker=".", color=color,
                    label=str(width))
            ax.fill_between(lrs[ok].numpy(), row[ok].amin(1).numpy(), row[ok].amax(1).numpy(),
                            color=color, alpha=0.2, linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("learning rate (base width)")
        ax.set_ylabel("final training loss")
        ax.set_title(title or f"learning-rate sweep: {self.parametrization}")
        ax.legend(title="width", fontsize="x-small", title_fontsize="x-small")
        fig.tight_layout()
        return fig


def lr_sweep(
    make_model: Callable[[int], nn.Module],
    widths: Sequence[int],
    lrs: Sequence[float],
    data: tuple[Tensor, Tensor],
    *,
    parametrization,
    steps: int,
    optimizer: str = "adam",
    seeds: int = 1,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    base_width: int | None = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> LRSweep:
    """Train ``make_model(width)`` under ``parametrization`` at every width, learning rate
    and seed, and record the final training loss.

    Each run is planned, initialised and trained exactly as in
    :func:`~ntkit.parametrize.coord_check` (``steps`` updates of ``optimizer`` on
    ``plan.param_groups(lr, ...)``, the plan scaling from ``make_model(base_width)``); its
    loss on all of ``data`` after the last update (no gradient) is recorded, or ``inf`` if
    it diverged. Seed ``s`` gives the same initialisation seed and batches at every width
    and learning rate, so the curves of one width differ only by the learning rate.

    **Arguments:**

    - ``make_model``, ``widths``, ``data``, ``parametrization``, ``steps``, ``optimizer``,
      ``seeds``, ``loss_fn``, ``base_width``, ``batch_size``, ``generator``: as in
      :func:`~ntkit.parametrize.coord_check`.
    - ``lrs``: base-width learning rates, each finite and ``> 0`` (a log2 grid shows transfer
      best: ``[2.0**k for k in range(-12, -4)]``).

    **Returns:** an :class:`LRSweep`; ``.optimal_lr`` maps each width to its best learning
    rate, ``.plot()`` draws loss against learning rate per width.

    Example:
        >>> from torch import nn
        >>> def mlp(w):
        ...     return nn.Sequential(nn.Linear(4, w), nn.ReLU(), nn.Linear(w, 1))
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(32, 4, generator=g)
        >>> sweep = lr_sweep(mlp, [16, 64], [2.0**-8, 2.0**-6, 2.0**-4], (x, x[:, :1]),
        ...                  parametrization="mup", steps=5, generator=g)
        >>> sweep.loss.shape, sorted(sweep.optimal_lr)
        (torch.Size([2, 3, 1]), [16, 64])
    """
    widths = check_widths(widths)
    if isinstance(lrs, (int, float, str)) or not isinstance(lrs, Sequence) or not lrs:
        raise ValueError(f"lrs must be a non-empty sequence of learning rates, got {lrs!r}")
    for lr in lrs:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) \
                or lr <= 0:
            raise ValueError(f"lrs must be finite numbers > 0, got {lr!r} in {list(lrs)}")
    lrs = tuple(sorted(float(lr) for lr in lrs))
    run = prepare_runs(widths, data, steps=steps, seeds=seeds, batch_size=batch_size,
                       base_width=base_width, optimizer=optimizer, loss_fn=loss_fn,
                       generator=generator)
    x, y, base, opt_cls, loss_fn, draws = (run.x, run.y, run.base, run.opt_cls, run.loss_fn,
                                           run.draws)

    loss = torch.full((len(widths), len(lrs), seeds), math.inf, dtype=torch.float64)
    for i, width in enumerate(widths):
        for j, lr in enumerate(lrs):
            for s, seed in enumerate(draws):
                model, opt = planned(make_model, width, base, parametrization, lr=lr,
                                     optimizer=optimizer, opt_cls=opt_cls, seed=seed)
                last = math.inf
                for _step, value in train(model, opt, x, y, loss_fn, steps, batch_size, seed):
                    last = value
                if math.isfinite(last) and batch_size is not None:
                    with torch.no_grad():
                        last = float(loss_fn(model(x), y))
                if math.isfinite(last):   # full batch: the last forward pass was on all data
                    loss[i, j, s] = last
    return LRSweep(parametrization_name(parametrization), widths, lrs, loss)
