"""The spectrum of a kernel matrix and the scalar diagnostics read from it.

Each scalar diagnostic (:func:`condition_number`, :func:`effective_rank`, :func:`trace_norm`)
accepts either the kernel or a 1-D tensor of its eigenvalues, so that a caller who needs several
of them (``KernelTracker``, once per record) computes one eigendecomposition and derives every
scalar from ``spectrum(K).eigenvalues``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..solve import lanczos_eigsh
from ._checks import as_eigenvalues, as_kernel, flatten, psd_eigenvalues

__all__ = ["Spectrum", "condition_number", "effective_rank", "spectrum", "trace_norm"]

# The auto rule of spectrum(): the top k by Lanczos when N >= LANCZOS_MIN_N and
# k <= N / LANCZOS_MAX_FRACTION; all eigenpairs by torch.linalg.eigh otherwise (measured on
# NTK spectra at N = 2000 and 4000: see docs/analysis.md).
LANCZOS_MIN_N = 1000
LANCZOS_MAX_FRACTION = 10


class Spectrum(NamedTuple):
    """Eigenpairs of a kernel: ``eigenvalues`` ``(k,)`` descending, ``>= 0`` (round-off noise
    around 0 set to exactly 0), and ``eigenvectors`` ``(N, k)`` with orthonormal columns
    (``(N O, k)`` for a multi-output kernel, row ``i * O + a`` for example ``i``, output ``a``).
    """

    eigenvalues: Tensor
    eigenvectors: Tensor


def spectrum(K, k: int | None = None, *, method: str = "auto",
             generator: torch.Generator | None = None) -> Spectrum:
    """The top ``k`` (default all) eigenpairs of a PSD kernel matrix.

    ``method="eigh"`` computes all eigenpairs with :func:`torch.linalg.eigh` (``O(N^3)``) and
    keeps the top ``k``; ``method="lanczos"`` computes only the top ``k`` with
    :func:`ntkit.solve.lanczos_eigsh` (``O(N^2)`` per step, a few times ``k`` steps on a
    decaying kernel spectrum; residual tolerance ``1e-10`` relative in float64, ``100 eps`` in
    float32). ``"auto"`` takes Lanczos when ``k`` is given, ``N >= 1000`` and ``k <= N / 10``,
    and ``eigh`` otherwise.

    A most negative eigenvalue below ``-N eps max K_ii`` raises
    :class:`~ntkit.solve.NotPSDError` (a ``ValueError``); the Lanczos route sees only the top
    ``k`` eigenvalues, so it checks only those.

    **Arguments:**

    - ``K``: ``(N, N)`` or multi-output ``(N, N, O, O)`` (treated as the ``(N O, N O)`` matrix),
      float32/float64 tensor or NumPy array, any device.
    - ``k``: how many eigenpairs, ``1 <= k <= N`` (``N O``), or ``None`` for all.
    - ``method``: ``"auto"``, ``"eigh"`` or ``"lanczos"`` (which needs ``k``).
    - ``generator``: the Lanczos start vector's, for an exactly repeatable run.

    **Returns:** a :class:`Spectrum` ``(eigenvalues (k,), eigenvectors (N, k))``, in ``K``'s
    dtype and device.

    Example:
        >>> K = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> [round(v, 12) for v in spectrum(K).eigenvalues.tolist()]
        [3.0, 1.0]
        >>> spectrum(K, 1).eigenvectors.shape
        torch.Size([2, 1])
    """
    K = flatten(as_kernel(K, "K"))
    n = K.shape[0]
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
            raise ValueError(f"k must be None or an int in [1, N = {n}]; got {k!r}")
        k = int(k)
    if method not in ("auto", "eigh", "lanczos"):
        raise ValueError(f"method must be 'auto', 'eigh' or 'lanczos'; got {method!r}")
    if method == "lanczos" and k is None:
        raise ValueError("method='lanczos' computes the top k eigenpairs: pass k")
    if method == "auto":
        lanczos = k is not None and n >= LANCZOS_MIN_N and k * LANCZOS_MAX_FRACTION <= n
        method = "lanczos" if lanczos else "eigh"
    if method == "lanczos":
        tol = max(1e-10, 100 * torch.finfo(K.dtype).eps)
        evals, evecs = lanczos_eigsh(lambda v: K @ v, n, k, dtype=K.dtype, device=K.device,
                                     tol=tol, generator=generator)
        return Spectrum(psd_eigenvalues(evals, K, "K"), evecs)
    evals, evecs = torch.linalg.eigh(K)
    evals = psd_eigenvalues(evals, K, "K").flip(0)
    evecs = evecs.flip(1)
    if k is not None:
        evals, evecs = evals[:k], evecs[:, :k]
    return Spectrum(evals, evecs)


def _eigenvalues(K_or_eigenvalues, name: str = "K") -> Tensor:
    """The checked eigenvalues (any order) of a kernel, or the given 1-D eigenvalues."""
    x = K_or_eigenvalues
    if getattr(x, "ndim", None) == 1:
        return as_eigenvalues(x, name)
    K = flatten(as_kernel(x, name))
    return psd_eigenvalues(torch.linalg.eigvalsh(K), K, name)


def condition_number(K) -> float:
    """``lambda_max / lambda_min`` of a PSD kernel; ``inf`` when it is singular (its smallest
    eigenvalue is 0 to working precision, ``<= N eps lambda_max``).

    **Arguments:** ``K`` ``(N, N)`` or ``(N, N, O, O)``, or a 1-D tensor of all its eigenvalues
    (a top-``k`` subset gives ``lambda_1 / lambda_k`` instead).

    **Returns:** a float ``>= 1`` or ``inf`` (also for the all-zero kernel).

    Example:
        >>> condition_number(torch.diag(torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)))
        4.0
        >>> condition_number(torch.ones(2, 2, dtype=torch.float64))
        inf
    """
    evals = _eigenvalues(K)
    low = float(evals.min())
    return math.inf if low <= 0 else float(evals.max()) / low


def effective_rank(K, *, kind: str = "entropy") -> float:
    """Effective rank of a PSD kernel, between 1 and its rank.

    - ``kind="entropy"`` (Roy & Vetterli, 2007): ``exp(-sum_i p_i log p_i)`` with
      ``p_i = lambda_i / sum_j lambda_j`` (``0 log 0 = 0``).
    - ``kind="participation"``: the participation ratio
      ``(sum_i lambda_i)^2 / sum_i lambda_i^2``.

    Both equal ``r`` for ``c I_r`` padded with zeros, and the participation ratio is at most the
    entropy form.

    **Arguments:** ``K`` ``(N, N)`` or ``(N, N, O, O)``, or a 1-D tensor of its eigenvalues
    (a top-``k`` subset gives the effective rank of that truncation); ``kind``.

    **Returns:** a float.

    Example:
        >>> K = torch.diag(torch.tensor([2.0, 2.0, 2.0, 0.0], dtype=torch.float64))
        >>> round(effective_rank(K), 12), round(effective_rank(K, kind="participation"), 12)
        (3.0, 3.0)
    """
    if kind not in ("entropy", "participation"):
        raise ValueError(f"kind must be 'entropy' or 'participation'; got {kind!r}")
    evals = _eigenvalues(K)
    total = evals.sum()
    if float(total) <= 0:
        raise ValueError("K has no positive eigenvalue: the effective rank of the zero kernel "
                         "is undefined")
    if kind == "participation":
        return float(total**2 / (evals**2).sum())
    p = evals / total
    entropy = -torch.special.xlogy(p, p).sum()
    return float(torch.exp(entropy))


def trace_norm(K) -> float:
    """Trace (nuclear) norm ``sum_i |lambda_i|`` of a PSD kernel, which is its trace.

    From a matrix this is ``trace K``, read without an eigendecomposition (so ``K`` is not
    checked to be PSD); from eigenvalues, their sum after the PSD check.

    **Arguments:** ``K`` ``(N, N)`` or ``(N, N, O, O)``, or a 1-D tensor of its eigenvalues.

    **Returns:** a float ``>= 0``.

    Example:
        >>> trace_norm(torch.tensor([[2.0, 1.0], [1.0, 3.0]]))
        5.0
    """
    if getattr(K, "ndim", None) == 1:
        return float(as_eigenvalues(K, "K").sum())
    return float(flatten(as_kernel(K, "K")).diagonal().sum())
