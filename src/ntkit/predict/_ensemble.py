"""Mean and covariance of infinitely many infinitely wide networks trained on MSE (Lee et al.
2019, "Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient Descent",
section 2.3 and eq. 16), and of the Bayesian posterior (NNGP), at any training time."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import as_inputs, check_get, check_pair
from ..kernel import Kernel
from ..solve import eigh
from ._gp import Gaussian, GPPredictor
from ._inputs import check_rate, decay, kernel_and_targets, phi1, regularizer, times
from ._inputs import learning_rate as check_learning_rate

__all__ = ["EnsemblePredictor", "gradient_descent_mse_ensemble"]


class EnsemblePredictor:
    """Made by :func:`gradient_descent_mse_ensemble`; call
    ``predict(t=None, x_test=None, get=("nngp", "ntk"), compute_cov=False)``."""

    def __init__(self, net, x_train, y_train, *, learning_rate: float, diag_reg: float,
                 diag_reg_absolute_scale: bool, solver: str):
        if hasattr(net, "kernel"):
            self._kernel_fn = net.kernel
        elif callable(net):
            self._kernel_fn = net
        else:
            raise TypeError(f"net must be an ntkit.layers network (with .kernel) or a kernel "
                            f"function kernel_fn(x1, x2, get=...) -> Kernel; got {net!r}")
        self.x_train = as_inputs(x_train, "x_train")
        self.y_train = y_train
        self.learning_rate = check_learning_rate(learning_rate)
        self._reg_args = (diag_reg, diag_reg_absolute_scale)
        self._solver = solver
        self._k: Kernel | None = None
        self._gp: GPPredictor | None = None
        self._eig: dict[str, tuple[Tensor, Tensor]] = {}

    @property
    def k_train_train(self) -> Kernel:
        """The training kernel (NNGP and NTK), computed on first use."""
        if self._k is None:
            k = self._kernel_fn(self.x_train, None, get=("nngp", "ntk"))
            _, self.y_train = kernel_and_targets(k.nngp, self.y_train, "the training NNGP")
            self._k = k
        return self._k

    def _eigh(self, g: str) -> tuple[Tensor, Tensor]:
        if g not in self._eig:
            k = getattr(self.k_train_train, g)
            self._eig[g] = eigh(k, diag_reg=regularizer(*self._reg_args, k),
                                name=f"the training {g.upper()}")
        return self._eig[g]

    def __call__(self, t=None, x_test=None, get=("nngp", "ntk"), compute_cov: bool = False):
        """Mean (and covariance) of the outputs on ``x_test`` at time(s) ``t``.

        **Arguments:**

        - ``t``: ``None`` (convergence), a number or a 1-D tensor of ``T`` times in steps.
        - ``x_test``: ``(m, ...)`` test inputs, or ``None`` for the training inputs (without
          the ridge; pass ``x_test=x_train`` for the regularised prediction there).
        - ``get``: ``"nngp"`` (Bayesian posterior / readout-only training), ``"ntk"`` (the
          trained ensemble), or a tuple of them.
        - ``compute_cov``: also return the ``(m, m)`` covariance.

        **Returns:** the mean, ``(m,) + y_train.shape[1:]``, or a :class:`Gaussian` ``(mean,
        covariance)`` with ``compute_cov``; a leading ``T`` axis for 1-D ``t``; for a tuple
        ``get``, a dict ``{name: result}``.
        """
        single = isinstance(get, str)
        names = check_get(get)
        if not isinstance(compute_cov, bool):
            raise TypeError(f"compute_cov must be a bool; got {compute_cov!r}")
        k = self.k_train_train
        kt = ktt = None
        if x_test is not None:
            x_test = as_inputs(x_test, "x_test")
            check_pair(x_test, self.x_train)
            kt = self._kernel_fn(x_test, self.x_train, get=("nngp", "ntk"))
            if compute_cov:
                ktt = self._kernel_fn(x_test, None, get="nngp").nngp
        if t is None:
            out = {g: self._converged(g, kt, ktt, compute_cov) for g in names}
        else:
            tt, scalar = times(t, k.nngp)
            out = {g: self._at(g, tt, kt, ktt, compute_cov) for g in names}
            if scalar:
                out = {g: _first(v) for g, v in out.items()}
        if not compute_cov:
            out = {g: v.mean for g, v in out.items()}
        return out[names[0]] if single else out

    def _converged(self, g: str, kt: Kernel | None, ktt: Tensor | None,
                   compute_cov: bool) -> Gaussian:
        y = self.y_train
        if self._gp is None:
            self._gp = GPPredictor(self.k_train_train, y, diag_reg=self._reg_args[0],
                                   diag_reg_absolute_scale=self._reg_args[1],
                                   solver=self._solver)
        if kt is None:
            # The t -> infinity limit of _at's train-set formulas: E_inf = I - P, with P the
            # projection on the range of K_g (the identity unless K_g is singular).
            solver = self._gp.solver(g)
            n = y.shape[0]
            if solver.rank == n:
                return Gaussian(y.clone(), y.new_zeros(n, n) if compute_cov else None)
            mean = solver.range_part(y.reshape(n, -1)).reshape(y.shape)
            if not compute_cov:
                return Gaussian(mean, None)
            e_inf = torch.eye(n, dtype=y.dtype, device=y.device) - solver.range_part(
                torch.eye(n, dtype=y.dtype, device=y.device))
            return Gaussian(mean, e_inf @ self.k_train_train.nngp @ e_inf)
        return self._gp(kt, ktt, get=g)

    def _at(self, g: str, tt: Tensor, kt: Kernel | None, ktt: Tensor | None,
            compute_cov: bool) -> Gaussian:
        y = self.y_train
        k = self.k_train_train
        evals, evecs = self._eigh(g)
        check_rate(self.learning_rate, float(evals[-1]), y.numel())
        s = tt * (self.learning_rate / y.numel())
        y2 = y.reshape(y.shape[0], -1)
        coef = evecs.T @ y2
        out_shape = tuple(y.shape[1:])
        if kt is None:
            # Train set: f(t) = E_t f(0) + (I - E_t) y with E_t = exp(-eta t K_g / y.size)
            # and f(0) ~ N(0, K_nngp): mean (I - E_t) y, covariance E_t K_nngp E_t.
            e = decay(evals, s)
            mean = y2 - evecs @ (e[:, :, None] * coef)
            mean = mean.reshape((len(tt), -1) + out_shape)
            if not compute_cov:
                return Gaussian(mean, None)
            e_t = (evecs * e[:, None, :]) @ evecs.T  # (T, n, n)
            return Gaussian(mean, e_t @ k.nngp @ e_t)
        # Test set: f_test(t) = f_test(0) + A_t (y - f(0)), A_t = K_td,g V diag(phi_t) V^T.
        w = getattr(kt, g) @ evecs  # (m, n)
        phi = phi1(evals, s)  # (T, n)
        mean = (w @ (phi[:, :, None] * coef)).reshape((len(tt), -1) + out_shape)
        if not compute_cov:
            return Gaussian(mean, None)
        if g == "nngp":
            # Readout-only training from the prior: K_tt - K_td K^{-1} (I - E_t^2) K_dt.
            return Gaussian(mean, ktt - (w * phi1(evals, 2 * s)[:, None, :]) @ w.T)
        a = (w * phi[:, None, :]) @ evecs.T  # (T, m, n)
        cross = a @ kt.nngp.T  # A K_dt
        cov = ktt + a @ k.nngp @ a.transpose(1, 2) - cross - cross.transpose(1, 2)
        return Gaussian(mean, cov)


def _first(g: Gaussian) -> Gaussian:
    return Gaussian(g.mean[0], None if g.covariance is None else g.covariance[0])


def gradient_descent_mse_ensemble(
    net,
    x_train,
    y_train,
    *,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    solver: str = "auto",
) -> EnsemblePredictor:
    """Distribution of the outputs of infinitely many infinitely wide trained networks.

    Networks initialised at random (outputs ``f(0) ~ N(0, NNGP)``) and trained by gradient
    descent on ``|f(X) - Y|^2 / (2 y_train.size)`` follow, in the infinite-width limit, the
    linear flow of :func:`gradient_descent_mse` with the NTK, so their outputs at time ``t`` are
    Gaussian (the NTK-GP of Lee et al. 2019): ``get="ntk"``. ``get="nngp"`` replaces the NTK by
    the NNGP (training the readout layer only), whose ``t = None`` limit is the exact Bayesian
    posterior. Kernels come from ``net.kernel`` (computed once for the training set, cached);
    eigendecompositions (finite ``t``) and factorisations (``t=None``) likewise. On a singular
    training kernel (duplicate inputs) ``t=None`` is the ``t -> infinity`` limit, as in
    :func:`gradient_descent_mse`.

    **Arguments:**

    - ``net``: an ``ntkit.layers`` network, or a function ``kernel_fn(x1, x2, get=...)``
      returning a :class:`~ntkit.Kernel`.
    - ``x_train``: ``(n, ...)`` inputs; ``y_train``: ``(n,)`` or ``(n, outputs)`` targets.
    - ``learning_rate``, ``diag_reg``, ``diag_reg_absolute_scale``, ``solver``: as in
      :func:`gradient_descent_mse`.

    **Returns:** an :class:`EnsemblePredictor`
    ``predict(t=None, x_test=None, get=("nngp", "ntk"), compute_cov=False)``.

    Example:
        >>> from ntkit import layers as L
        >>> net = L.serial(L.Dense(64), L.ReLU(), L.Dense(1))
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> predict = gradient_descent_mse_ensemble(net, x, torch.ones(5, dtype=torch.float64))
        >>> mean, cov = predict(t=torch.tensor([1.0, 10.0]), x_test=x[:2], get="ntk",
        ...                     compute_cov=True)
        >>> mean.shape, cov.shape
        (torch.Size([2, 2]), torch.Size([2, 2, 2]))
    """
    return EnsemblePredictor(net, x_train, y_train, learning_rate=learning_rate,
                             diag_reg=diag_reg, diag_reg_absolute_scale=diag_reg_absolute_scale,
                             solver=solver)
