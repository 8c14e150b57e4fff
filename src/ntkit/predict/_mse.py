"""Closed-form gradient flow on the MSE loss in function space (Jacot et al. 2018; Lee et al.
2019, "Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient Descent")."""

from __future__ import annotations

from typing import Literal

import torch  # noqa: F401 - used by the doctests
from torch import Tensor

from ..solve import PSDSolver, eigh
from ._inputs import (
    at_times,
    check_rate,
    decay,
    kernel_and_targets,
    outputs,
    phi1,
    regularizer,
    test_kernel,
    times,
)
from ._inputs import learning_rate as check_learning_rate

__all__ = ["MSEPredictor", "gradient_descent_mse"]


class MSEPredictor:
    """Outputs of gradient descent on MSE at time(s) ``t``; made by :func:`gradient_descent_mse`.

    Call it as ``predict(t=None, fx_train_0=0.0, fx_test_0=0.0, k_test_train=None)``; the
    eigendecomposition (finite ``t``) and the factorisation (``t=None``,
    :class:`ntkit.solve.PSDSolver`) of the training kernel are each computed on first use and
    cached.
    """

    def __init__(self, k_train_train, y_train, *, learning_rate: float, diag_reg: float,
                 diag_reg_absolute_scale: bool, solver: str):
        self.k_train_train, self.y_train = kernel_and_targets(k_train_train, y_train)
        self.learning_rate = learning_rate
        self.reg = regularizer(diag_reg, diag_reg_absolute_scale, self.k_train_train)
        self.solver = solver
        self._eig: tuple[Tensor, Tensor] | None = None
        self._solve: PSDSolver | None = None

    @property
    def eigh(self) -> tuple[Tensor, Tensor]:
        """Cached ``(evals, evecs)`` of ``k_train_train + reg I`` (:func:`ntkit.solve.eigh`)."""
        if self._eig is None:
            self._eig = eigh(self.k_train_train, diag_reg=self.reg)
        return self._eig

    @property
    def psd_solver(self) -> PSDSolver:
        """Cached solver of ``(k_train_train + reg I) x = b`` (:class:`ntkit.solve.PSDSolver`)."""
        if self._solve is None:
            self._solve = PSDSolver(self.k_train_train, diag_reg=self.reg, method=self.solver)
        return self._solve

    def __call__(self, t=None, fx_train_0=0.0, fx_test_0=0.0, k_test_train=None
                 ) -> tuple[Tensor, Tensor | None]:
        """Train and test outputs at time(s) ``t``.

        **Arguments:**

        - ``t``: ``None`` (convergence, ``t -> infinity``), a number, or a 1-D tensor of
          ``T`` times, in gradient-descent steps (``>= 0``, fractional allowed).
        - ``fx_train_0``: outputs on the training set at ``t = 0``, broadcastable to
          ``y_train``'s shape (default 0).
        - ``fx_test_0``: outputs on the test set at ``t = 0``, broadcastable to ``(m,)`` or
          ``(m, outputs)`` (default 0).
        - ``k_test_train``: ``(m, n)`` kernel between test and training inputs, or ``None``.

        **Returns:** ``(fx_train_t, fx_test_t)``: shapes ``y_train.shape`` and
        ``(m,) + y_train.shape[1:]``, with a leading axis of length ``T`` when ``t`` is 1-D;
        ``fx_test_t`` is ``None`` without ``k_test_train``.
        """
        k, y = self.k_train_train, self.y_train
        f0 = outputs(fx_train_0, tuple(y.shape), "fx_train_0", k)
        kt = None
        if k_test_train is not None:
            kt = test_kernel(k_test_train, k)
            ft0 = outputs(fx_test_0, (kt.shape[0],) + tuple(y.shape[1:]), "fx_test_0", k)
        elif not (isinstance(fx_test_0, (int, float)) and fx_test_0 == 0):
            raise ValueError("fx_test_0 was given without k_test_train: pass the (m, n) "
                             "kernel between test and training inputs")
        if t is None:
            # t -> infinity: the residual's component on the kernel's range decays, the one in
            # its null space (singular kernels: duplicate inputs) never moves; the test outputs
            # are kernel regression on the residual, K_td (K + reg I)^+ (y - f0).
            solver = self.psd_solver
            resid = y - f0
            fx_train = y.clone() if solver.rank == k.shape[0] else f0 + solver.range_part(resid)
            fx_test = None if kt is None else ft0 + kt @ solver.solve(resid)
            return fx_train, fx_test
        tt, scalar = times(t, k)
        evals, evecs = self.eigh
        check_rate(self.learning_rate, float(evals[-1]), y.numel())
        # f(t) = y + exp(-eta t K / y.size) (f0 - y): the flow of the loss |f - y|^2 / (2 y.size).
        s = tt * (self.learning_rate / y.numel())
        resid = (f0 - y).reshape(y.shape[0], -1)
        coef = evecs.T @ resid  # (n, k)
        fx_train = y + (evecs @ (decay(evals, s)[:, :, None] * coef)).reshape(
            (-1,) + tuple(y.shape))
        fx_test = None
        if kt is not None:
            # f_test(t) = f_test(0) - K_td K^+ (1 - exp(-eta t K / y.size)) (f0 - y).
            c = evecs @ (phi1(evals, s)[:, :, None] * coef)  # (T, n, k)
            fx_test = ft0 - (kt @ c).reshape((-1,) + tuple(ft0.shape))
        return at_times(scalar, fx_train, fx_test)


def gradient_descent_mse(
    k_train_train,
    y_train,
    *,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    solver: Literal["auto", "cholesky", "cg"] = "auto",
) -> MSEPredictor:
    r"""Outputs of a network trained by gradient descent on MSE, in closed form, at any time.

    Linearised (infinite-width) networks trained by full-batch gradient descent with learning
    rate ``eta`` on ``loss = |f(X) - Y|^2 / (2 * y_train.size)`` (half the mean squared error
    over samples *and* outputs, neural-tangents' convention) follow, for small ``eta``, the
    gradient flow ``df/dt = -eta / y_train.size * K (f - Y)`` with ``t`` in steps:

    - ``f_train(t) = Y + exp(-eta t K / y.size) (f_train(0) - Y)``,
    - ``f_test(t) = f_test(0) - K_td K^{-1} (I - exp(-eta t K / y.size)) (f_train(0) - Y)``,

    and at ``t = None`` (convergence) ``f_test = f_test(0) + K_td K^{-1} (Y - f_train(0))``,
    kernel regression. On a singular kernel (duplicate inputs, low rank) ``K^{-1}`` is the
    pseudo-inverse on its range (eigenvalues above ``n * eps * lambda_max``): the part of
    ``Y - f_train(0)`` in the null space never moves, so ``f_train(inf)`` differs from ``Y``
    there, and ``t=None`` equals the ``t -> infinity`` limit in every case. ``K`` is
    ``k_train_train + diag_reg * I`` (``diag_reg`` times the mean diagonal unless
    ``diag_reg_absolute_scale``); outputs are independent, i.e. the full kernel is
    ``K ⊗ I_outputs``. With the NTK this is the trained network of Lee et al. 2019; with
    the NNGP, a network whose readout layer alone is trained.

    **Arguments:**

    - ``k_train_train``: ``(n, n)`` symmetric PSD kernel (only its lower triangle is read).
    - ``y_train``: ``(n,)`` or ``(n, outputs)`` targets.
    - ``learning_rate``: ``eta > 0``, at most :func:`max_learning_rate` (checked on the first
      finite-time call; above it gradient descent diverges).
    - ``diag_reg``, ``diag_reg_absolute_scale``: the ridge, as above.
    - ``solver``: for ``t=None``; ``"auto"`` uses Cholesky up to
      :data:`ntkit.solve.CG_THRESHOLD` rows and conjugate gradients above.

    **Returns:** an :class:`MSEPredictor` ``predict(t=None, fx_train_0=0, fx_test_0=0,
    k_test_train=None) -> (fx_train_t, fx_test_t)``.

    Example:
        >>> k = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> y = torch.tensor([1.0, -1.0], dtype=torch.float64)
        >>> predict = gradient_descent_mse(k, y, learning_rate=0.5)
        >>> fx_train, _ = predict(t=torch.tensor([0.0, 1e6]))
        >>> fx_train.shape, [round(v, 6) for v in fx_train[1].tolist()]
        (torch.Size([2, 2]), [1.0, -1.0])
        >>> _, fx_test = predict(k_test_train=k[:1])  # t=None: kernel regression
        >>> [round(v, 12) for v in fx_test.tolist()]
        [1.0]
    """
    if solver not in ("auto", "cholesky", "cg"):
        raise ValueError(f"solver must be 'auto', 'cholesky' or 'cg'; got {solver!r}")
    return MSEPredictor(k_train_train, y_train, learning_rate=check_learning_rate(learning_rate),
                        diag_reg=diag_reg, diag_reg_absolute_scale=diag_reg_absolute_scale,
                        solver=solver)

