"""One entry point for ``(K + ridge I)^{-1} B`` that picks Cholesky or CG by size."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from ._cg import PivotedCholeskyPreconditioner, cg_solve
from ._checks import as_square
from ._cholesky import cho_solve, cholesky

__all__ = ["CG_THRESHOLD", "PSDSolver"]

CG_THRESHOLD = 20_000
"""Above this many rows, ``method="auto"`` solves by conjugate gradients instead of Cholesky.

At ``n = 20000`` a float64 Cholesky costs ``n^3 / 3 = 2.7e12`` flops (about 30 s at the
90 GFLOP/s of this machine type, growing as ``n^3``) and a second ``n x n`` array (3.2 GB),
while one CG iteration costs ``2 n^2 = 8e8`` flops and no new ``n x n`` memory: even 1000
preconditioned iterations are cheaper. Below it, Cholesky is exact, needs no tolerance and
takes seconds (1.9 s at ``n = 8000``), so it is the default.
"""


class PSDSolver:
    """``(k + diag_reg I)^{-1} B`` for many ``B``, with the factorisation done once.

    ``method``: ``"cholesky"`` (:func:`~ntkit.solve.cholesky`, with jitter if needed),
    ``"cg"`` (:func:`~ntkit.solve.cg_solve` with a pivoted Cholesky preconditioner built once)
    or ``"auto"``: CG above :data:`CG_THRESHOLD` rows, Cholesky below.

    Example:
        >>> import torch
        >>> k = torch.tensor([[2.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
        >>> x = PSDSolver(k, diag_reg=0.0).solve(torch.ones(2, dtype=torch.float64))
        >>> [round(v, 12) for v in x.tolist()]
        [0.5, 0.25]
    """

    def __init__(self, k, *, diag_reg: float = 0.0,
                 method: Literal["auto", "cholesky", "cg"] = "auto",
                 name: str = "k_train_train"):
        if method not in ("auto", "cholesky", "cg"):
            raise ValueError(f"method must be 'auto', 'cholesky' or 'cg'; got {method!r}")
        self.k = as_square(k, name)
        if method == "auto":
            method = "cg" if self.k.shape[0] > CG_THRESHOLD else "cholesky"
        self.method = method
        self.diag_reg = diag_reg
        self.jitter = 0.0
        if method == "cholesky":
            self._chol, self.jitter = cholesky(self.k, diag_reg=diag_reg, name=name)
        else:
            self._precond = PivotedCholeskyPreconditioner(self.k, diag_reg=diag_reg)

    def solve(self, b: Tensor) -> Tensor:
        """``(n,)`` or ``(n, c)`` solution of the system for the right-hand side ``b``."""
        rhs = b.to(self.k.dtype)
        if self.method == "cholesky":
            return cho_solve(self._chol, rhs)
        return cg_solve(self.k, rhs, diag_reg=self.diag_reg, preconditioner=self._precond)
