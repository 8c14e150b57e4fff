"""Self-distillation with ground-truth guidance in kernel ridge regression (Borup & Andersen,
"Even your Teacher Needs Guidance: Ground-Truth Targets Dampen Regularization Imposed by
Self-Distillation", NeurIPS 2021).

Step 0 (the teacher) is kernel ridge regression on ``y``; step ``t >= 1`` refits it to
``alpha_t y + (1 - alpha_t) f_{t-1}(X)``, the loss ``alpha |y - f|^2 + (1 - alpha)
|f_{t-1} - f|^2`` plus ``ridge |f|_H^2`` up to a constant. Every fit is linear in ``y`` and
diagonal in the eigenbasis ``K = V diag(d) V^T``: with ``s = d / (d + ridge)``,
``f_t(X) = V diag(s u_t) V^T y`` where the target filter obeys ``u_0 = 1``,
``u_t = alpha_t + (1 - alpha_t) s u_{t-1}``. For a constant ``alpha``, with
``r = (1 - alpha) s``, ``u_t = alpha (1 - r^t) / (1 - r) + r^t`` (the paper's first result:
any step from the initial fit), and ``u_inf = alpha / (1 - r)``, so that
``s u_inf = d / (d + ridge / alpha)``: infinitely many steps are one fit with the ridge
amplified by ``1 / alpha`` (its second result). Without guidance (``alpha = 0``) the
filter ``s^{t+1}`` collapses to 0 (Mobahi et al. 2020).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._checks import real_number
from ..solve import eigh
from ._inputs import as_tensor, kernel_and_targets, test_kernel

__all__ = ["SelfDistillation", "optimal_alpha", "self_distill"]


@dataclass(frozen=True)
class SelfDistillation:
    """Fits of every self-distillation step, from :func:`self_distill`.

    **Fields:** ``alpha`` ``(steps,)`` the weight of ``y`` at steps ``1 .. steps``; ``evals``
    ``(n,)`` eigenvalues of the training kernel (ascending); ``filters`` ``(steps + 1, n)``
    and ``limit_filter`` ``(n,)`` the spectral filters ``s u_t`` (``f_t(X) = V diag(filter)
    V^T y``); ``train`` ``(steps + 1, n[, c])`` and ``limit_train`` ``(n[, c])`` the fits on the
    training inputs; ``test`` ``(steps + 1, m[, c])`` and ``limit_test`` on the test inputs
    (``None`` without ``k_test_train``). The limit is that of repeating ``alpha`` (a number)
    or the schedule's last value forever."""

    alpha: Tensor
    evals: Tensor
    filters: Tensor
    limit_filter: Tensor
    train: Tensor
    limit_train: Tensor
    test: Tensor | None
    limit_test: Tensor | None


def _alphas(alpha, steps: int, dtype: torch.dtype) -> tuple[Tensor, float]:
    """``alpha`` (a number or one per step) as a ``(steps,)`` tensor in ``[0, 1]``, and the
    weight repeated forever in the limit (the number, or the schedule's last value; 1, the
    teacher, for an empty schedule)."""
    if isinstance(alpha, (int, float, np.floating, np.integer)) and not isinstance(alpha, bool):
        value = real_number(alpha, "alpha")
        out = torch.full((steps,), value, dtype=dtype)
    elif isinstance(alpha, (Sequence, np.ndarray, Tensor)) and not isinstance(alpha, str):
        out = torch.as_tensor(np.asarray(alpha, dtype=np.float64)
                              if not isinstance(alpha, Tensor) else alpha).to(dtype)
        if out.shape != (steps,):
            raise ValueError(f"alpha must be a number or one value per step, shape "
                             f"({steps},); got shape {tuple(out.shape)}")
        if not bool(torch.isfinite(out).all()):
            raise ValueError("alpha contains NaN or infinite values")
    else:
        raise TypeError(f"alpha must be a number or a 1-D sequence of numbers; got "
                        f"{type(alpha).__name__}")
    if out.numel() and bool(((out < 0) | (out > 1)).any()):
        bad = float(out[(out < 0) | (out > 1)][0])
        raise ValueError(f"alpha must lie in [0, 1] (the weight of the ground-truth "
                         f"targets); got {bad}")
    if isinstance(alpha, (int, float, np.floating, np.integer)):
        if not 0 <= value <= 1:
            raise ValueError(f"alpha must lie in [0, 1] (the weight of the ground-truth "
                             f"targets); got {value}")
        return out, value
    return out, float(out[-1]) if out.numel() else 1.0


def _checked(k_train_train, y_train, steps, ridge) -> tuple[Tensor, Tensor, int, float]:
    k, y = kernel_and_targets(k_train_train, y_train)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0 (distillation steps after the "
                         f"teacher); got {steps!r}")
    return k, y, int(steps), real_number(ridge, "ridge", minimum=0.0)


def _inverse_filter(evals: Tensor, ridge: float) -> tuple[Tensor, Tensor]:
    """``s = d / (d + ridge)`` and ``1 / (d + ridge)`` (0 on the null space of an
    unregularised kernel, the pseudo-inverse)."""
    denom = evals + ridge
    inv = torch.where(denom > 0, 1 / torch.where(denom > 0, denom, 1.0), 0.0)
    return evals * inv, inv


def _target_filters(s: Tensor, alpha: Tensor, last: float) -> tuple[Tensor, Tensor]:
    """``u_t`` ``(steps + 1, n)`` and ``u_inf`` ``(n,)`` (module docstring)."""
    rows = [torch.ones_like(s)]
    if alpha.numel() and bool((alpha == alpha[0]).all()):
        a = float(alpha[0])
        r = (1 - a) * s
        one_minus_r = a + (1 - a) * (1 - s)  # 1 - r without cancellation when s -> 1
        t = torch.arange(1, alpha.numel() + 1, dtype=s.dtype)[:, None]
        rt = torch.where(r > 0, torch.exp(t * torch.log(torch.where(r > 0, r, 1.0))),
                         0.0)
        # sum_{j < t} r^j = (1 - r^t) / (1 - r), which is t where r = 1.
        geometric = torch.where(one_minus_r > 0, (1 - rt) / torch.where(
            one_minus_r > 0, one_minus_r, 1.0), t.expand_as(rt))
        rows += list(a * geometric + rt)
    else:
        for a in alpha.tolist():
            rows.append(a + (1 - a) * s * rows[-1])
    a = last
    one_minus_r = a + (1 - a) * (1 - s)
    # u stays 1 where r = 1 (alpha = 0 on an interpolated direction, s = 1).
    limit = torch.where(one_minus_r > 0, a / torch.where(one_minus_r > 0, one_minus_r, 1.0),
                        1.0)
    return torch.stack(rows), limit


def self_distill(k_train_train, y_train, steps: int, *, alpha, ridge: float,
                 k_test_train=None) -> SelfDistillation:
    """Kernel ridge regression self-distilled ``steps`` times with ground-truth weight
    ``alpha``, in closed form from one eigendecomposition.

    Step 0 fits ``y``; step ``t`` fits ``alpha_t y + (1 - alpha_t) f_{t-1}(X)``, each by
    ``f(x) = K(x, X) (K + ridge I)^{-1} targets`` (``ridge`` absolute, the ``lambda`` of the
    paper's objective ``|targets - f(X)|^2 + lambda |f|_H^2``). ``alpha = 1`` is plain kernel
    ridge regression at every step; ``alpha = 0`` is Mobahi et al.'s self-distillation.

    **Arguments:**

    - ``k_train_train``: ``(n, n)`` symmetric PSD kernel; ``y_train``: ``(n,)`` or ``(n, c)``.
    - ``steps``: distillation steps after the teacher (``>= 0``).
    - ``alpha``: a number in ``[0, 1]`` used at every step, or ``(steps,)`` values (e.g. from
      :func:`optimal_alpha`).
    - ``ridge``: ``>= 0``. ``k_test_train``: ``(m, n)``, for test predictions.

    **Returns:** a :class:`SelfDistillation` with the fits of steps ``0 .. steps`` and the
    infinite-step limit, on the training and test inputs.

    Example:
        >>> k = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)  # d = 1, 3
        >>> y = torch.tensor([1.0, 1.0], dtype=torch.float64)  # the d = 3 eigenvector
        >>> out = self_distill(k, y, 2, alpha=0.5, ridge=1.0)
        >>> [round(v, 12) for v in out.train[:, 0].tolist()]  # s = 3/4: s, s (1/2 + s/2), ...
        [0.75, 0.65625, 0.62109375]
        >>> round(float(out.limit_train[0]), 12)  # d / (d + ridge / alpha) = 3 / 5
        0.6
    """
    k, y, steps, ridge = _checked(k_train_train, y_train, steps, ridge)
    alpha, last = _alphas(alpha, steps, k.dtype)
    evals, evecs = eigh(k)
    s, _ = _inverse_filter(evals, ridge)
    u, u_limit = _target_filters(s, alpha.to(evals.device), last)
    coef = evecs.T @ (y[:, None] if y.ndim == 1 else y)  # (n, c)

    def fit(weights: Tensor, basis: Tensor) -> Tensor:
        """``basis @ diag(weights) @ coef`` for ``weights`` ``(..., n)``: ``(..., rows[, c])``."""
        out = torch.einsum("in,...n,nc->...ic", basis, weights, coef)
        return out[..., 0] if y.ndim == 1 else out

    _, inv = _inverse_filter(evals, ridge)
    train_basis = evecs
    test = limit_test = None
    if k_test_train is not None:
        kt = test_kernel(k_test_train, k)
        # f_t(x) = K(x, X) V diag(u_t / (d + ridge)) V^T y: the dual coefficients' filter.
        test_basis = kt @ evecs
        test, limit_test = fit(u * inv, test_basis), fit(u_limit * inv, test_basis)
    return SelfDistillation(alpha, evals, s * u, s * u_limit, fit(s * u, train_basis),
                            fit(s * u_limit, train_basis), test, limit_test)


def optimal_alpha(k_train_train, y_train, steps: int, *, ridge: float, y_ref,
                  k_ref_train=None) -> Tensor:
    """The weight of ``y`` at each step that minimises the squared error to reference targets,
    given the previous steps (a greedy schedule, exact at each step).

    Step ``t``'s fit is affine in ``alpha_t`` given ``f_{t-1}``: on the reference inputs it is
    ``c + alpha_t g`` with ``c = P (K + ridge I)^{-1} f_{t-1}(X)``,
    ``g = P (K + ridge I)^{-1} (y - f_{t-1}(X))`` (``P`` = ``K`` on the training inputs, or
    ``k_ref_train``). The risk ``|c + alpha g - y_ref|^2`` is a parabola in ``alpha``, so its
    minimiser over ``[0, 1]`` is ``clip(<g, y_ref - c> / |g|^2, 0, 1)`` (1 when ``g = 0``).
    This is the closed form of the paper's optimal weight per step with our choice of risk:
    the reference ``y_ref`` is the noise-free target at the training inputs, or held-out
    targets at other inputs (``k_ref_train``) in practice.

    **Arguments:** as :func:`self_distill`; ``y_ref`` ``(n_ref,)`` / ``(n_ref, c)``;
    ``k_ref_train`` ``(n_ref, n)`` or ``None`` for the training inputs themselves.

    **Returns:** ``(steps,)`` weights for steps ``1 .. steps``, to pass as ``alpha`` to
    :func:`self_distill`.

    Example:
        >>> k = torch.eye(2, dtype=torch.float64)  # s = 1/2: each step halves what it fits
        >>> y = torch.tensor([2.0, 0.0], dtype=torch.float64)
        >>> optimal_alpha(k, y, 1, ridge=1.0, y_ref=torch.tensor([0.75, 0.0],
        ...               dtype=torch.float64)).tolist()  # f_0 = 1; f_1 = 1/2 + alpha/2
        [0.5]
    """
    k, y, steps, ridge = _checked(k_train_train, y_train, steps, ridge)
    evals, evecs = eigh(k)
    s, inv = _inverse_filter(evals, ridge)
    basis = evecs if k_ref_train is None else test_kernel(k_ref_train, k, "k_ref_train") @ evecs
    scale = s if k_ref_train is None else inv  # on the reference inputs, per eigen-direction
    ref = as_tensor(y_ref, "y_ref", k.dtype).to(k.device)
    want = (basis.shape[0],) + tuple(y.shape[1:])
    if ref.shape != want:
        raise ValueError(f"y_ref must have shape {want} (one target per reference input); got "
                         f"{tuple(ref.shape)}")
    coef = evecs.T @ (y[:, None] if y.ndim == 1 else y)
    ref = ref[:, None] if ref.ndim == 1 else ref
    u = torch.ones_like(s)  # f_{t-1}(X) = V diag(s u) V^T y
    out = []
    for _ in range(steps):
        c = basis @ ((scale * s * u)[:, None] * coef)
        g = basis @ ((scale * (1 - s * u))[:, None] * coef)
        norm = float((g * g).sum())
        a = 1.0 if norm == 0 else float((g * (ref - c)).sum()) / norm
        a = min(max(a, 0.0), 1.0) if math.isfinite(a) else 1.0
        out.append(a)
        u = a + (1 - a) * s * u
    return torch.tensor(out, dtype=k.dtype, device=k.device)
