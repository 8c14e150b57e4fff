"""FALKON: the Nyström kernel ridge system solved by preconditioned conjugate gradients.

Rudi, Carratino & Rosasco, "FALKON: An Optimal Large Scale Kernel Method" (NeurIPS 2017).
With ``M`` landmarks ``C`` and ``K_nM = k(X, C)``, the Nyström estimator minimises
``(1/n) ||K_nM a - y||^2 + lambda a^T K_MM a``, i.e. solves

    H a = K_nM^T y,    H = K_nM^T K_nM + lambda n K_MM.

The preconditioner is the paper's (Section 3, Algorithm 1): ``T = chol(K_MM)``,
``A = chol(T T^T / M + lambda I)`` (upper factors), and CG runs on
``B^T H B beta = B^T K_nM^T y`` with ``B = T^-1 A^-1 / sqrt(n)``, ``a = B beta``; for uniform
landmarks ``K_nM^T K_nM / n ~ K_MM^2 / M``, so ``B^T H B ~ I`` and a few tens of iterations
reach round-off.

Landmarks drawn with probabilities ``p_j`` (ridge leverage scores) make that estimate
``K_MM^2 / M`` a biased one: the importance-weighted estimate is ``K_MM D^2 K_MM / M`` with
``D = diag(1 / sqrt(n p_j))`` (``D = I`` for uniform ``p_j = 1/n``). Rudi, Calandriello,
Carratino & Rosasco, "On fast leverage score sampling and optimal learning" (NeurIPS 2018),
§4 (FALKON-BLESS), precondition with it: ``T = chol(D K_MM D)``, ``A = chol(T T^T / M +
lambda I)``, ``B = D T^-1 A^-1 / sqrt(n)``, so that ``B^-T B^-1 = (n / M) K_MM D^2 K_MM +
lambda n K_MM``. Each iteration streams ``K_nM`` in blocks of ``(block, M)``, never whole:
memory ``O(block * M + M^2)``, ``O(n M)`` kernel entries per iteration.

The blocks are tasks of an ``ntkit.tiles`` executor (``share`` / ``map_calls``): in this
process, a local process pool, or a Dask cluster.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from ._cg import CGConvergenceWarning
from ._cholesky import cholesky

__all__ = ["BlockData", "falkon", "gram_products", "block_products"]


@dataclass(frozen=True)
class BlockData:
    """What each worker holds: the kernel function, the inputs ``x`` ``(n, d)``, targets
    ``y`` ``(n, c)``, landmarks ``centers`` ``(M, d)`` and the rows per kernel block;
    ``kept`` (a dict, or ``None``) keeps each block ``k(x[r0:r1], centers)`` for the next
    iterations, when ``krr``'s ``max_memory`` allows it."""

    kernel_fn: object
    x: Tensor
    y: Tensor
    centers: Tensor
    block_size: int
    kept: dict | None = None

    def block(self, r0: int, r1: int, buffer: Tensor | None = None) -> Tensor:
        """``k(x[r0:r1], centers)``: kept, or computed (into ``buffer``, ``(>= r1 - r0, M)``,
        when given and nothing is kept)."""
        if self.kept is not None and r0 in self.kept:
            return self.kept[r0]
        out = buffer[:r1 - r0] if self.kept is None and buffer is not None else None
        k = self.kernel_fn(self.x[r0:r1], self.centers, out=out)
        if self.kept is not None:
            self.kept[r0] = k
        return k

    def buffer(self) -> Tensor | None:
        """A ``(block_size, M)`` buffer for :meth:`block` (``None`` when blocks are kept)."""
        if self.kept is not None:
            return None
        return self.x.new_empty(min(self.block_size, self.x.shape[0]), self.centers.shape[0])


def block_products(data: BlockData, task: tuple) -> tuple[Tensor | None, Tensor | None]:
    """For rows ``r0:r1``, in blocks of ``data.block_size``: ``(K^T (K u), K^T y)`` with
    ``K = k(x[r0:r1], centers)``, ``u`` ``(M, c)`` (``None``: skip the first product); the
    second is ``None`` unless ``want_rhs``. ``task = (r0, r1, u, want_rhs)``."""
    r0, r1, u, want_rhs = task
    ku = rhs = None
    buffer = data.buffer()
    with torch.no_grad():
        for b0 in range(r0, r1, data.block_size):
            b1 = min(b0 + data.block_size, r1)
            k = data.block(b0, b1, buffer)
            if u is not None:
                part = k.T @ (k @ u)
                ku = part if ku is None else ku.add_(part)
            if want_rhs:
                part = k.T @ data.y[b0:b1]
                rhs = part if rhs is None else rhs.add_(part)
    return ku, rhs


def gram_products(data: BlockData, task: tuple) -> tuple[Tensor, Tensor]:
    """For rows ``r0:r1``, in blocks of ``data.block_size``: ``(K^T K, K^T y)``, ``(M, M)``
    and ``(M, c)``, summed over the blocks as they come (one ``(M, M)`` per task)."""
    r0, r1 = task
    m = data.centers.shape[0]
    gram = data.centers.new_zeros(m, m)
    rhs = data.centers.new_zeros(m, data.y.shape[1])
    buffer = data.buffer()
    with torch.no_grad():
        for b0 in range(r0, r1, data.block_size):
            k = data.block(b0, min(b0 + data.block_size, r1), buffer)
            gram.addmm_(k.T, k)
            rhs.addmm_(k.T, data.y[b0:min(b0 + data.block_size, r1)])
    return gram, rhs


def stream(executor, shared, func, n: int, block_size: int, extra: tuple = ()) -> list:
    """``func(data, (r0, r1, *extra))`` over ``n`` rows split into one range per task (two
    per worker, whole blocks each), by ``executor``: the results held at once are one per
    task, not one per block."""
    blocks = -(-n // block_size)
    per_task = block_size * -(-blocks // min(blocks, 2 * _workers(executor)))
    tasks = [(r0, min(r0 + per_task, n), *extra) for r0 in range(0, n, per_task)]
    return executor.map_calls(func, shared, tasks)


def _workers(executor) -> int:
    client = getattr(executor, "client", None)
    if client is not None:
        return max(1, len(client.scheduler_info()["workers"]))
    return max(1, int(getattr(executor, "workers", 1)))


def falkon(executor, shared, *, n: int, k_mm: Tensor, ridge: float, block_size: int,
           tol: float, max_iter: int, progress: bool,
           probabilities: Tensor | None = None) -> tuple[Tensor, int, list[float]]:
    """The FALKON coefficients ``a`` ``(M, c)`` of the system in the module docstring.

    **Arguments:** ``executor`` an entered ``ntkit.tiles`` executor and ``shared`` its handle
    of a :class:`BlockData`; ``n`` rows; ``k_mm`` ``(M, M)``; ``ridge`` ``lambda >= 0``;
    ``tol`` the relative residual ``||r_t|| / ||r_0||`` of the preconditioned system at which
    CG stops; ``max_iter`` iterations at most (a :class:`CGConvergenceWarning` if reached);
    ``probabilities`` ``(M,)``: the probability with which each landmark was drawn from the
    ``n`` rows (``None``: uniform, the plain preconditioner), giving the weights ``D``.

    **Returns:** ``(a, iterations, residuals)``, the relative residual after each iteration.
    """
    from tqdm.auto import tqdm

    m = k_mm.shape[0]
    d = (torch.ones(m, 1, dtype=k_mm.dtype) if probabilities is None
         else (n * probabilities.to(k_mm.dtype)).rsqrt()[:, None])
    t_low, _ = cholesky(d * k_mm * d.T, name="D k(landmarks, landmarks) D")  # T^T = t_low
    inner = t_low.T @ t_low / m  # T T^T / M
    a_low, _ = cholesky(inner, diag_reg=ridge, name="T T^T / M")
    scale = n**-0.5

    def b_apply(v: Tensor) -> Tensor:  # B v = D T^-1 A^-1 v / sqrt(n)
        w = torch.linalg.solve_triangular(a_low.T, v, upper=True)
        return torch.linalg.solve_triangular(t_low.T, w, upper=True) * (d * scale)

    def bt_apply(v: Tensor) -> Tensor:  # B^T v = A^-T T^-T D v / sqrt(n)
        w = torch.linalg.solve_triangular(t_low, v * d, upper=False)
        return torch.linalg.solve_triangular(a_low, w, upper=False) * scale

    def products(u: Tensor | None, want_rhs: bool):
        parts = stream(executor, shared, block_products, n, block_size, (u, want_rhs))
        ku = None if u is None else sum(p[0] for p in parts)
        rhs = sum(p[1] for p in parts) if want_rhs else None
        return ku, rhs

    def system(beta: Tensor) -> Tensor:  # B^T H B beta
        a = b_apply(beta)
        ku, _ = products(a, False)
        return bt_apply(ku + ridge * n * (k_mm @ a))

    _, rhs = products(None, True)
    r = bt_apply(rhs)
    beta = torch.zeros_like(r)
    p = r.clone()
    rr = (r * r).sum(0)
    r0 = rr.sqrt().clamp(min=torch.finfo(r.dtype).tiny)
    residuals: list[float] = []
    bar = tqdm(total=max_iter, desc="FALKON", unit="it", disable=None if progress else True,
               leave=False)
    it = 0
    try:
        for it in range(1, max_iter + 1):  # noqa: B007
            hp = system(p)
            active = rr.sqrt() / r0 > tol
            alpha = torch.where(active, rr / (p * hp).sum(0).clamp(min=1e-300), 0.0)
            beta += alpha * p
            r -= alpha * hp
            rr_new = (r * r).sum(0)
            residuals.append(float((rr_new.sqrt() / r0).max()))
            bar.update(1)
            bar.set_postfix(residual=f"{residuals[-1]:.2e}")
            if residuals[-1] <= tol:
                break
            p = r + torch.where(active, rr_new / rr.clamp(min=1e-300), 0.0) * p
            rr = rr_new
        else:
            warnings.warn(
                f"FALKON stopped after max_iter={max_iter} iterations with a relative residual "
                f"of {residuals[-1]:.3g} (asked tol={tol:g}); raise max_iter or the ridge",
                CGConvergenceWarning, stacklevel=3)
    finally:
        bar.close()
    return b_apply(beta), it, residuals
