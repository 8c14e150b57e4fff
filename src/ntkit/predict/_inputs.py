"""Argument checks and small numerics shared by the ``ntkit.predict`` functions."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._checks import all_finite, real_number
from ..solve._checks import as_square


def as_tensor(x, name: str, dtype: torch.dtype | None = None) -> Tensor:
    """``x`` (tensor, array or number) as a finite floating-point tensor of ``dtype``.

    A Python number is converted straight to ``dtype`` (not through the default float32,
    which would round ``0.3`` and overflow ``1e300``)."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        x = torch.tensor(x, dtype=dtype or torch.get_default_dtype())
    elif isinstance(x, np.ndarray):
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
    """``t`` (a number or a 1-D sequence of non-negative finite times) as a 1-D tensor in
    ``like``'s dtype, and whether it was a scalar (so that the time axis is dropped from the
    outputs)."""
    if isinstance(t, (list, tuple, int, float, np.ndarray, np.number)) and not isinstance(t, bool):
        try:
            t64 = np.asarray(t, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"t must be a number or a 1-D sequence of numbers within the "
                             f"float64 range; got {str(t)[:80]}") from None
        top = torch.finfo(like.dtype).max
        if np.isfinite(t64).all() and (np.abs(t64) > top).any():
            raise ValueError(f"t={float(np.abs(t64).max()):g} overflows the kernel's dtype "
                             f"{str(like.dtype).removeprefix('torch.')} (largest {top:.3g}): "
                             f"times are kept in the kernel's dtype; use a float64 kernel")
        t = float(t) if isinstance(t, (int, float)) else t64
    tt = as_tensor(t, "t", like.dtype)
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


def decay(evals: Tensor, s: Tensor) -> Tensor:
    """``exp(-evals * s)``: ``(T, n)`` for ``(n,)`` eigenvalues and ``(T,)`` scaled times; 1 on
    the null space (``evals = 0``, whatever ``s``), where the residual never moves."""
    return torch.where(evals == 0, 1.0, torch.exp(-evals[None, :] * s[:, None]))


def phi1(evals: Tensor, s: Tensor) -> Tensor:
    """``(1 - exp(-evals * s)) / evals``: ``(T, n)`` for ``(n,)`` eigenvalues and ``(T,)``
    scaled times, accurate for every ``evals * s >= 0`` (up to ``1 / evals`` as ``s -> inf``).

    It is 0 on the null space (``evals = 0``, see :func:`ntkit.solve.eigh`) rather than its
    limit ``s``: a test kernel consistent with the training kernel (jointly PSD) is orthogonal
    to that space, so those directions contribute nothing in exact arithmetic, and ``s`` would
    only multiply rounding error by the time."""
    x = evals[None, :] * s[:, None]
    null = evals == 0
    small = x < 1e-8
    tail = -torch.expm1(-x) / torch.where(null, 1.0, evals)
    out = torch.where(small, (1 - x / 2) * s[:, None], tail)
    return torch.where(null, 0.0, out)


def check_rate(lr: float, lam_max: float, size: int, name: str = "learning_rate") -> None:
    """Raise when gradient descent at ``lr`` on the loss ``|f - y|^2 / (2 size)`` diverges."""
    if lam_max > 0 and lr * lam_max / size > 2 * (1 + 1e-12):
        raise ValueError(
            f"{name}={lr:g} is above the maximal learning rate 2 * y_train.size / "
            f"lambda_max = {2 * size / lam_max:.6g} of this kernel: gradient descent would "
            f"diverge, so the closed form would not describe it. Use a smaller learning_rate "
            f"and proportionally more steps (see ntkit.predict.max_learning_rate)"
        )
