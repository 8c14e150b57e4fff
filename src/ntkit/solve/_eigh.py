"""Symmetric eigendecomposition of a kernel matrix, checked to be PSD up to round-off."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import as_square, roundoff
from ._cholesky import NotPSDError

__all__ = ["eigh"]


def eigh(k, *, diag_reg: float = 0.0, name: str = "k_train_train") -> tuple[Tensor, Tensor]:
    """Eigenvalues and eigenvectors of ``k + diag_reg * I``, with round-off negatives set to 0.

    Eigenvalues above ``-n * eps * max K_ii`` (the round-off scale of a PSD kernel) and below
    zero are clamped to zero, so that functions such as ``exp(-lambda t)`` stay bounded; a more
    negative one raises :class:`~ntkit.solve.NotPSDError` (a ``ValueError``) naming it. Only the
    lower triangle of ``k`` is read.

    **Arguments:** ``k`` ``(n, n)`` symmetric; ``diag_reg`` an absolute ridge ``>= 0``.

    **Returns:** ``(evals, evecs)``: ``(n,)`` ascending, ``>= 0``; ``(n, n)`` orthonormal
    columns, ``k + diag_reg I = evecs @ diag(evals) @ evecs.T``.

    Example:
        >>> evals, evecs = eigh(torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64))
        >>> [round(v, 12) for v in evals.tolist()]
        [1.0, 3.0]
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
    return evals.clamp_(min=0.0), evecs
