"""Cholesky factorisation of a kernel matrix, with jitter and a clear error when it is not PSD."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ._checks import as_square, mean_diagonal, roundoff, smallest_eigenvalue

__all__ = ["JitterWarning", "NotPSDError", "cho_solve", "cholesky"]


class JitterWarning(RuntimeWarning):
    """Jitter had to be added to the diagonal of a kernel before it could be factorised."""


class NotPSDError(ValueError):
    """The kernel is not positive semi-definite beyond round-off."""


def cholesky(k, *, diag_reg: float = 0.0, name: str = "k_train_train") -> tuple[Tensor, float]:
    """Lower Cholesky factor of ``k + diag_reg * I``, adding jitter if round-off requires it.

    A PSD kernel that is singular or nearly so (duplicate inputs, low rank) can fail to factor
    in floating point. Then jitter ``eps * mean(diag K) * 10^j`` (``j = 0, 1, ...``, up to the
    round-off scale ``n * eps * max K_ii``) is added to the diagonal until the factorisation
    succeeds, with a :class:`JitterWarning` giving the amount. If even that fails, the kernel
    is not PSD beyond round-off: :class:`NotPSDError` (a ``ValueError``) reports its most
    negative eigenvalue. Only the lower triangle of ``k`` is read.

    **Arguments:** ``k`` ``(n, n)`` symmetric; ``diag_reg`` an absolute ridge ``>= 0``.

    **Returns:** ``(L, jitter)``: ``L`` ``(n, n)`` lower triangular with
    ``L @ L.T = k + (diag_reg + jitter) I``, and the jitter added (``0.0`` when none).

    Example:
        >>> k = torch.ones(3, 3, dtype=torch.float64)  # rank 1: needs jitter
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always")
        ...     chol, jitter = cholesky(k)
        >>> 0 < jitter < 1e-14, w[0].category.__name__
        (True, 'JitterWarning')
    """
    k = as_square(k, name)
    a = k.clone()
    if diag_reg:
        a.diagonal().add_(diag_reg)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return chol, 0.0
    tol = roundoff(a)
    jitter = torch.finfo(a.dtype).eps * mean_diagonal(a)
    while True:
        jitter = min(jitter, tol)
        a.diagonal().add_(jitter)
        chol, info = torch.linalg.cholesky_ex(a)
        a.diagonal().sub_(jitter)
        if int(info) == 0:
            warnings.warn(
                f"{name} is singular to working precision: added jitter {jitter:.3g} "
                f"({jitter / mean_diagonal(a):.3g} x its mean diagonal) to factorise it",
                JitterWarning, stacklevel=2)
            return chol, jitter
        if jitter >= tol:
            break
        jitter *= 10
    lam = smallest_eigenvalue(a)
    raise NotPSDError(
        f"{name}{' + diag_reg * I' if diag_reg else ''} is not positive semi-definite beyond "
        f"round-off: its most negative eigenvalue is {lam:.6g} (round-off scale {tol:.3g}); "
        f"check the kernel (a wrong or a float32 kernel?) or regularise it by more than "
        f"{-lam:.3g}"
    )


def cho_solve(chol: Tensor, rhs: Tensor) -> Tensor:
    """``(L L^T)^{-1} rhs`` for the lower Cholesky factor ``chol`` ``(n, n)`` and ``rhs``
    ``(n,)`` or ``(n, c)``, by two triangular solves (same result as
    ``torch.cholesky_solve``, and faster on CPU for a few right-hand sides: see
    bench/RESULTS.md).

    Example:
        >>> chol = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
        >>> cho_solve(chol, chol @ chol.T @ torch.ones(2, dtype=torch.float64)).tolist()
        [1.0, 1.0]
    """
    b = rhs[:, None] if rhs.ndim == 1 else rhs
    z = torch.linalg.solve_triangular(chol, b, upper=False)
    out = torch.linalg.solve_triangular(chol.mT, z, upper=True)
    return out[:, 0] if rhs.ndim == 1 else out
