"""Kernel ridge regression at scale: the exact solve, the Nyström estimator solved directly,
and FALKON (Nyström-preconditioned conjugate gradients, :mod:`ntkit.solve._falkon`).

One ridge convention throughout, FALKON's: ``lambda`` per example, so the exact estimator
solves ``(K + lambda n I) alpha = y`` and the Nyström one ``(K_nM^T K_nM + lambda n K_MM) a =
K_nM^T y``; both minimise ``(1/n) sum_i (f(x_i) - y_i)^2 + lambda ||f||^2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .._bytes import parse_bytes
from .._checks import all_finite, as_inputs
from .._random import torch_generator
from ._cholesky import cho_solve, cholesky
from ._falkon import BlockData, falkon, gram_products, stream
from ._landmarks import as_kernel_fn, sample_landmarks

__all__ = ["KRRModel", "METHODS", "krr"]

METHODS = ("exact", "nystrom_pcg", "nystrom_direct")
# Kernel entries per streamed block when block_size is not given: 128 MiB of float64. Each
# block is one kernel call, whose fixed cost (planning, checks, buffers) was a fifth of a
# 1024 x 4096 call's time; at 2^24 entries it is a twentieth.
_BLOCK_ENTRIES = 1 << 24


@dataclass
class KRRModel:
    """A fitted kernel ridge regressor: ``f(x) = k(x, centers) @ coef``.

    ``centers`` ``(M, d)`` are the landmarks (all training inputs for ``"exact"``),
    ``landmark_indices`` their rows in the training inputs, ``coef`` ``(M, c)``;
    ``iterations`` and ``residuals`` (relative, after each iteration) are FALKON's.
    """

    kernel_fn: object
    centers: Tensor
    coef: Tensor
    landmark_indices: Tensor | None
    method: str
    ridge: float
    vector: bool
    iterations: int = 0
    residuals: list[float] = field(default_factory=list)

    def predict(self, x, *, block_size: int | None = None) -> Tensor:
        """Predictions ``(N,)`` (``(N, c)`` for 2-D targets) at ``x`` ``(N, d)``, computed
        ``block_size`` rows at a time (default: ``2^24 / M`` rows)."""
        x = _as_x(x, "x", self.centers)
        block_size = block_size or _default_block(len(self.centers))
        out = torch.cat([self.kernel_fn(b, self.centers) @ self.coef
                         for b in x.split(block_size)])
        return out[:, 0] if self.vector else out


def krr(kernel, X, y, *, method: str = "nystrom_pcg", landmarks=1000, sampling: str = "uniform",
        ridge: float = 1e-6, get: str = "ntk", tol: float = 1e-8, max_iter: int = 100,
        block_size: int | None = None, max_memory: int | str = "1GiB", executor=None,
        timeout: float = 30.0,
        progress: bool = True, random_state=None) -> KRRModel:
    """Kernel ridge regression of ``y`` on ``X``, exactly or by Nyström with ``M`` landmarks.

    **Arguments:**

    - ``kernel``: an ``ntkit.layers`` network (its ``get`` kernel, ``"ntk"`` or ``"nngp"``) or
      a callable ``k(x1, x2)`` mapping ``(N1, d)``, ``(N2, d)`` tensors to ``(N1, N2)``.
    - ``X`` ``(n, d)`` and ``y`` ``(n,)`` or ``(n, c)``: tensors or arrays, finite.
    - ``method``: ``"exact"`` (Cholesky of the ``n x n`` kernel, ``O(n^2)`` memory);
      ``"nystrom_pcg"`` (FALKON, Rudi et al. 2017: ``O(n M)`` kernel entries per CG
      iteration, streamed in blocks, memory ``O(block * M + M^2)``); ``"nystrom_direct"`` (one
      streamed pass accumulating ``K_nM^T K_nM``, then a Cholesky solve of the same system:
      ``O(n M^2)`` flops, the same memory).
    - ``landmarks``: the number ``M`` of landmarks drawn from ``X`` (``1 <= M <= n``), or the
      landmark points themselves ``(M, d)``.
    - ``sampling``: ``"uniform"`` or ``"rls"`` (recursive ridge-leverage scores of Musco &
      Musco 2017; see ``ntkit.solve._landmarks``). With ``"rls"``, FALKON's preconditioner
      is weighted by the landmarks' sampling probabilities (Rudi et al. 2018; see
      ``ntkit.solve._falkon``); landmarks given as points use the plain one.
    - ``ridge``: ``lambda >= 0`` per example (module docstring).
    - ``tol``, ``max_iter``: FALKON stops at relative residual ``tol`` of its preconditioned
      system, or after ``max_iter`` iterations with a ``CGConvergenceWarning``.
    - ``block_size``: rows of ``X`` per kernel block (default ``2^24 / M``).
    - ``max_memory``: bytes (an int, or a string such as ``"1GiB"``) that FALKON may spend
      keeping the blocks of ``K_nM`` between iterations when it runs in this process
      (``executor=None``): if all of ``K_nM`` fits, each block is computed once instead of once
      per iteration — for ntkit's kernels, whose entries cost hundreds of flops each, that is
      most of FALKON's time (``bench/_features_krr.py``). Default 1 GiB (``N = 20 000`` at
      ``M = 4 000`` in float64 fits). ``0``: nothing is kept, memory ``O(block * M + M^2)``.
    - ``executor``: where blocks run, as for ``ntkit.tiles.compute``: ``None`` (this
      process), ``"processes"``, ``"dask"`` (a 2-worker LocalCluster), a scheduler address
      ``"tcp://host:8786"`` (``TimeoutError`` if none answers within ``timeout`` seconds) or a
      ``distributed.Client``.
    - ``progress``: a tqdm bar per FALKON iteration; ``random_state``: as for the feature maps
      (``None``: seeded from torch's global generator; an int; a NumPy random state; or a
      ``torch.Generator``), for the landmarks.

    **Returns:** a :class:`KRRModel`; ``model.predict(X_new)`` streams blocks too.

    Example:
        >>> from ntkit import layers as L
        >>> net = L.serial(L.Dense(1, b_std=0.1), L.ReLU(), L.Dense(1, b_std=0.1))
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.randn(300, 3, generator=g, dtype=torch.float64)
        >>> y = X[:, 0].sin()
        >>> fast = krr(net, X, y, landmarks=50, ridge=1e-4, tol=1e-10, progress=False,
        ...            random_state=1)
        >>> slow = krr(net, X, y, method="nystrom_direct", landmarks=fast.centers,
        ...            ridge=1e-4)
        >>> bool(torch.allclose(fast.predict(X), slow.predict(X), rtol=0, atol=1e-8))
        True
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if not (isinstance(ridge, (int, float)) and ridge >= 0 and np.isfinite(ridge)):
        raise ValueError(f"ridge must be a finite number >= 0; got {ridge!r}")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a number > 0; got {tol!r}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be an int >= 1; got {max_iter!r}")
    if block_size is not None and not (isinstance(block_size, int) and block_size >= 1):
        raise ValueError(f"block_size must be an int >= 1 or None; got {block_size!r}")
    zero = (isinstance(max_memory, (int, np.integer)) and not isinstance(max_memory, bool)
            and max_memory == 0)
    max_memory = 0 if zero else parse_bytes(max_memory, "max_memory")
    kernel_fn = as_kernel_fn(kernel, get=get)
    x = as_inputs(X, "X")
    if x.ndim != 2:
        raise ValueError(f"X must have shape (n, d); got {tuple(x.shape)}")
    targets, vector = _as_targets(y, x)
    n = x.shape[0]
    if method == "exact":
        k = kernel_fn(x, x)
        chol, _ = cholesky(k, diag_reg=ridge * n, name="k(X, X)")
        return KRRModel(kernel_fn, x, cho_solve(chol, targets), None, method, ridge, vector)

    centers, idx, probs = _landmarks(kernel_fn, x, landmarks, sampling, random_state)
    m = centers.shape[0]
    block_size = min(block_size or _default_block(m), n)
    k_mm = kernel_fn(centers, centers)
    from ..tiles._executors import InProcess, make_executor

    ex = make_executor(executor, workers=None, timeout=timeout)
    keep = (isinstance(ex, InProcess) and method == "nystrom_pcg"
            and n * m * x.element_size() <= max_memory)
    data = BlockData(kernel_fn, x, targets, centers, block_size, {} if keep else None)
    if not hasattr(ex, "map_calls"):
        raise TypeError(f"executor must support share/map_calls (an ntkit.tiles executor); got "
                        f"{type(ex).__name__}")
    with ex:
        shared = ex.share(data)
        if method == "nystrom_direct":
            coef = _direct(stream(ex, shared, gram_products, n, block_size), k_mm, ridge * n)
            return KRRModel(kernel_fn, centers, coef, idx, method, ridge, vector)
        # Uniform landmarks keep the paper's plain preconditioner (D = I exactly); RLS ones
        # weight it by their sampling probabilities (Rudi et al. 2018, see _falkon).
        coef, its, res = falkon(ex, shared, n=n, k_mm=k_mm, ridge=ridge, block_size=block_size,
                                tol=tol, max_iter=max_iter, progress=progress,
                                probabilities=probs if sampling == "rls" else None)
    return KRRModel(kernel_fn, centers, coef, idx, method, ridge, vector, its, res)


def _direct(parts: list, k_mm: Tensor, reg: float) -> Tensor:
    """``(G + reg K_MM)^-1 b`` from the blocks' ``(K_b^T K_b, K_b^T y_b)``, solved in the
    coordinates ``u = T a`` (``T^T T = K_MM``), where the system ``T^-T G T^-1 + reg I`` is
    well conditioned for ``reg > 0`` whatever ``K_MM``'s condition number."""
    gram = sum(p[0] for p in parts)
    rhs = sum(p[1] for p in parts)
    t_low, _ = cholesky(k_mm, name="k(landmarks, landmarks)")
    s = torch.linalg.solve_triangular(t_low, gram, upper=False)
    s = torch.linalg.solve_triangular(t_low, s.T, upper=False)
    s = (s + s.T) / 2
    chol, _ = cholesky(s, diag_reg=reg, name="T^-T K_nM^T K_nM T^-1")
    u = cho_solve(chol, torch.linalg.solve_triangular(t_low, rhs, upper=False))
    return torch.linalg.solve_triangular(t_low.T, u, upper=True)


def _landmarks(kernel_fn, x: Tensor, landmarks, sampling: str, random_state):
    if isinstance(landmarks, (Tensor, np.ndarray)):
        centers = _as_x(landmarks, "landmarks", x)
        if centers.shape[0] > x.shape[0]:
            raise ValueError(f"landmarks must be at most the number of inputs N={x.shape[0]}; "
                             f"got {centers.shape[0]} points")
        return centers, None, None
    if not isinstance(landmarks, (int, np.integer)) or isinstance(landmarks, bool):
        raise TypeError(f"landmarks must be an int or an (M, d) array of points; got "
                        f"{type(landmarks).__name__}")
    idx, probs = sample_landmarks(kernel_fn, x, int(landmarks), sampling=sampling,
                                  generator=torch_generator(random_state),
                                  return_probabilities=True)
    return x[idx], idx, probs


def _as_x(x, name: str, like: Tensor) -> Tensor:
    x = as_inputs(x, name).to(like.dtype)
    if x.ndim != 2 or x.shape[1] != like.shape[1]:
        raise ValueError(f"{name} must have shape (N, {like.shape[1]}); got {tuple(x.shape)}")
    return x


def _as_targets(y, x: Tensor) -> tuple[Tensor, bool]:
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y)
    if not y.is_floating_point():
        y = y.to(x.dtype)
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape (n,) or (n, c) with n={x.shape[0]} rows of X; got "
                         f"{tuple(y.shape)}")
    if not all_finite(y):
        raise ValueError("y contains NaN or infinite values")
    y = y.to(x.dtype)
    return (y[:, None], True) if y.ndim == 1 else (y, False)


def _default_block(m: int) -> int:
    return max(1, _BLOCK_ENTRIES // m)
