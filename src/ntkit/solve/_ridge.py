"""Kernel ridge regression with a ridge relative to the mean diagonal, and one-hot targets."""

from __future__ import annotations

import torch
from torch import Tensor

from ._cholesky import cho_solve

__all__ = ["centred_one_hot", "kernel_ridge"]


def kernel_ridge(k_train_train: Tensor, targets: Tensor, *, alpha: float) -> Tensor:
    """Dual coefficients ``(K + alpha * mean(diag K) * I)^{-1} targets`` by Cholesky.

    The ridge is relative to the mean diagonal of ``K`` (plain ``alpha`` if that is 0), so
    it does not depend on the kernel's scale; predictions are ``K(x, X_train) @ coef``.

    **Arguments:** ``k_train_train`` ``(n, n)`` symmetric PSD; ``targets`` ``(n,)`` or
    ``(n, k)``; ``alpha >= 0``.

    **Returns:** ``(n, k)`` coefficients (``(n, 1)`` for 1-D targets), in the kernel's dtype.

    Example:
        >>> k = 2 * torch.eye(3, dtype=torch.float64)  # ridge 1 x mean diagonal 2: (4 I)^-1
        >>> kernel_ridge(k, torch.ones(3, dtype=torch.float64), alpha=1.0).flatten().tolist()
        [0.25, 0.25, 0.25]
    """
    scale = float(k_train_train.diagonal().mean())
    reg = alpha * (scale if scale > 0 else 1.0)
    a = k_train_train.clone()
    a.diagonal().add_(reg)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        raise ValueError(
            f"the training kernel plus alpha={alpha!r} x its mean diagonal is not positive "
            f"definite (duplicate inputs?); increase alpha"
        )
    rhs = targets.to(a.dtype)
    return cho_solve(chol, rhs[:, None] if rhs.ndim == 1 else rhs)


def centred_one_hot(codes: Tensor, n_classes: int) -> Tensor:
    """``(n, n_classes)`` one-hot targets of integer ``codes`` minus ``1 / n_classes``."""
    return torch.nn.functional.one_hot(codes.long(), n_classes).double() - 1.0 / n_classes
