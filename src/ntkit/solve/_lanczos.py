"""Top eigenpairs of a symmetric operator known only through its products with vectors.

The one Krylov eigen-solver of ntkit: the top-k spectrum of a large kernel matrix
(``ntkit.analysis.spectrum``) and the top Hessian eigenvalues of a loss
(``ntkit.parametrize.sharpness``, through Hessian-vector products) both call it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["lanczos_eigsh"]


def lanczos_eigsh(
    matvec: Callable[[Tensor], Tensor],
    n: int,
    k: int = 1,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    tol: float = 1e-10,
    max_iter: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The ``k`` largest (algebraic) eigenvalues of a symmetric ``(n, n)`` operator, by Lanczos.

    Lanczos with full reorthogonalisation (each new vector is orthogonalised twice against all
    earlier ones, so no spurious copies of converged eigenvalues appear), started from a
    Gaussian vector, stops when each of the top ``k`` Ritz pairs has residual
    ``||A v - theta v|| = |beta_m s_m| <= tol * |theta_1|`` (an eigenvalue is then off by about
    the residual squared over the gap to its neighbours) or after ``max_iter`` steps (default
    ``n``, where the Ritz values are the eigenvalues). A Krylov space that turns invariant (one
    start vector reaches one copy of a repeated eigenvalue) is continued from a fresh random
    vector orthogonal to it, so repeated eigenvalues are found with their multiplicity. Memory:
    the ``(n, m)`` basis after ``m`` steps.

    **Arguments:**

    - ``matvec``: maps an ``(n,)`` tensor ``v`` to ``A v``, ``(n,)``; ``A`` must be symmetric.
    - ``n``: the operator's size; ``k``: how many eigenpairs, ``1 <= k <= n``.
    - ``dtype``/``device``: of the Lanczos vectors (and of what ``matvec`` receives).
    - ``tol``: relative residual at which a Ritz pair counts as converged, ``> 0``.
    - ``generator``: for the start vector, so that a run can be repeated exactly.

    **Returns:** ``(evals, evecs)``: ``(k,)`` descending and ``(n, k)`` with orthonormal columns.

    Example:
        >>> a = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
        >>> evals, evecs = lanczos_eigsh(lambda v: a @ v, 100, 3)
        >>> [round(v, 10) for v in evals.tolist()]
        [100.0, 99.0, 98.0]
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, n={n}], got {k!r}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    steps = n if max_iter is None else int(max_iter)
    if steps < k:
        raise ValueError(f"max_iter must be >= k={k}, got {max_iter!r}")
    steps = min(steps, n)

    q = torch.randn(n, dtype=dtype, device=device, generator=generator)
    q = q / torch.linalg.vector_norm(q)
    basis = torch.empty(n, steps, dtype=dtype, device=device)
    alpha = torch.zeros(steps, dtype=dtype, device=device)
    beta = torch.zeros(steps, dtype=dtype, device=device)
    m = 0
    check_every = max(1, min(10, k))
    while True:
        basis[:, m] = q
        w = matvec(q)
        if w.shape != (n,):
            raise ValueError(f"matvec must return a tensor of shape ({n},), got {tuple(w.shape)}")
        w = w.to(dtype)
        alpha[m] = q @ w
        done = basis[:, : m + 1]
        for _ in range(2):  # classical Gram-Schmidt twice: orthogonal to round-off
            w = w - done @ (done.T @ w)
        b = torch.linalg.vector_norm(w)
        m += 1
        scale = float(alpha[:m].abs().max()) or 1.0
        invariant = float(b) <= n * torch.finfo(dtype).eps * scale
        # An invariant Krylov space is not a stopping point: the operator may have more copies
        # of an eigenvalue than one start vector reaches, so go on from a fresh vector below.
        if m >= k and (m == steps or (not invariant and m % check_every == 0)):
            theta, s = torch.linalg.eigh(
                torch.diag(alpha[:m]) + torch.diag(beta[: m - 1], 1) + torch.diag(beta[: m - 1], -1)
            )
            theta, s = theta.flip(0)[:k], s.flip(1)[:, :k]
            residual = (float(b) * s[-1].abs()).max()
            if m == steps or float(residual) <= tol * max(float(theta.abs()[0]), 1e-300):
                return theta, basis[:, :m] @ s
        if invariant:
            # Go on from a fresh vector orthogonal to the invariant space (coupling beta = 0).
            w = torch.randn(n, dtype=dtype, device=device, generator=generator)
            for _ in range(2):
                w = w - done @ (done.T @ w)
            b = torch.zeros((), dtype=dtype, device=device)
            q = w / torch.linalg.vector_norm(w)
        else:
            q = w / b
        beta[m - 1] = b
