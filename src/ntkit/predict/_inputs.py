"""Argument checks and small numerics shared by the ``ntkit.predict`` functions."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._checks import all_finite, real_number
from ..solve._checks import as_square


def as_tensor(x, name: str, dtype: torch.dtype | None = None) -> Tensor:
    """``x`` (tensor, array or number) as a finite floating-point tensor of ``dtype``."""
    if isinstance(x, np.ndarray) or isinstance(x, (int, float)) and not isinstance(x, bool):
        x = torch.as_tensor(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, numpy array or number; got "
                        f"{type(x).__name__}")
    if not (x.is_floating_point() or x.dtype in (torch.int64, torch.int32)):
        raise TypeError(f"{name} must have a real (floating-point) dtype; got {x.dtype}")
    if dtype is not None:
        x = x.to(dtype)
    if not all_finite(x):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def kernel_and_targets(k_train_train, y_train, name: str = "k_train_train"
                       ) -> tuple[Tensor, Tensor]:
    """The ``(n, n)`` training kernel and ``(n,)`` / ``(n, k)`` targets in the kernel's dtype."""
    k = as_square(k_train_train, name)
    y = as_tensor(y_train, "y_train", k.dtype).to(k.device)
    if y.ndim not in (1, 2) or y.shape[0] != k.shape[0]:
        raise ValueError(
            f"y_train must have shape (n,) or (n, outputs) with n = {k.shape[0]} rows to match "
            f"{name}; got shape {tuple(y.shape)}"
        )
    return k, y


def test_kernel(k_test_train, k: Tensor, name: str = "k_test_train") -> Tensor:
    """``k_test_train`` as an ``(m, n)`` tensor matching the ``(n, n)`` training kernel."""
    kt = as_tensor(k_test_train, name, k.dtype).to(k.device)
    if kt.ndim != 2 or kt.shape[1] != k.shape[0]:
        raise ValueError(f"{name} must have shape (m, n) with n = {k.shape[0]} training points; "
                         f"got shape {tuple(kt.shape)}")
    return kt


def outputs(value, shape: tuple[int, ...], name: str, like: Tensor) -> Tensor:
    """``value`` (a number or a tensor) broadcast to the outputs' ``shape``."""
    v = as_tensor(value, name, like.dtype).to(like.device)
    try:
        return torch.broadcast_to(v, shape)
    except RuntimeError:
        raise ValueError(f"{name} must broadcast to shape {shape}; got shape "
                         f"{tuple(v.shape)}") from None


def times(t, like: Tensor) -> tuple[Tensor, bool]:
    """``t`` (a number or a 1-D sequence of non-negative finite times) as a 1-D tensor, and
    whether it was a scalar (so that the time axis is dropped from the outputs)."""
    tt = as_tensor(t, "t", like.dtype) if not isinstance(t, (list, tuple)) else \
        as_tensor(torch.tensor(t, dtype=like.dtype), "t")
    if tt.ndim > 1:
        raise ValueError(f"t must be a number or a 1-D tensor of times; got shape "
                         f"{tuple(tt.shape)}")
    if bool((tt < 0).any()):
        raise ValueError(f"t must be >= 0 (training time in steps); got min {float(tt.min())}")
    return tt.to(like.device).reshape(-1), tt.ndim == 0


def at_times(scalar: bool, fx_train: Tensor, fx_test: Tensor | None
             ) -> tuple[Tensor, Tensor | None]:
    """The outputs ``(T, ...)`` at the times of ``times``, without the time axis when ``t``
    was a scalar."""
    if not scalar:
        return fx_train, fx_test
    return fx_train[0], None if fx_test is None else fx_test[0]


def regularizer(diag_reg, absolute: bool, k: Tensor) -> float:
    """The absolute ridge: ``diag_reg`` itself or ``diag_reg * mean(diag K)``
    (neural-tangents' ``diag_reg_absolute_scale``)."""
    diag_reg = real_number(diag_reg, "diag_reg", minimum=0.0)
    if not isinstance(absolute, bool):
        raise TypeError(f"diag_reg_absolute_scale must be a bool; got {absolute!r}")
    return diag_reg if absolute else diag_reg * float(k.diagonal().mean())


def learning_rate(value) -> float:
    """A finite learning rate ``> 0``."""
    lr = real_number(value, "learning_rate")
    if lr <= 0:
        raise ValueError(f"learning_rate must be > 0; got {lr}")
    return lr


def phi1(evals: Tensor, s: Tensor) -> Tensor:
    """``(1 - exp(-evals * s)) / evals``, equal to ``s`` at ``evals = 0``: ``(T, n)`` for
    ``(n,)`` eigenvalues and ``(T,)`` scaled times, accurate for every ``evals * s >= 0``."""
    x = evals[None, :] * s[:, None]
    small = x < 1e-8
    ratio = torch.where(small, 1 - x / 2, -torch.expm1(-x) / torch.where(small, 1.0, x))
    return ratio * s[:, None]


def check_rate(lr: float, lam_max: float, size: int, name: str = "learning_rate") -> None:
    """Raise when gradient descent at ``lr`` on the loss ``|f - y|^2 / (2 size)`` diverges."""
    if lam_max > 0 and lr * lam_max / size > 2 * (1 + 1e-12):
        raise ValueError(
            f"{name}={lr:g} is above the maximal learning rate 2 * y_train.size / "
            f"lambda_max = {2 * size / lam_max:.6g} of this kernel: gradient descent would "
            f"diverge, so the closed form would not describe it. Use a smaller learning_rate "
            f"and proportionally more steps (see ntkit.predict.max_learning_rate)"
        )
