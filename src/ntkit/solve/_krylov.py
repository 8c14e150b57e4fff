"""Matrix functions of a symmetric PSD operator applied to vectors, ``f(A) B``, by Lanczos.

The one Lanczos tridiagonalisation for ``f(A) b`` in ntkit (the top-k eigen-solver is
:func:`~ntkit.solve.lanczos_eigsh`). After ``m`` steps from ``b``, ``A Q_m = Q_m T_m +
beta_m q_{m+1} e_m^T`` and ``f(A) b ~ |b| Q_m f(T_m) e_1`` (Gallopoulos & Saad 1992, "Efficient
solution of parabolic equations by Krylov approximation methods"; Saad 1992): the product is
exact for polynomials of degree ``< m``, so its error is that of the best polynomial
approximation of ``f`` on the spectrum. For ``exp(-tau A)`` with the spectrum in ``[0, 4 rho]``
it is at most ``10 exp(-m^2 / (5 rho tau))`` once ``m >= sqrt(4 rho tau)`` (Hochbruck & Lubich
1997, "On Krylov subspace approximations to the matrix exponential operator", Theorem 2), so
``m ~ sqrt(tau lambda_max)`` steps suffice, against the ``O(n^3)`` of an eigendecomposition.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["FunmResult", "lanczos_funm", "exp_krylov_steps"]


@dataclass(frozen=True)
class FunmResult:
    """What :func:`lanczos_funm` returns.

    - ``values``: ``(F, n, c)`` (``(F, n)`` for a 1-D ``b``): ``f_i(A) b_j``.
    - ``steps``: Lanczos steps taken (the Krylov dimension ``m``).
    - ``converged``: whether every ``f_i(A) b_j`` moved by at most ``tol`` relative (plus the
      round-off floor) between the last two checks, or every Krylov space became invariant
      (then the result is exact).
    - ``change``: the largest relative change at the last check, the error estimate (0 for
      invariant spaces, ``inf`` before a second check).
    - ``ritz_max``: the largest Ritz value, a lower bound on ``lambda_max(A)``.
    """

    values: Tensor
    steps: int
    converged: bool
    change: float
    ritz_max: float


def exp_krylov_steps(rho_tau: float, tol: float, limit: int) -> int:
    """Lanczos steps after which the Hochbruck & Lubich (1997, Theorem 2) bound on the error
    of ``exp(-tau A) b`` falls below ``tol |b|``, for ``A`` with spectrum in ``[0, 4 rho]``:
    ``10 exp(-m^2 / (5 rho tau))`` for ``sqrt(4 rho tau) <= m <= 2 rho tau`` and
    ``10 exp(-rho tau) (e rho tau / m)^m / (rho tau)`` for ``m >= 2 rho tau``. Capped at
    ``limit`` (where Lanczos is exact).

    Example:
        >>> exp_krylov_steps(0.25, 1e-12, 1000), exp_krylov_steps(2500.0, 1e-12, 1000)
        (12, 612)
    """
    if rho_tau <= 0:
        return 1
    log_tol = math.log(tol / 10)
    for m in range(1, limit + 1):
        if m >= 2 * rho_tau:
            log_err = -rho_tau + m * (1 + math.log(rho_tau / m)) - math.log(rho_tau)
        elif m * m >= 4 * rho_tau:
            log_err = -m * m / (5 * rho_tau)
        else:
            continue
        if log_err <= log_tol:
            return m
    return limit


def lanczos_funm(
    matmat: Callable[[Tensor], Tensor],
    b: Tensor,
    f: Callable[[Tensor], Tensor],
    *,
    tol: float,
    max_steps: int | None = None,
    first_check: int = 8,
    give_up: bool = False,
) -> FunmResult:
    """``f_i(A) b_j`` for a symmetric PSD ``A`` given by products, one Krylov space per column.

    Lanczos with full reorthogonalisation (classical Gram-Schmidt twice) runs from each column
    of ``b`` in lockstep, so one product ``A @ (n, c)`` per step serves every column. Every
    ``max(2, m // 8)`` steps from ``first_check`` on, ``f`` is evaluated on the Ritz values of
    each ``T_m``; it stops when no ``f_i(A) b_j`` moved by more than ``tol`` times its norm
    since the previous check (plus the round-off floor ``m eps |b_j| max|f|``), after
    ``max_steps``, or when every column's Krylov space is invariant (then the result is exact).
    The basis grows as needed, so ``max_steps`` reserves no memory.
    Ritz values at or below ``n eps theta_max`` (the rule of :func:`~ntkit.solve.rank_tolerance`)
    are set to exactly 0, as :func:`~ntkit.solve.eigh` does for eigenvalues, so ``f(0)`` is
    what the numerical null space of a singular ``A`` gets. ``f`` should be smooth on
    ``[0, lambda_max]``: the convergence is that of its best polynomial approximation there,
    so a jump at 0 (a pseudo-inverse's) would only be resolved once the smallest Ritz value
    is within ``n eps theta_max`` of 0. Memory: the ``(c, m, n)`` basis (twice that while it
    grows).

    **Arguments:**

    - ``matmat``: maps an ``(n, c)`` tensor ``V`` to ``A V``; ``A`` symmetric PSD.
    - ``b``: ``(n,)`` or ``(n, c)`` start vectors (a zero column gives zeros).
    - ``f``: maps Ritz values ``(c, m)`` (each ``>= 0``) to ``(F, c, m)``: ``F`` functions
      (e.g. one per time), each applied elementwise.
    - ``tol``: relative accuracy ``> 0``; ``max_steps``: at most ``n`` (default ``n``);
      ``first_check``: the step of the first convergence check (an a priori estimate such as
      :func:`exp_krylov_steps` saves checks).
    - ``give_up``: stop early, unconverged, once the smallest relative change so far,
      extrapolated linearly in its logarithm from the first measured one (from the fourth
      check on), would reach ``tol`` only after ``max_steps``: convergence is at least that
      fast for ``exp`` (superlinear, Hochbruck & Lubich) and for ``1/z``-like functions
      (linear, as conjugate gradients), so a caller with a cheaper fallback wastes a few
      steps, not ``max_steps``.

    **Returns:** a :class:`FunmResult`, whose ``values`` are ``(F, n, c)`` (``(F, n)``).

    Example:
        >>> a = torch.diag(torch.linspace(0.0, 4.0, 200, dtype=torch.float64))
        >>> b = torch.ones(200, dtype=torch.float64)
        >>> out = lanczos_funm(lambda v: a @ v, b, lambda th: torch.exp(-th)[None], tol=1e-12)
        >>> err = (out.values[0] - torch.exp(-a.diagonal())).abs().max()
        >>> out.converged, out.steps < 30, bool(err < 1e-12)
        (True, True, True)
    """
    if not isinstance(b, Tensor) or not b.is_floating_point():
        raise TypeError(f"b must be a floating-point torch.Tensor; got {getattr(b, 'dtype', b)!r}")
    vector = b.ndim == 1
    bb = b[:, None] if vector else b
    if bb.ndim != 2 or bb.shape[0] == 0:
        raise ValueError(f"b must have shape (n,) or (n, c) with n >= 1; got {tuple(b.shape)}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0; got {tol!r}")
    n, c = bb.shape
    steps = n if max_steps is None else min(int(max_steps), n)
    if steps < 1:
        raise ValueError(f"max_steps must be >= 1; got {max_steps!r}")
    eps = torch.finfo(bb.dtype).eps
    norms = torch.linalg.vector_norm(bb, dim=0)  # (c,)
    q = (bb / torch.where(norms > 0, norms, 1.0)).mT.contiguous()  # (c, n); zero stays zero
    # The basis grows by doubling: most runs stop far below max_steps.
    basis = torch.empty(c, min(steps, 32), n, dtype=bb.dtype, device=bb.device)
    alpha = torch.zeros(c, steps, dtype=bb.dtype, device=bb.device)
    beta = torch.zeros(c, steps, dtype=bb.dtype, device=bb.device)
    scale = torch.zeros(c, dtype=bb.dtype, device=bb.device)
    live = norms > 0
    coef, ritz_max, change, history, converged = None, 0.0, math.inf, [], False
    check, m = max(1, min(first_check, steps)), 0
    while True:
        if m == basis.shape[1]:
            basis = torch.cat([basis, torch.empty_like(basis[:, : min(m, steps - m)])], 1)
        basis[:, m] = q
        w = matmat(q.mT).mT  # (c, n)
        if w.shape != (c, n):
            raise ValueError(f"matmat must return shape ({n}, {c}); got {tuple(w.shape[::-1])}")
        alpha[:, m] = (q * w).sum(1)
        w = w.contiguous()
        for j in range(c):  # matrix-vector products: batched ones with one column are slower
            done = basis[j, : m + 1]
            for _ in range(2):  # twice is enough for orthogonality to round-off (Kahan's rule)
                w[j].addmv_(done.T, done.mv(w[j]), alpha=-1.0)
        m += 1
        nb = torch.linalg.vector_norm(w, dim=1)
        scale = torch.maximum(scale, alpha[:, m - 1].abs())
        # A column whose space turned invariant continues with q = 0: T_m stays block-diagonal
        # and e_1's block, hence f(T_m) e_1, is exact and untouched by the padding.
        live = live & (nb > n * eps * torch.where(scale > 0, scale, 1.0))
        if m == steps or m >= check or not bool(live.any()):
            new, ritz_max = _coefficients(alpha[:, :m], beta[:, : m - 1], f, n, eps)
            new = new * norms[None, :, None]  # (F, c, m)
            size = torch.linalg.vector_norm(new, dim=2)
            fmax = new.abs().amax(dim=2)
            if coef is not None:
                old = torch.nn.functional.pad(coef, (0, m - coef.shape[2]))
                delta = torch.linalg.vector_norm(new - old, dim=2)
                floor = m * eps * fmax
                rel = delta / torch.where(size > 0, size, 1.0)
                change = float(rel.max())
                if bool((delta <= tol * size + floor).all()):
                    coef, converged = new, True
                    break
                history.append((m, change))
                if give_up and len(history) >= 3 and _hopeless(history, tol, steps):
                    coef = new
                    break
            coef = new
            if not bool(live.any()):
                change, converged = 0.0, True
                break
            if m == steps:
                break
            check = m + max(2, m // 8)
        beta[:, m - 1] = torch.where(live, nb, 0.0)
        q = torch.where(live[:, None], w / torch.where(live, nb, 1.0)[:, None], 0.0)
    values = torch.einsum("fcm,cmn->fnc", coef, basis[:, :m])
    return FunmResult(values[..., 0] if vector else values, m, converged, change, ritz_max)


def _hopeless(history: list[tuple[int, float]], tol: float, steps: int) -> bool:
    """Whether the smallest relative change so far, extrapolated log-linearly from the first
    check's (early changes are erratic), reaches ``tol`` only after ``steps`` steps."""
    m0, c0 = history[0]
    m, c = history[-1][0], min(ch for _, ch in history)
    if not 0 < c < c0:
        return True
    rate = (math.log(c) - math.log(c0)) / (m - m0)
    return m + (math.log(tol) - math.log(c)) / rate > steps


def _coefficients(alpha: Tensor, beta: Tensor, f, n: int, eps: float) -> tuple[Tensor, float]:
    """``f(T_m) e_1`` in the Lanczos basis, ``(F, c, m)``, and the largest Ritz value."""
    t = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    theta, s = torch.linalg.eigh(t)  # (c, m), (c, m, m)
    top = max(float(theta.max()), 0.0)
    theta = theta.masked_fill(theta <= n * eps * top, 0.0)
    vals = f(theta)  # (F, c, m)
    return torch.einsum("cij,fcj,cj->fci", s, vals, s[:, 0, :]), top
