"""The one check of a kernel argument of ``ntkit.analysis``, and of the things derived from it.

Every analysis function that takes a kernel matrix calls :func:`as_kernel`; every one that takes
eigenvalues instead calls :func:`as_eigenvalues`; the PSD rule on computed eigenvalues is
:func:`psd_eigenvalues` (the rule of :func:`ntkit.solve.eigh`, with its round-off scales).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._checks import all_finite
from ..solve import NotPSDError
from ..solve._checks import roundoff

# A kernel entry is a dot product (of features, Jacobians or covariances); two entries computed
# by different paths, K_ij by one GEMM block and K_ji by another, differ by the round-off of a
# sum of p terms, about sqrt(p) eps |x_i| |x_j| <= sqrt(p) eps max|K| for a Gram matrix. With
# p up to ~1e6 (an empirical NTK's parameter count) that is 1e3 eps max|K|: beyond it, the
# matrix is not a kernel that lost a few bits, it is not symmetric.
SYMMETRY_TOLERANCE = 1e3


def as_float_tensor(x, name: str) -> Tensor:
    """``x`` (a tensor or NumPy array, float32 or float64) as a tensor, without a copy when it
    already is one; a ``TypeError`` naming ``name`` otherwise."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array; got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64; got {x.dtype}")
    return x


def as_kernel(k, name: str = "K", *, multi_output: bool = True) -> Tensor:
    """``k`` checked as a kernel matrix, in its own layout: ``(N, N)`` or ``(N, N, O, O)``.

    **Arguments:** ``k`` a tensor or NumPy array, ``(N, N)``, or (with ``multi_output``) a
    multi-output kernel ``(N, N, O, O)``, float32 or float64, on any device; ``name`` names the
    argument in errors.

    **Returns:** ``k`` as a tensor (no copy when it already is one), after checking that it is
    non-empty, finite and symmetric: ``max|K - K^T| <= 1e3 * eps * max|K|`` (for a 4-D kernel,
    ``K[i, j, a, b] = K[j, i, b, a]``). Use :func:`flatten` for the ``(N O, N O)`` matrix.
    """
    k = as_float_tensor(k, name)
    square = k.ndim == 2 and k.shape[0] == k.shape[1]
    multi = k.ndim == 4 and k.shape[0] == k.shape[1] and k.shape[2] == k.shape[3]
    if not (square or (multi and multi_output)):
        want = "(N, N) or a multi-output (N, N, O, O)" if multi_output else "(N, N)"
        extra = ("; this function needs a kernel between examples, not a multi-output kernel "
                 "(pass e.g. its trace over outputs, K.diagonal(dim1=2, dim2=3).sum(-1))"
                 if multi else "")
        raise ValueError(f"{name} must be a square kernel matrix {want}; got shape "
                         f"{tuple(k.shape)}{extra}")
    if k.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(k.shape)}")
    if not all_finite(k):
        raise ValueError(f"{name} contains NaN or infinite entries")
    _check_symmetric(k, name)
    return k


def flatten(k: Tensor) -> Tensor:
    """A multi-output kernel ``(N, N, O, O)`` as the ``(N O, N O)`` matrix with index
    ``(i, a) -> i * O + a``; an ``(N, N)`` kernel unchanged."""
    if k.ndim == 2:
        return k
    n, _, o, _ = k.shape
    return k.permute(0, 2, 1, 3).reshape(n * o, n * o)


def _check_symmetric(k: Tensor, name: str) -> None:
    """``K[i, j] = K[j, i]`` (``K[i, j, a, b] = K[j, i, b, a]``) up to the tolerance, compared
    a block of rows against the matching columns at a time (~4M entries), never a full copy."""
    n = k.shape[0]
    eps = torch.finfo(k.dtype).eps
    tol = SYMMETRY_TOLERANCE * eps * max(float(k.max()), -float(k.min()))
    step = max(1, (1 << 22) // (k.numel() // n))
    gap = 0.0
    for start in range(0, n, step):
        rows = k[start:start + step]
        cols = k[:, start:start + step].transpose(0, 1)
        if k.ndim == 4:
            cols = cols.transpose(2, 3)
        gap = max(gap, float((rows - cols).abs().max()))
    if gap > tol:
        raise ValueError(
            f"{name} must be symmetric: max|K - K^T| = {gap:.3g} exceeds the tolerance "
            f"1e3 * eps * max|K| = {tol:.3g} (symmetrise it, e.g. (K + K.T) / 2, if the "
            f"asymmetry is expected)"
        )


def psd_eigenvalues(evals: Tensor, k: Tensor, name: str) -> Tensor:
    """Eigenvalues ``evals`` (any order) of the flattened kernel ``k``, checked to be PSD.

    The rule of :func:`ntkit.solve.eigh`: an eigenvalue below ``-n eps max K_ii`` (the
    round-off scale of a PSD kernel) raises :class:`~ntkit.solve.NotPSDError` (a
    ``ValueError``) naming it, and eigenvalues at or below ``n eps lambda_max`` are set to 0.
    """
    tol = roundoff(k)
    lam = float(evals.min())
    if lam < -tol:
        raise NotPSDError(
            f"{name} is not positive semi-definite beyond round-off: its most negative "
            f"eigenvalue is {lam:.6g} (round-off scale n * eps * max K_ii = {tol:.3g})"
        )
    return _zero_noise(evals, k.shape[0])


def as_eigenvalues(evals, name: str) -> Tensor:
    """A 1-D tensor of eigenvalues of a PSD kernel, checked and with noise set to 0.

    Without the matrix, the round-off scale is ``n eps max|lambda|``: an eigenvalue below
    its negative raises, one at or below its positive is set to 0.
    """
    evals = as_float_tensor(evals, name)
    if evals.ndim != 1 or evals.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor of eigenvalues; got shape "
                         f"{tuple(evals.shape)}")
    if not all_finite(evals):
        raise ValueError(f"{name} contains NaN or infinite values")
    tol = evals.numel() * torch.finfo(evals.dtype).eps * float(evals.abs().max())
    lam = float(evals.min())
    if lam < -tol:
        raise NotPSDError(
            f"{name} must be the eigenvalues of a PSD kernel; the most negative is {lam:.6g}, "
            f"beyond the round-off scale n * eps * max|lambda| = {tol:.3g}"
        )
    return _zero_noise(evals, evals.numel())


def _zero_noise(evals: Tensor, n: int) -> Tensor:
    """Eigenvalues at or below ``n eps lambda_max`` (the rank rule of
    :func:`ntkit.solve.rank_tolerance`, ``n`` the matrix size) set to 0: they are rounding
    noise around 0, and negative noise would break ``log`` and ratios."""
    top = max(float(evals.max()), 0.0)
    tol = n * torch.finfo(evals.dtype).eps * top
    return evals.masked_fill(evals <= tol, 0.0)
