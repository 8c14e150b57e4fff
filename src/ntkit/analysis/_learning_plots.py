"""Learning curve plots: theory line against measured test errors (matplotlib, imported here)."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_learning_curve"]


def plot_learning_curve(ns, predicted, measured=None, *, ax=None, measured_std=None,
                        label: str = "eigenlearning", measured_label: str = "measured"):
    """Predicted test MSE against ``n`` as a line, measured values as points with error bars,
    on log-log axes.

    **Arguments:**

    - ``ns``: ``(T,)`` sample sizes of ``predicted``.
    - ``predicted``: ``(T,)`` predicted test MSE (e.g. ``learning_curve(...).test_mse``), or a
      :class:`~ntkit.analysis.LearningCurve` (its ``test_mse`` is used).
    - ``measured``: optional ``(R, T)`` test MSEs of ``R`` repeats at the same ``ns`` (points
      at the mean, error bars of one standard error), or ``(T,)`` means with the optional
      ``measured_std`` ``(T,)`` as error bars.
    - ``ax``: a matplotlib ``Axes`` to draw on (default: a new figure's).

    **Returns:** the ``Axes``.

    Example:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> ax = plot_learning_curve([10, 100], [1.0, 0.1], [[1.1, 0.12], [0.9, 0.09]])
        >>> ax.get_xscale(), len(ax.lines) >= 1
        ('log', True)
    """
    import matplotlib.pyplot as plt

    if ax is None:
        ax = plt.figure(figsize=(5, 4)).add_subplot()
    ns = np.asarray(ns, dtype=float)
    pred = getattr(predicted, "test_mse", predicted)
    pred = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred, dtype=float)
    if ns.ndim != 1 or pred.shape != ns.shape:
        raise ValueError(f"ns and predicted must be 1-D of the same length; got shapes "
                         f"{ns.shape} and {pred.shape}")
    ax.plot(ns, pred, "-", color="k", label=label)
    if measured is not None:
        meas = np.asarray(measured, dtype=float)
        if meas.ndim == 2 and meas.shape[1] == ns.size:
            mean = meas.mean(0)
            err = meas.std(0, ddof=1) / np.sqrt(meas.shape[0]) if meas.shape[0] > 1 else None
        elif meas.shape == ns.shape:
            mean = meas
            err = None if measured_std is None else np.asarray(measured_std, dtype=float)
        else:
            raise ValueError(f"measured must be (T,) or (R, T) with T = {ns.size}; got shape "
                             f"{meas.shape}")
        ax.errorbar(ns, mean, yerr=err, fmt="o", ms=4, capsize=3, color="C1",
                    label=measured_label)
    ax.set(xscale="log", yscale="log", xlabel="training samples n", ylabel="test MSE")
    ax.legend(fontsize=8)
    return ax
