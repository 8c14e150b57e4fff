"""Symmetric eigendecomposition of a kernel matrix, checked to be PSD up to round-off."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import as_square, roundoff
from ._cholesky import NotPSDError

__all__ = ["eigh", "rank_tolerance"]


def rank_tolerance(evals: Tensor) -> float:
    """``n * eps * lambda_max``: eigenvalues of an ``(n, n)`` PSD matrix at or below it are
    zero to working precision (the rank rule of ``numpy.linalg.matrix_rank``; a computed
    eigenvalue is off by ``O(eps ||K||_2)``, and the kernel's own entries by a few ``eps``)."""
    top = float(evals[-1]) if evals.numel() else 0.0
    return evals.numel() * torch.finfo(evals.dtype).eps * max(top, 0.0)


def eigh(k, *, diag_reg: float = 0.0, name: str = "k_train_train") -> tuple[Tensor, Tensor]:
    """Eigenvalues and eigenvectors of ``k + diag_reg * I``, with the null space's set to 0.

    An eigenvalue below ``-n * eps * max K_ii`` (the round-off scale of a PSD kernel) raises
    :class:`~ntkit.solve.NotPSDError` (a ``ValueError``) naming it. Eigenvalues at or below
    :func:`rank_tolerance` (``n * eps * lambda_max``) are rounding noise around 0 and are set to
    exactly 0, so that their eigenvectors span the numerical null space: functions such as
    ``exp(-lambda t)`` stay bounded there, and ``1 / lambda`` is never taken of noise. Only the
    lower triangle of ``k`` is read.

    **Arguments:** ``k`` ``(n, n)`` symmetric; ``diag_reg`` an absolute ridge ``>= 0``.

    **Returns:** ``(evals, evecs)``: ``(n,)`` ascending, ``>= 0``; ``(n, n)`` orthonormal
    columns, ``k + diag_reg I = evecs @ diag(evals) @ evecs.T`` up to the zeroed eigenvalues.

    Example:
        >>> evals, evecs = eigh(torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64))
        >>> [round(v, 12) for v in evals.tolist()]
        [1.0, 3.0]
        >>> eigh(torch.ones(2, 2, dtype=torch.float64))[0].tolist()  # rank 1: one exact zero
        [0.0, 2.0]
    """
    k = as_square(k, name)
    a = k
    if diag_reg:
        a = k.clone()
        a.diagonal().add_(diag_reg)
    evals, evecs = torch.linalg.eigh(a)
    tol = roundoff(a)
    lam = float(evals[0])
    if lam < -tol:
        raise NotPSDError(
            f"{name}{' + diag_reg * I' if diag_reg else ''} is not positive semi-definite "
            f"beyond round-off: its most negative eigenvalue is {lam:.6g} (round-off scale "
            f"{tol:.3g}); check the kernel or regularise it by more than {-lam:.3g}"
        )
    return evals.masked_fill_(evals <= rank_tolerance(evals), 0.0), evecs
