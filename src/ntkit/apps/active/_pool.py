"""Column access to the kernel of a pool: the only thing the selection methods need.

Every method of :mod:`ntkit.apps.active` reads the kernel through :class:`PoolKernel`: its
diagonal and one column ``k(X, x_j)`` at a time, so a pool given as features or as a kernel
callable never becomes a ``(P, P)`` matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..._checks import all_finite

__all__ = ["PoolKernel", "pool_kernel"]

DIAG_CHUNK = 256
"""Rows per call of a kernel callable when its diagonal is computed (``DIAG_CHUNK^2`` entries
per call, never ``P^2``)."""


@dataclass(frozen=True)
class PoolKernel:
    """The kernel of a pool of ``n`` points, read by columns.

    ``diag`` ``(n,)`` holds ``k(x_i, x_i)``; ``columns(idx)`` returns ``k(X, X[idx])``
    ``(n, len(idx))``.
    """

    diag: Tensor
    columns: Callable[[Tensor], Tensor]

    def column(self, j: int) -> Tensor:
        """``k(X, x_j)`` ``(n,)``."""
        return self.columns(torch.tensor([j], device=self.diag.device))[:, 0]

    @property
    def n(self) -> int:
        return self.diag.shape[0]

    def sq_dists(self, j: int) -> Tensor:
        """Squared feature-space distances ``k(x,x) + k(x_j,x_j) - 2 k(x,x_j)`` ``(n,)``."""
        return self.diag + self.diag[j] - 2 * self.column(j)


def _tensor(x, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, a numpy array or a kernel callable; "
                        f"got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype; got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, (pool, features) or (pool, pool); got shape "
                         f"{tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if not all_finite(x):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return x


def pool_kernel(kernel_or_features, *, pool=None, gram: bool | None = None,
                name: str = "kernel_or_features") -> PoolKernel:
    """A :class:`PoolKernel` from features, a kernel matrix or a kernel callable.

    **Arguments:** ``kernel_or_features``: features ``(P, p)`` (linear kernel
    ``k(x, y) = phi(x) . phi(y)``), a kernel matrix ``(P, P)`` (with ``gram=True``), or a
    callable ``k(x1, x2) -> (n1, n2)`` tensor, then with ``pool`` ``(P, ...)`` its inputs.
    ``gram``: whether a 2-D tensor is the kernel matrix; ``None`` decides by shape, and a
    square symmetric tensor is then refused as ambiguous.

    **Returns:** a :class:`PoolKernel` over the ``P`` pool points.

    Example:
        >>> pk = pool_kernel(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]))
        >>> pk.diag.tolist(), pk.column(1).tolist(), pk.sq_dists(0).tolist()
        ([1.0, 2.0, 4.0], [1.0, 2.0, 2.0], [0.0, 1.0, 5.0])
        >>> pk.columns(torch.tensor([0, 2])).shape
        torch.Size([3, 2])
    """
    if callable(kernel_or_features) and not isinstance(kernel_or_features, (Tensor, np.ndarray)):
        if pool is None:
            raise ValueError(f"{name} is a kernel callable: pass its inputs as pool=(P, ...)")
        return _callable_kernel(kernel_or_features, _pool_inputs(pool), name)
    if pool is not None:
        raise ValueError(f"pool is only used with a kernel callable; {name} is a tensor")
    x = _tensor(kernel_or_features, name)
    square = x.shape[0] == x.shape[1]
    if gram is None and square and torch.allclose(x, x.T):
        raise ValueError(f"{name} is square and symmetric: say whether it is the kernel matrix "
                         f"(gram=True) or features (gram=False)")
    if gram:
        if not square:
            raise ValueError(f"{name} with gram=True must be a (P, P) kernel matrix; got shape "
                             f"{tuple(x.shape)}")
        return PoolKernel(diag=x.diagonal().clone(), columns=lambda idx: x[:, idx])
    # A batch of row dot products, not (x * x).sum(1): no (P, p) temporary.
    diag = (x[:, None, :] @ x[:, :, None]).reshape(-1)
    return PoolKernel(diag=diag, columns=lambda idx: x @ x[idx].T)


def _pool_inputs(pool) -> Tensor:
    if isinstance(pool, np.ndarray):
        pool = torch.from_numpy(pool)
    if not isinstance(pool, Tensor) or pool.ndim < 1 or pool.shape[0] == 0:
        raise ValueError(f"pool must be a non-empty tensor (P, ...); got {pool!r:.60}")
    if pool.is_floating_point() and not all_finite(pool):
        raise ValueError("pool contains NaN or infinite values")
    return pool


def _callable_kernel(k, x: Tensor, name: str) -> PoolKernel:
    def block(a: Tensor, b: Tensor) -> Tensor:
        out = k(a, b)
        if not isinstance(out, Tensor) or out.shape != (a.shape[0], b.shape[0]):
            raise ValueError(f"{name}(x1, x2) must return a ({a.shape[0]}, {b.shape[0]}) "
                             f"tensor; got {getattr(out, 'shape', type(out).__name__)}")
        return out

    diag = torch.cat([block(x[i:i + DIAG_CHUNK], x[i:i + DIAG_CHUNK]).diagonal()
                      for i in range(0, x.shape[0], DIAG_CHUNK)])
    if not all_finite(diag):
        raise ValueError(f"{name} returned NaN or infinite values on the pool")
    return PoolKernel(diag=diag, columns=lambda idx: block(x, x[idx]))
