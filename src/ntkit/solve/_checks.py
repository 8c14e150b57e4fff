"""Checks and round-off scales shared by the factorisations of ``ntkit.solve``."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._checks import all_finite


def as_square(k, name: str) -> Tensor:
    """``k`` as a floating-point ``(n, n)`` tensor with finite entries (``n >= 1``).

    Symmetry is spot-checked on up to 16 rows against the matching columns (``O(n)``): the
    factorisations read only one triangle, so a non-symmetric input would otherwise be
    silently symmetrised.
    """
    if isinstance(k, np.ndarray):
        k = torch.from_numpy(k)
    if not isinstance(k, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array; got {type(k).__name__}")
    if not k.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype; got {k.dtype}")
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square (n, n) matrix; got shape "
                         f"{tuple(k.shape)}")
    if not all_finite(k):
        raise ValueError(f"{name} contains NaN or infinite entries")
    n = k.shape[0]
    rows = torch.unique(torch.linspace(0, n - 1, min(n, 16), device=k.device).long())
    gap = float((k[rows, :] - k[:, rows].T).abs().max())
    if gap > 100 * roundoff(k):
        raise ValueError(f"{name} must be symmetric; rows and columns differ by up to {gap:.3g}")
    return k


def mean_diagonal(k: Tensor) -> float:
    """Mean of the diagonal, the scale of a kernel (1.0 for an all-zero diagonal)."""
    scale = float(k.diagonal().mean())
    return scale if scale > 0 else 1.0


def roundoff(k: Tensor) -> float:
    """Round-off scale ``n * eps * max|K_ii|`` of a symmetric PSD ``(n, n)`` kernel.

    For a PSD matrix ``||K||_2 <= trace K <= n max K_ii``, and an eigenvalue computed (or a
    kernel assembled) in floating point is off by ``O(eps ||K||_2)``: a smallest eigenvalue
    above ``-roundoff(k)`` is indistinguishable from zero.
    """
    n = k.shape[0]
    top = float(k.diagonal().abs().max()) if n else 0.0
    return n * torch.finfo(k.dtype).eps * (top if top > 0 else 1.0)


def smallest_eigenvalue(k: Tensor) -> float:
    """Smallest eigenvalue of the symmetric ``k`` (computed in float64 for the report)."""
    return float(torch.linalg.eigvalsh(k.to(torch.float64))[0])
