"""Gradient descent on any loss in function space, by integrating its ODE (Lee et al. 2019,
section 2.2), and the largest stable learning rate."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.integrate
import scipy.linalg
import scipy.sparse.linalg
import torch
from torch import Tensor

from .._checks import real_number
from ..solve._checks import as_square
from ._inputs import at_times, check_rate, kernel_and_targets, outputs, test_kernel, times
from ._inputs import learning_rate as check_learning_rate

__all__ = ["ODEPredictor", "gradient_descent", "max_learning_rate"]

LOSSES = ("mse", "cross_entropy")


def _loss_grad(loss) -> Callable[[Tensor, Tensor], Tensor]:
    """``dL/df`` of a named loss (closed form) or of a callable ``loss(fx, y) -> scalar``."""
    if loss == "mse":
        return lambda f, y: (f - y) / y.numel()
    if loss == "cross_entropy":
        # L = -sum(y * log_softmax(f)) / y.size; its gradient softmax(f) sum_c y_c - y.
        return lambda f, y: (torch.softmax(f, -1) * y.sum(-1, keepdim=True) - y) / y.numel()
    if isinstance(loss, str) or not callable(loss):
        raise ValueError(f"loss must be one of {LOSSES} or a callable loss(fx, y) -> scalar; "
                         f"got {loss!r}")

    def grad(f: Tensor, y: Tensor) -> Tensor:
        with torch.enable_grad():
            f = f.detach().requires_grad_(True)
            value = loss(f, y)
            if not isinstance(value, Tensor) or value.numel() != 1:
                raise ValueError("loss(fx, y) must return a scalar tensor")
            return torch.autograd.grad(value, f)[0]

    return grad


class ODEPredictor:
    """Made by :func:`gradient_descent`; call
    ``predict(t, fx_train_0=0.0, fx_test_0=0.0, k_test_train=None)``."""

    def __init__(self, loss, k_train_train, y_train, *, learning_rate: float,
                 momentum: float | None, rtol: float, atol: float, method: str):
        self._grad = _loss_grad(loss)
        self.loss = loss
        self.k_train_train, self.y_train = kernel_and_targets(k_train_train, y_train)
        if loss == "cross_entropy" and self.y_train.ndim != 2:
            raise ValueError("loss='cross_entropy' needs y_train of shape (n, classes) (class "
                             "probabilities, e.g. one-hot); got shape "
                             f"{tuple(self.y_train.shape)}")
        self.learning_rate = check_learning_rate(learning_rate)
        if momentum is not None:
            momentum = real_number(momentum, "momentum", minimum=0.0)
            if momentum >= 1:
                raise ValueError(f"momentum must be in [0, 1); got {momentum}")
        self.momentum = momentum
        self.rtol, self.atol, self.method = rtol, atol, method
        if loss == "mse":
            lam = _largest_eigenvalue(self.k_train_train)
            check_rate(self.learning_rate / (1 + (momentum or 0.0)), lam, self.y_train.numel())

    def __call__(self, t, fx_train_0=0.0, fx_test_0=0.0, k_test_train=None
                 ) -> tuple[Tensor, Tensor | None]:
        """Train and test outputs at time(s) ``t``.

        **Arguments:** ``t`` a number or 1-D tensor of ``T`` times in steps (``>= 0``, finite:
        a general loss need not converge); ``fx_train_0``, ``fx_test_0``, ``k_test_train`` as
        in :func:`gradient_descent_mse`.

        **Returns:** ``(fx_train_t, fx_test_t)`` of shapes ``y_train.shape`` and
        ``(m,) + y_train.shape[1:]``, with a leading ``T`` axis for 1-D ``t``; ``fx_test_t``
        is ``None`` without ``k_test_train``.
        """
        if t is None:
            raise ValueError("t=None (convergence) is not defined for a general loss (e.g. "
                             "cross-entropy on separable data never converges); pass finite "
                             "times, or use gradient_descent_mse for MSE")
        k, y = self.k_train_train, self.y_train
        tt, scalar = times(t, k)
        f0 = outputs(fx_train_0, tuple(y.shape), "fx_train_0", k).reshape(y.shape[0], -1)
        kt = None
        if k_test_train is not None:
            kt = test_kernel(k_test_train, k)
            ft0 = outputs(fx_test_0, (kt.shape[0],) + tuple(y.shape[1:]), "fx_test_0", k)
            ft0 = ft0.reshape(kt.shape[0], -1)
        elif not (isinstance(fx_test_0, (int, float)) and fx_test_0 == 0):
            raise ValueError("fx_test_0 was given without k_test_train")
        n, c = f0.shape
        m = 0 if kt is None else kt.shape[0]
        y2 = y.reshape(n, c)
        state0 = [f0] + ([ft0] if kt is not None else [])
        heavy = self.momentum is not None
        if heavy:
            state0 = state0 + [torch.zeros_like(s) for s in state0]
        state0 = torch.cat([s.reshape(-1) for s in state0]).double().cpu().numpy()
        # Time in units of the ODE: eta t for gradient flow; sqrt(eta) t for heavy-ball
        # momentum, whose continuous limit is f'' = -K dL/df - (1 - mu) / sqrt(eta) f'
        # (neural-tangents' convention).
        unit = math.sqrt(self.learning_rate) if heavy else self.learning_rate
        friction = (1 - (self.momentum or 0.0)) / math.sqrt(self.learning_rate)
        kd = k.double().cpu()
        ktd = None if kt is None else kt.double().cpu()
        yd = y2.double().cpu()
        grad = self._grad

        def rhs(_s, state):
            z = torch.from_numpy(state)
            g = grad(z[: n * c].reshape(n, c), yd)
            drift = [-(kd @ g)] + ([-(ktd @ g)] if ktd is not None else [])
            drift = torch.cat([d.reshape(-1) for d in drift])
            if not heavy:
                return drift.numpy()
            size = (n + m) * c
            q = z[size:]
            return torch.cat([q, drift - friction * q]).numpy()

        s_eval = (tt * unit).double().cpu().numpy()
        order = np.argsort(s_eval)
        s_sorted = s_eval[order]
        if s_sorted[-1] > 0:
            sol = scipy.integrate.solve_ivp(rhs, (0.0, float(s_sorted[-1])), state0,
                                            method=self.method, t_eval=s_sorted,
                                            rtol=self.rtol, atol=self.atol)
            if sol.status != 0:
                raise RuntimeError(f"the ODE integrator failed: {sol.message}")
            path = np.empty_like(sol.y.T)
            path[order] = sol.y.T
        else:
            path = np.tile(state0, (len(s_eval), 1))
        path = torch.from_numpy(path).to(dtype=k.dtype, device=k.device)
        fx_train = path[:, : n * c].reshape((-1,) + tuple(y.shape))
        fx_test = None
        if kt is not None:
            fx_test = path[:, n * c: (n + m) * c].reshape((-1, m) + tuple(y.shape[1:]))
        return at_times(scalar, fx_train, fx_test)


def gradient_descent(
    loss,
    k_train_train,
    y_train,
    *,
    learning_rate: float = 1.0,
    momentum: float | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    method: str = "RK45",
) -> ODEPredictor:
    """Outputs of gradient descent on any loss, by integrating the function-space ODE.

    For small ``learning_rate`` ``eta``, the outputs of a linearised network follow
    ``df/dt = -eta K dL/df`` (``t`` in steps); with heavy-ball ``momentum`` ``mu``,
    ``f'' = -K dL/df - (1 - mu) / sqrt(eta) f'`` in units of ``sqrt(eta)`` steps
    (neural-tangents' convention). Test outputs follow with ``K_td`` in place of ``K``.

    The ODE is integrated by ``scipy.integrate.solve_ivp`` (``method="RK45"``, the adaptive
    Dormand-Prince pair with local error control, as neural-tangents' ``odeint``; ``"LSODA"``
    or ``"BDF"`` suit very long horizons, where the flow is stiff) at tolerances ``rtol``,
    ``atol``, in float64 on the CPU; each step costs a few ``(n, n) @ (n, outputs)``
    products.

    **Arguments:**

    - ``loss``: ``"mse"`` (``|f - y|^2 / (2 y.size)``, the loss of
      :func:`gradient_descent_mse`), ``"cross_entropy"``
      (``-sum(y * log_softmax(f)) / y.size``, i.e. neural-tangents' mean over samples and
      classes; ``y`` ``(n, classes)`` probabilities), or a callable ``loss(fx, y) -> scalar``
      (differentiated by autograd).
    - ``k_train_train``: ``(n, n)`` NTK; ``y_train``: ``(n,)`` or ``(n, outputs)``.
    - ``learning_rate``: ``eta > 0`` (for ``"mse"``, checked against
      :func:`max_learning_rate`); ``momentum``: ``None`` or ``mu`` in ``[0, 1)``.

    **Returns:** an :class:`ODEPredictor`
    ``predict(t, fx_train_0=0, fx_test_0=0, k_test_train=None) -> (fx_train_t, fx_test_t)``.

    Example:
        >>> k = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> y = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        >>> predict = gradient_descent("cross_entropy", k, y, learning_rate=1.0)
        >>> fx_train, _ = predict(torch.tensor([0.0, 100.0]))
        >>> bool((fx_train[1].argmax(1) == torch.tensor([0, 1])).all())
        True
    """
    return ODEPredictor(loss, k_train_train, y_train, learning_rate=learning_rate,
                        momentum=momentum, rtol=rtol, atol=atol, method=method)


def _largest_eigenvalue(k: Tensor) -> float:
    n = k.shape[0]
    a = k.detach().double().cpu().numpy()
    if n <= 1000:
        return float(scipy.linalg.eigh(a, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0])
    # Lanczos: O(n^2) per iteration instead of the O(n^3) of a dense eigensolver.
    return float(scipy.sparse.linalg.eigsh(a, k=1, which="LA", return_eigenvectors=False)[0])


def max_learning_rate(k_train_train, y_train_size: int | None = None, *,
                      momentum: float = 0.0) -> float:
    """Largest learning rate at which gradient descent on ``|f - y|^2 / (2 y_train_size)``
    converges: ``2 (1 + momentum) y_train_size / lambda_max(K)``.

    One step multiplies the residual by ``I - eta K / y_train_size``, a contraction iff
    ``eta < 2 y_train_size / lambda_max``; heavy-ball momentum ``mu`` widens it by ``1 + mu``
    (Goh 2017, "Why Momentum Really Works").

    **Arguments:** ``k_train_train`` ``(n, n)`` NTK; ``y_train_size`` the number of outputs
    ``n * outputs`` (default ``n``); ``momentum`` in ``[0, 1)``.

    **Returns:** the rate (``inf`` for an all-zero kernel).

    Example:
        >>> max_learning_rate(torch.eye(3, dtype=torch.float64) * 4, 6)
        3.0
    """
    k = as_square(k_train_train, "k_train_train")
    size = k.shape[0] if y_train_size is None else y_train_size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"y_train_size must be a positive int; got {y_train_size!r}")
    momentum = real_number(momentum, "momentum", minimum=0.0)
    if momentum >= 1:
        raise ValueError(f"momentum must be in [0, 1); got {momentum}")
    lam = _largest_eigenvalue(k)
    return math.inf if lam <= 0 else 2 * (1 + momentum) * int(size) / lam
