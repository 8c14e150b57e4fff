"""One entry point for ``(K + ridge I)^{+} B`` that picks Cholesky, an eigendecomposition or CG."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ._cg import PivotedCholeskyPreconditioner, cg_solve
from ._checks import as_square, roundoff
from ._cholesky import cho_solve
from ._eigh import eigh

__all__ = ["CG_THRESHOLD", "PSDSolver"]

CG_THRESHOLD = 20_000
"""Above this many rows, ``method="auto"`` solves by conjugate gradients instead of Cholesky.

At ``n = 20000`` a float64 Cholesky costs ``n^3 / 3 = 2.7e12`` flops and a second ``n x n``
array (3.2 GB), while one CG iteration costs ``2 n^2 = 8e8`` flops and no new ``n x n`` memory:
even 1000 preconditioned iterations are cheaper. Below it, Cholesky is exact, needs no
tolerance and takes seconds, so it is the default.
"""


class PSDSolver:
    """``(k + diag_reg I)^{+} B`` for many ``B``, with the factorisation done once.

    ``method``: ``"cholesky"``, ``"cg"`` (:func:`~ntkit.solve.cg_solve` with a pivoted
    Cholesky preconditioner built once) or ``"auto"``: CG above :data:`CG_THRESHOLD` rows,
    Cholesky below.

    ``"cholesky"`` factorises once; if that fails or leaves a pivot at or below the round-off
    scale ``n * eps * max K_ii`` (duplicate or nearly duplicate inputs, a kernel of low rank:
    each dependent row leaves such a pivot), the matrix is singular to working precision and
    the solver falls back to :func:`~ntkit.solve.eigh`: the pseudo-inverse on the range, whose
    eigenvalues lie above ``n * eps * lambda_max`` (:func:`~ntkit.solve.rank_tolerance`). That
    is the minimum-norm solution and the ``t -> infinity`` limit of gradient flow on
    ``|K x - b|``-type losses (the component of ``b`` in the null space never moves); the
    fallback also raises :class:`~ntkit.solve.NotPSDError` for a matrix that is not PSD.
    ``"cg"`` raises on a matrix that its preconditioner finds singular (CG does not converge on
    an inconsistent singular system): add a ridge.

    Attributes: ``rank`` (``n``, or the numerical rank after the fallback), ``method``.

    Example:
        >>> import torch
        >>> k = torch.tensor([[2.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
        >>> x = PSDSolver(k, diag_reg=0.0).solve(torch.ones(2, dtype=torch.float64))
        >>> [round(v, 12) for v in x.tolist()]
        [0.5, 0.25]
        >>> twins = PSDSolver(torch.ones(2, 2, dtype=torch.float64))  # singular: pseudo-inverse
        >>> x = twins.solve(torch.tensor([1.0, -1.0], dtype=torch.float64))
        >>> twins.rank, x.tolist()  # the right-hand side lies in the null space
        (1, [0.0, 0.0])
    """

    def __init__(self, k, *, diag_reg: float = 0.0,
                 method: Literal["auto", "cholesky", "cg"] = "auto",
                 name: str = "k_train_train"):
        if method not in ("auto", "cholesky", "cg"):
            raise ValueError(f"method must be 'auto', 'cholesky' or 'cg'; got {method!r}")
        self.k = as_square(k, name)
        n = self.k.shape[0]
        if method == "auto":
            method = "cg" if n > CG_THRESHOLD else "cholesky"
        self.method = method
        self.diag_reg = diag_reg
        self.rank = n
        self._chol: Tensor | None = None
        self._range: tuple[Tensor, Tensor] | None = None
        if method == "cg":
            self._precond = PivotedCholeskyPreconditioner(self.k, diag_reg=diag_reg)
            used = self._precond.factor.shape[1]
            if used < self._precond.rank and diag_reg <= roundoff(self.k):
                raise ValueError(
                    f"{name} is singular to working precision (numerical rank {used} of {n}: "
                    f"duplicate inputs?): conjugate gradients cannot solve it; add diag_reg "
                    f"or use solver='cholesky' (which solves on the kernel's range)")
            return
        a = self.k.clone()
        if diag_reg:
            a.diagonal().add_(diag_reg)
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) == 0 and float(chol.diagonal().min()) ** 2 > roundoff(a):
            self._chol = chol
            return
        evals, evecs = eigh(self.k, diag_reg=diag_reg, name=name)
        keep = evals > 0
        self.rank = int(keep.sum())
        self._range = (evals[keep], evecs[:, keep])

    def solve(self, b: Tensor) -> Tensor:
        """``(n,)`` or ``(n, c)`` solution of the system for the right-hand side ``b``: the
        minimum-norm one (pseudo-inverse) when the matrix is singular."""
        rhs = b.to(self.k.dtype)
        if self._chol is not None:
            return cho_solve(self._chol, rhs)
        if self._range is not None:
            evals, evecs = self._range
            coef = evecs.T @ rhs
            return evecs @ (coef / (evals[:, None] if rhs.ndim == 2 else evals))
        return cg_solve(self.k, rhs, diag_reg=self.diag_reg, preconditioner=self._precond)

    def range_part(self, b: Tensor) -> Tensor:
        """The projection of ``b`` ``(n,)`` / ``(n, c)`` on the matrix's range: ``b`` itself
        unless the matrix is singular."""
        if self._range is None:
            return b
        evecs = self._range[1]
        return evecs @ (evecs.T @ b.to(self.k.dtype))
