"""The power-law exponent of a kernel spectrum, and its log-log plot (matplotlib, imported in
:func:`plot_spectrum` only)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._spectrum import _eigenvalues

__all__ = ["plot_spectrum", "power_law_exponent"]


def power_law_exponent(eigenvalues, *, start: int = 1, stop: int | None = None) -> float:
    """Exponent ``alpha`` of a power-law spectrum ``lambda_i ~ i^-alpha``.

    The eigenvalues are sorted in descending order and numbered from 1; ``alpha`` is minus the
    slope of the least-squares line of ``log lambda_i`` on ``log i`` over
    ``start <= i <= stop`` (default: up to the last positive eigenvalue). Eigenvalues that are
    0 to working precision are left out. The head of a kernel spectrum (the constant mode, the
    first degrees of a dot-product kernel) often sits off the power law: ``start`` skips it.

    **Arguments:** ``eigenvalues`` a 1-D tensor of the eigenvalues of a PSD kernel, any order,
    or the kernel itself ``(N, N)`` / ``(N, N, O, O)``; ``start >= 1``; ``stop`` ``>= start + 1``
    or ``None``.

    **Returns:** ``alpha`` as a float (positive for a decaying spectrum).

    Example:
        >>> i = torch.arange(1, 101, dtype=torch.float64)
        >>> round(power_law_exponent(3.0 * i**-1.5), 10)
        1.5
    """
    evals = _eigenvalues(eigenvalues, "eigenvalues")
    lam, index = _fit_range(evals, start, stop)
    x, y = index.log(), lam.log()
    x = x - x.mean()
    return float(-(x * (y - y.mean())).sum() / (x * x).sum())


def _fit_range(evals: Tensor, start: int, stop: int | None) -> tuple[Tensor, Tensor]:
    """The positive eigenvalues, descending, with their 1-based indices, in ``[start, stop]``."""
    if isinstance(start, bool) or not isinstance(start, int) or start < 1:
        raise ValueError(f"start must be an int >= 1; got {start!r}")
    lam = evals.to(torch.float64).sort(descending=True).values
    lam = lam[lam > 0]
    last = lam.numel() if stop is None else stop
    if isinstance(last, bool) or not isinstance(last, int) or last < start + 1:
        raise ValueError(f"stop must be None or an int >= start + 1 = {start + 1}; got {stop!r}")
    if last > lam.numel():
        raise ValueError(f"stop = {last} exceeds the number of positive eigenvalues, "
                         f"{lam.numel()}")
    index = torch.arange(start, last + 1, dtype=torch.float64, device=lam.device)
    return lam[start - 1:last], index


def plot_spectrum(K_or_eigenvalues, *, ax=None, fit: bool = True, start: int = 1,
                  stop: int | None = None):
    """Log-log plot of a kernel's eigenvalues against their rank, with the fitted power law.

    **Arguments:**

    - ``K_or_eigenvalues``: a kernel ``(N, N)`` / ``(N, N, O, O)`` (its full spectrum is
      computed) or a 1-D tensor of eigenvalues.
    - ``ax``: a matplotlib ``Axes`` to draw on (default: a new figure's).
    - ``fit``: draw the least-squares line of :func:`power_law_exponent` over
      ``[start, stop]``, with ``alpha`` in the legend.

    **Returns:** the ``Axes``.

    Example:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> ax = plot_spectrum(torch.arange(1, 51, dtype=torch.float64) ** -2.0)
        >>> ax.get_legend_handles_labels()[1]
        ['eigenvalues', 'fit: $\\\\alpha$ = 2.00']
    """
    import matplotlib.pyplot as plt

    evals = _eigenvalues(K_or_eigenvalues, "K_or_eigenvalues")
    lam = evals.to(torch.float64).sort(descending=True).values.cpu()
    lam = lam[lam > 0]
    if ax is None:
        ax = plt.figure(figsize=(4.5, 3.5)).add_subplot()
    ax.loglog(torch.arange(1, lam.numel() + 1).numpy(), lam.numpy(), ".", label="eigenvalues")
    if fit:
        alpha = power_law_exponent(lam, start=start, stop=stop)
        part, index = _fit_range(lam, start, stop)
        # The fitted line passes through the centroid of (log i, log lambda_i).
        shift = float(part.log().mean() + alpha * index.log().mean())
        ax.loglog(index.numpy(), torch.exp(shift - alpha * index.log()).numpy(), "-",
                  label=rf"fit: $\alpha$ = {alpha:.2f}")
    ax.set_xlabel("index i")
    ax.set_ylabel(r"eigenvalue $\lambda_i$")
    ax.legend()
    return ax

