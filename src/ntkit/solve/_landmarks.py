"""Kernels given as functions of two input blocks, and the choice of Nyström landmarks.

Large-scale kernel methods never form the ``N x N`` kernel: they evaluate ``k(X_block, C)``
against ``M`` landmarks ``C``. :func:`as_kernel_fn` turns an ``ntkit.layers`` spec or a plain
callable into such a function (picklable, so that a Dask worker can run it), and
:func:`sample_landmarks` picks the landmarks uniformly or by ridge-leverage scores.

Ridge-leverage-score sampling follows the recursive algorithm of Musco & Musco, "Recursive
Sampling for the Nyström Method" (NeurIPS 2017, Algorithm 3), with the practical choices of
their reference code: the points are randomly permuted and nested halves form the levels;
each level's approximate ``lambda``-ridge leverage scores are computed from the landmarks of
the level below, weighted by ``1 / sqrt(p_i)``, with
``l_i = (k_ii - k_iS (K_SS + lambda W^-2)^-1 k_Si) / lambda``, and ``lambda`` set by the
landmarks' own spectrum, ``lambda = (tr(W K_SS W) - sum of its top-m eigenvalues) / m``, so
that the effective dimension is about ``m``. The last level draws exactly ``m`` distinct
points with probabilities proportional to ``l_i / sum(l) + 1 / n``, an even mixture of the
scores and uniform (the paper samples with replacement from the scores alone; distinct
points give a Nyström space of dimension ``m``, and the uniform half keeps a tight cluster,
whose summed score is about 1, from going unsampled: measured on 440 clustered and 60
spread points with ``m = 40``, pure scores missed the cluster in 4 of 6 seeds, with 40 times
uniform's kernel error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import all_finite

__all__ = ["SAMPLINGS", "as_kernel_fn", "sample_landmarks"]

SAMPLINGS = ("uniform", "rls")


@dataclass(frozen=True)
class SpecKernel:
    """``k(x1, x2)`` = the ``get`` kernel (``"nngp"`` or ``"ntk"``) of an ``ntkit.layers``
    network, ``(N1, d), (N2, d) -> (N1, N2)``; ``diagonal(x)`` ``(N,)``."""

    spec: object
    get: str

    def __call__(self, x1: Tensor, x2: Tensor, *, out: Tensor | None = None) -> Tensor:
        """``(N1, N2)``, written into ``out`` when given (reused by streaming solvers)."""
        from ..layers._compute import kernel_matrix

        return kernel_matrix(self.spec, x1, x2, get=self.get, out=out)

    def diagonal(self, x: Tensor) -> Tensor:
        return getattr(self.spec.kernel(x, get=self.get, diagonal=True, progress=False),
                       self.get)


@dataclass(frozen=True)
class CallableKernel:
    """A user's ``k(x1, x2) -> (N1, N2)``, checked for shape and finiteness at each call."""

    fn: object

    def __call__(self, x1: Tensor, x2: Tensor, *, out: Tensor | None = None) -> Tensor:
        """``(N1, N2)`` in ``x1``'s dtype, copied into ``out`` when given (as
        :class:`SpecKernel` writes into it)."""
        k = self.fn(x1, x2)
        if not isinstance(k, Tensor):
            k = torch.as_tensor(k)
        if k.shape != (x1.shape[0], x2.shape[0]):
            raise ValueError(f"kernel must map (N1, d), (N2, d) inputs to an (N1, N2) matrix; "
                             f"got shape {tuple(k.shape)} for N1={x1.shape[0]}, "
                             f"N2={x2.shape[0]}")
        if not all_finite(k):
            raise ValueError("kernel returned NaN or infinite values")
        return k.to(x1.dtype) if out is None else out.copy_(k)

    def diagonal(self, x: Tensor) -> Tensor:
        # A plain callable has no diagonal of its own: small square blocks waste little.
        return torch.cat([self(b, b).diagonal() for b in x.split(64)])


def as_kernel_fn(kernel, *, get: str = "ntk"):
    """``kernel`` as a picklable ``k(x1, x2) -> (N1, N2)`` with a ``diagonal(x) -> (N,)``.

    **Arguments:** ``kernel`` an ``ntkit.layers`` network (its ``get`` kernel, ``"nngp"`` or
    ``"ntk"``) or a callable ``k(x1, x2)`` on ``(N1, d)``, ``(N2, d)`` tensors returning an
    ``(N1, N2)`` tensor.

    Example:
        >>> from ntkit import layers as L
        >>> k = as_kernel_fn(L.serial(L.Dense(1), L.ReLU(), L.Dense(1)), get="nngp")
        >>> x = torch.eye(3, dtype=torch.float64)
        >>> k(x, x).shape, k.diagonal(x).shape
        (torch.Size([3, 3]), torch.Size([3]))
    """
    from ..layers import Layer

    if isinstance(kernel, (SpecKernel, CallableKernel)):
        return kernel
    if isinstance(kernel, Layer):
        if get not in ("nngp", "ntk"):
            raise ValueError(f"get must be 'nngp' or 'ntk'; got {get!r}")
        return SpecKernel(kernel, get)
    if callable(kernel):
        return CallableKernel(kernel)
    raise TypeError(f"kernel must be an ntkit.layers network or a callable k(x1, x2); got "
                    f"{type(kernel).__name__}")


def sample_landmarks(kernel_fn, x: Tensor, m: int, *, sampling: str = "uniform",
                     generator: torch.Generator, block_size: int = 2048,
                     return_probabilities: bool = False):
    """Indices of ``m`` distinct landmarks among the rows of ``x``.

    **Arguments:** ``kernel_fn`` from :func:`as_kernel_fn`; ``x`` ``(N, d)``; ``m`` in
    ``1..N``; ``sampling`` ``"uniform"`` or ``"rls"`` (recursive ridge-leverage scores, see
    the module docstring; ``O(N m)`` kernel entries, streamed in ``block_size`` rows);
    ``return_probabilities``: also return the probability with which each landmark was
    drawn (the weights of FALKON's preconditioner for non-uniform landmarks).

    **Returns:** ``(m,)`` int64 indices, sorted; with ``return_probabilities``, ``(indices,
    p)`` with ``p`` ``(m,)`` in ``x``'s dtype: each landmark's probability in the draw
    (``1 / N`` for uniform sampling; for ``"rls"``, the final level's ``p_i``, which sum to 1
    over the ``N`` points).

    Example:
        >>> k = as_kernel_fn(lambda a, b: torch.exp(-torch.cdist(a, b) ** 2))
        >>> x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
        >>> idx = sample_landmarks(k, x, 10, sampling="rls",
        ...                        generator=torch.Generator().manual_seed(1))
        >>> idx.shape, len(set(idx.tolist()))
        (torch.Size([10]), 10)
    """
    n = x.shape[0]
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}; got {sampling!r}")
    if not 1 <= m <= n:
        raise ValueError(f"landmarks must be between 1 and the number of inputs N={n}; got {m}")
    perm = torch.randperm(n, generator=generator)
    if sampling == "uniform" or m == n:
        idx, p = perm[:m].sort().values, torch.full((m,), 1.0 / n, dtype=x.dtype)
    else:
        idx, p = _recursive_rls(kernel_fn, x, m, perm, generator, block_size)
        idx, order = idx.sort()
        p = p[order]
    return (idx, p) if return_probabilities else idx


def _recursive_rls(kernel_fn, x: Tensor, m: int, perm: Tensor, g: torch.Generator,
                   block_size: int) -> tuple[Tensor, Tensor]:
    """``(indices, p)``: the ``m`` landmarks drawn at the last level and the probability
    with which each was drawn."""
    n = x.shape[0]
    sizes = [n]
    while sizes[-1] > 2 * m:  # nested halves down to a level small enough to keep whole
        sizes.append(math.ceil(sizes[-1] / 2))
    chosen = perm[: sizes[-1]]
    weights = torch.ones(len(chosen), dtype=x.dtype)
    for level in range(len(sizes) - 2, -1, -1):
        points = perm[: sizes[level]]
        scores = _approximate_scores(kernel_fn, x, points, chosen, weights, m, block_size)
        if level == 0:
            # Exactly m distinct points, drawn from an even mixture of the scores and the
            # uniform distribution: p_i >= l_i / (2 sum l) keeps the guarantee of leverage
            # sampling up to a factor 2 in m, and the uniform half keeps a tight cluster
            # whose summed score is ~1 (one large eigenvalue) from going unsampled.
            p = (scores / scores.sum().clamp(min=1e-300) + 1.0 / len(scores)) / 2
            drawn = torch.multinomial(p, m, replacement=False, generator=g)
            return points[drawn], p[drawn]
        # Keep about 2 m points for the next level (the oversampling of Musco & Musco keeps
        # ~ d_eff log d_eff; a fixed multiple of m bounds the cost of the eigenvalues below).
        p = (scores * (2 * m / scores.sum())).clamp(max=1.0)
        keep = torch.rand(len(points), generator=g, dtype=x.dtype) < p
        if int(keep.sum()) < m:  # rare: fall back to the m largest scores
            keep = torch.zeros_like(keep)
            keep[scores.topk(m).indices] = True
        chosen, weights = points[keep], p[keep].rsqrt()
    raise AssertionError("unreachable")


def _approximate_scores(kernel_fn, x: Tensor, points: Tensor, chosen: Tensor, weights: Tensor,
                        m: int, block_size: int) -> Tensor:
    """Approximate ridge-leverage scores of ``x[points]`` from the weighted landmarks
    ``x[chosen]`` (Musco & Musco 2017, eq. 4 with the weights of their Algorithm 3)."""
    xs = x[chosen]
    k_ss = kernel_fn(xs, xs)
    weighted = weights[:, None] * k_ss * weights[None, :]
    evals = torch.linalg.eigvalsh(weighted)
    top = evals[-min(m, len(evals)):].clamp(min=0).sum()
    lam = float((weighted.diagonal().sum() - top) / m)
    lam = max(lam, float(weighted.diagonal().mean()) * 1e-10)  # an exactly low-rank kernel
    a = k_ss.clone()
    a.diagonal().add_(lam / weights**2)
    chol = torch.linalg.cholesky(a)
    out = []
    for rows in points.split(block_size):
        xb = x[rows]
        k_bs = kernel_fn(xb, xs)
        z = torch.linalg.solve_triangular(chol, k_bs.T, upper=False)
        out.append((kernel_fn.diagonal(xb) - (z * z).sum(0)).clamp(min=0) / lam)
    return torch.cat(out)
