"""Preconditioned conjugate gradients for kernels too large to factorise.

The preconditioner is a rank-``r`` pivoted partial Cholesky factor ``L`` of the kernel
(Harbrecht, Peters & Schneider 2012), used as ``P = L L^T + s I`` and inverted by the
Woodbury identity, as in GPyTorch (Gardner et al. 2018, "GPyTorch: Blackbox Matrix-Matrix
Gaussian Process Inference with GPU Acceleration"). It captures the top of the spectrum, which
is what makes kernel systems ill-conditioned; the shift ``s`` is the ridge (CG suits
regularised systems: without a ridge, a kernel's condition number is unbounded). Building it
costs ``O(r^2 n)``; each CG iteration one ``(n, n) @ (n, k)`` product.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ._checks import as_square, mean_diagonal

__all__ = ["CGConvergenceWarning", "PivotedCholeskyPreconditioner", "cg_solve"]


class CGConvergenceWarning(RuntimeWarning):
    """Conjugate gradients stopped at ``max_iter`` above the requested tolerance."""


class PivotedCholeskyPreconditioner:
    """``P^{-1}`` for ``P = L L^T + s I``, ``L`` the rank-``rank`` pivoted Cholesky of ``k``.

    **Arguments:** ``k`` ``(n, n)`` PSD; ``diag_reg`` the absolute ridge of the system
    ``(k + diag_reg I) x = b``; ``rank`` of ``L`` (capped at ``n``). ``factor`` has fewer
    columns than ``rank`` when the kernel's numerical rank is smaller.
    """

    def __init__(self, k: Tensor, *, diag_reg: float = 0.0, rank: int = 100):
        n = k.shape[0]
        rank = min(rank, n)
        self.rank = rank
        diag = k.diagonal().clone()
        factor = k.new_zeros(n, rank)
        scale = mean_diagonal(k)
        used = 0
        for j in range(rank):
            p = int(torch.argmax(diag))
            pivot = float(diag[p])
            if pivot <= torch.finfo(k.dtype).eps * n * scale:
                break  # the kernel is (numerically) of rank j: nothing left to capture
            row = k[p] - factor[:, :j] @ factor[p, :j]
            factor[:, j] = row / pivot**0.5
            diag -= factor[:, j] ** 2
            diag[p] = 0.0
            used = j + 1
        self.factor = factor[:, :used]
        # P <= K + diag_reg I (the left-out part is PSD), so P^{-1} (K + diag_reg I) has
        # eigenvalues in [1, 1 + lambda_max(residual) / diag_reg]: CG converges fast when the
        # ridge is not far below what the rank-r factor leaves out.
        self.shift = max(diag_reg, torch.finfo(k.dtype).eps * scale)
        inner = self.factor.T @ self.factor
        inner.diagonal().add_(self.shift)
        self._inner = torch.linalg.cholesky(inner)

    def __call__(self, v: Tensor) -> Tensor:
        # Woodbury: (L L^T + s I)^{-1} v = (v - L (s I + L^T L)^{-1} L^T v) / s.
        w = torch.cholesky_solve(self.factor.T @ v, self._inner)
        return (v - self.factor @ w) / self.shift


def cg_solve(
    k,
    b: Tensor,
    *,
    diag_reg: float = 0.0,
    rtol: float | None = None,
    max_iter: int | None = None,
    preconditioner: PivotedCholeskyPreconditioner | None = None,
    rank: int = 100,
) -> Tensor:
    """Solve ``(k + diag_reg I) x = b`` by preconditioned conjugate gradients, column by column.

    Each column stops when its residual falls below ``rtol * ||b_col||``. Not converging in
    ``max_iter`` iterations gives a :class:`CGConvergenceWarning` with the worst residual.

    **Arguments:** ``k`` ``(n, n)`` symmetric PSD; ``b`` ``(n,)`` or ``(n, c)``; ``rtol``
    (default ``1e-10`` in float64, ``1e-5`` in float32); ``max_iter`` (default ``2 n``);
    ``preconditioner`` (default a pivoted Cholesky one of rank ``rank``, reusable across
    calls).

    **Returns:** ``x`` with the shape of ``b``.

    Example:
        >>> k = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> x = cg_solve(k, torch.tensor([1.0, 2.0], dtype=torch.float64), diag_reg=0.5)
        >>> [round(v, 10) for v in x.tolist()]
        [0.1016949153, 0.5423728814]
    """
    k = as_square(k, "k")
    n = k.shape[0]
    vector = b.ndim == 1
    rhs = (b[:, None] if vector else b).to(k.dtype)
    if rhs.shape[0] != n:
        raise ValueError(f"b must have {n} rows to match k; got shape {tuple(b.shape)}")
    if rtol is None:
        rtol = 1e-10 if k.dtype == torch.float64 else 1e-5
    max_iter = 2 * n if max_iter is None else max_iter
    precond = preconditioner or PivotedCholeskyPreconditioner(k, diag_reg=diag_reg, rank=rank)

    def matvec(v: Tensor) -> Tensor:
        out = k @ v
        return out.add_(v, alpha=diag_reg) if diag_reg else out

    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = precond(r)
    p = z.clone()
    rz = (r * z).sum(0)
    target = rtol * torch.linalg.vector_norm(rhs, dim=0)
    tiny = torch.finfo(k.dtype).tiny
    for _ in range(max_iter):
        res = torch.linalg.vector_norm(r, dim=0)
        active = res > target
        if not bool(active.any()):
            break
        kp = matvec(p)
        alpha = torch.where(active, rz / (p * kp).sum(0).clamp(min=tiny), 0.0)
        x += alpha * p
        r -= alpha * kp
        z = precond(r)
        rz_new = (r * z).sum(0)
        beta = torch.where(active, rz_new / rz.clamp(min=tiny), 0.0)
        p = z + beta * p
        rz = rz_new
    else:
        res = torch.linalg.vector_norm(r, dim=0)
        if bool((res > target).any()):
            worst = float((res / target.clamp(min=tiny)).max()) * rtol
            warnings.warn(
                f"conjugate gradients stopped after max_iter={max_iter} iterations with a "
                f"relative residual of {worst:.3g} (asked {rtol:g}); add diag_reg or raise "
                f"max_iter", CGConvergenceWarning, stacklevel=2)
    return x[:, 0] if vector else x
