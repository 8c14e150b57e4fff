"""Closed-form gradient flow on the MSE loss in function space (Jacot et al. 2018; Lee et al.
2019, "Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient Descent")."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..solve import PSDSolver, eigh, exp_krylov_steps, lanczos_eigsh, lanczos_funm
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

EIGH_COST = 8.0
"""An eigendecomposition of an ``(n, n)`` matrix costs about ``EIGH_COST * n^3`` flops at the
speed of a matrix product: ``torch.linalg.eigh`` (Householder tridiagonalisation, half of it
matrix-vector products, then divide and conquer) takes about 24 Cholesky factorisations
(``n^3 / 3`` each) of the same matrix in ``bench/predict.py``."""

THIN_PRODUCT_PENALTY = 4.0
"""A product ``K @ (n, c)`` with few columns is bound by reading ``K`` from memory: it costs
about ``THIN_PRODUCT_PENALTY`` times its ``2 n^2 c`` flops, and never less than 8 columns'
worth."""


def krylov_cost(n: int, columns: int, steps: int) -> float:
    """Flops (at matrix-product speed) of ``steps`` Lanczos steps on ``columns`` start vectors
    in lockstep: one ``K @ (n, c)`` a step, and full reorthogonalisation (``8 n m c`` flops at
    step ``m``, at matrix-vector speed)."""
    product = 2.0 * n * n * max(THIN_PRODUCT_PENALTY * columns, 8.0)
    reorth = THIN_PRODUCT_PENALTY * 4.0 * n * steps * columns
    return steps * (product + reorth)


class MSEPredictor:
    """Outputs of gradient descent on MSE at time(s) ``t``; made by :func:`gradient_descent_mse`.

    Call it as ``predict(t=None, fx_train_0=0.0, fx_test_0=0.0, k_test_train=None)``; the
    eigendecomposition (finite ``t`` by ``eigh``) and the factorisation (``t=None``,
    :class:`ntkit.solve.PSDSolver`) of the training kernel are each computed on first use and
    cached; the Krylov route (finite ``t``) keeps nothing but what it has spent, for the
    cost model of :func:`gradient_descent_mse`.

    Attributes: ``method`` (as given), ``route`` (``"eigh"`` or ``"krylov"``: what the last
    finite-time call used; ``None`` before one) and ``krylov_steps`` (the Lanczos steps of the
    last Krylov attempt, including one that gave up).
    """

    def __init__(self, k_train_train, y_train, *, learning_rate: float, diag_reg: float,
                 diag_reg_absolute_scale: bool, solver: str, method: str = "auto"):
        self.k_train_train, self.y_train = kernel_and_targets(k_train_train, y_train)
        self.learning_rate = learning_rate
        self.reg = regularizer(diag_reg, diag_reg_absolute_scale, self.k_train_train)
        self.solver = solver
        self.method = method
        self.route: str | None = None
        self.krylov_steps = 0
        self._eig: tuple[Tensor, Tensor] | None = None
        self._solve: PSDSolver | None = None
        self._lam_bound = 0.0
        self._spent = 0.0

    @property
    def eigh(self) -> tuple[Tensor, Tensor]:
        """Cached ``(evals, evecs)`` of ``k_train_train + reg I`` (:func:`ntkit.solve.eigh`)."""
        if self._eig is None:
            self._eig = eigh(self.k_train_train, diag_reg=self.reg)
        return self._eig

    def _lambda_bound(self) -> float:
        """An upper bound on the largest eigenvalue of ``K + reg I``, cached: the smaller of the
        trace and the largest absolute row sum (Gershgorin), one pass over ``K``."""
        if not self._lam_bound:
            k, block = self.k_train_train, 1024
            rows = max(float(k[i:i + block].abs().sum(1).max()) for i in range(0, len(k), block))
            self._lam_bound = min(float(k.diagonal().sum()) + len(k) * self.reg, rows + self.reg)
        return self._lam_bound

    def _matmat(self, v: Tensor) -> Tensor:
        # All of K is read (as_square checked its symmetry): a copy symmetrised from the lower
        # triangle would cost a pass and an (n, n) array for a change at round-off.
        return torch.addmm(v, self.k_train_train, v, beta=self.reg) if self.reg else (
            self.k_train_train @ v)

    def _route(self, s_max: float, columns: int) -> tuple[str, int, bool]:
        """The route for scaled times up to ``s_max``, the Krylov step budget, and whether
        Lanczos may give up early; see :func:`gradient_descent_mse` for the rule."""
        if self.method == "eigh" or (self.method == "auto" and self._eig is not None):
            return "eigh", 0, False
        k = self.k_train_train
        n, size = k.shape[0], self.y_train.numel()
        if self.learning_rate * self._lambda_bound() / size > 2:
            # The bound cannot vouch for the rate: find lambda_max itself (a few dozen products).
            g = torch.Generator(device=k.device).manual_seed(0)
            lam = float(lanczos_eigsh(lambda v: self._matmat(v[:, None])[:, 0], n, 1,
                                      dtype=k.dtype, device=k.device, tol=1e-8,
                                      generator=g)[0][0])
            check_rate(self.learning_rate, lam, size)
            self._lam_bound = lam * (1 + 1e-6)
        if self.method == "krylov":
            return "krylov", n, False
        x = s_max * self._lam_bound
        guess = exp_krylov_steps(x / 4, _tol(k.dtype) / (1 + x), n)
        budget = EIGH_COST * n**3 - self._spent
        lo, hi = 0, n  # the most steps the budget pays for
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if krylov_cost(n, columns, mid) <= budget else (lo, mid - 1)
        if lo < min(n, 8):
            return "eigh", 0, False
        # Beyond the bound (which holds for any spectrum in [0, lambda_max], while a kernel's
        # decays fast and Lanczos adapts to it), Krylov is tried but gives up early.
        return "krylov", lo, guess > lo

    def _krylov(self, s: Tensor, resid: Tensor, max_steps: int, give_up: bool):
        """``(phi(K) r, (I - exp(-s K)) r)``, each ``(T, n, c)``, by :func:`lanczos_funm`, or
        ``None`` when it did not converge within ``max_steps`` (``method="auto"``)."""
        T = s.shape[0]

        def f(theta: Tensor) -> Tensor:
            # phi's continuous value s at 0, not eigh's pseudo-inverse 0: a polynomial cannot
            # follow a jump at 0, and the jointly PSD test kernel annihilates the null space.
            z = theta.reshape(-1)
            p = torch.where(z == 0, s[:, None], phi1(z, s)).reshape((T,) + theta.shape)
            return torch.cat([p, theta * p])  # theta phi(theta) = 1 - exp(-s theta)

        out = lanczos_funm(self._matmat, resid, f, tol=_tol(resid.dtype), max_steps=max_steps,
                           first_check=4, give_up=give_up)
        self._spent += krylov_cost(resid.shape[0], resid.shape[1], out.steps)
        self.krylov_steps = out.steps
        if not out.converged and self.method == "auto":
            return None
        return out.values[:T], out.values[T:]

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
        # f(t) = y + exp(-eta t K / y.size) (f0 - y): the flow of the loss |f - y|^2 / (2 y.size).
        s = tt * (self.learning_rate / y.numel())
        resid = (f0 - y).reshape(y.shape[0], -1)
        route, max_steps, give_up = self._route(float(s.max()), resid.shape[1])
        if route == "krylov":
            out = self._krylov(s, resid, max_steps, give_up)
            if out is not None:
                self.route = "krylov"
                c, decayed = out
                fx_train = f0 - decayed.reshape((-1,) + tuple(y.shape))
                fx_test = None
                if kt is not None:
                    fx_test = ft0 - (kt @ c).reshape((-1,) + tuple(ft0.shape))
                return at_times(scalar, fx_train, fx_test)
        self.route = "eigh"
        evals, evecs = self.eigh
        check_rate(self.learning_rate, float(evals[-1]), y.numel())
        coef = evecs.T @ resid  # (n, k)
        fx_train = y + (evecs @ (decay(evals, s)[:, :, None] * coef)).reshape(
            (-1,) + tuple(y.shape))
        fx_test = None
        if kt is not None:
            # f_test(t) = f_test(0) - K_td K^+ (1 - exp(-eta t K / y.size)) (f0 - y).
            c = evecs @ (phi1(evals, s)[:, :, None] * coef)  # (T, n, k)
            fx_test = ft0 - (kt @ c).reshape((-1,) + tuple(ft0.shape))
        return at_times(scalar, fx_train, fx_test)


def _tol(dtype: torch.dtype) -> float:
    """Relative accuracy asked of the Krylov route: 1e-10 in float64 (two digits below the
    1e-8 at which it must agree with the eigendecomposition), ``100 eps`` in lower precision."""
    return max(1e-10, 100 * torch.finfo(dtype).eps)


def gradient_descent_mse(
    k_train_train,
    y_train,
    *,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    solver: Literal["auto", "cholesky", "cg"] = "auto",
    method: Literal["auto", "eigh", "krylov"] = "auto",
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
    - ``method``: for finite ``t``: ``"eigh"`` (an eigendecomposition, ``O(n^3)``, cached:
      then every further time costs ``O(n^2)`` per output), ``"krylov"`` (Lanczos on ``K``
      from each column of ``f_train(0) - Y``, :func:`ntkit.solve.lanczos_funm`: ``m`` products
      ``K @ (n, outputs)``, no cache) or ``"auto"``, the cost model below.

    **Finite-time routes.** Both apply ``phi(K) = K^+ (I - exp(-s K))`` and
    ``I - exp(-s K)`` (``s = eta t / y.size``) to the residual. Lanczos evaluates them on the
    Ritz values of one Krylov space per output column, which serves every time of the call,
    and stops when they change by less than 1e-10 relative (``100 eps`` below float64) between
    checks. Its step count grows like ``sqrt(s_max lambda_max)`` (Hochbruck & Lubich 1997,
    :func:`ntkit.solve.exp_krylov_steps`), so it wins when the largest time is moderate; the
    number of times hardly matters (``O(n m)`` each, against ``O(n^2)`` for ``eigh``).

    On a singular kernel both keep the residual's null-space part in ``f_train``
    (``1 - exp(-s 0) = 0``); ``eigh`` drops it from ``phi`` (the pseudo-inverse on the range)
    where Krylov uses phi's continuous value ``phi(0) = s`` (a polynomial cannot follow a
    jump), which a test kernel consistent with the training kernel (jointly PSD) annihilates:
    the routes differ by ``s`` times round-off in ``f_test``.

    The cost model of ``"auto"``: the budget is an eigendecomposition's cost (``8 n^3`` flops
    at matrix-product speed) less what earlier Krylov calls of this predictor spent
    (``m (8 n^2 max(c, 2) + 16 n m c)`` for ``m`` steps on ``c`` output columns: thin products
    run at a quarter of that speed). ``eigh`` is used when it is cached or when the budget
    pays for fewer than 8 Lanczos steps; otherwise Krylov runs within the budget and falls
    back to ``eigh`` if it has not converged. When the Hochbruck-Lubich count for
    ``s_max lambda_bound`` (``lambda_bound``: the smaller of the trace and the largest
    absolute row sum of ``K``, one pass) exceeds the budget, Lanczos also gives up as soon as
    its observed convergence predicts that it would. So one call costs at most about twice
    the cheaper route, and repeated calls switch to ``eigh`` once Krylov has spent one
    eigendecomposition (the rent-or-buy rule). The learning rate is checked against
    ``lambda_bound``, or against ``lambda_max`` from :func:`ntkit.solve.lanczos_eigsh` when
    the bound does not vouch for it. The Krylov route reads all of ``k_train_train`` (its
    symmetry is checked).

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
        >>> krylov = gradient_descent_mse(k, y, learning_rate=0.5, method="krylov")
        >>> [round(v, 10) for v in krylov(t=3.0)[0].tolist()], krylov.route
        ([0.5276334473, -0.5276334473], 'krylov')
    """
    if solver not in ("auto", "cholesky", "cg"):
        raise ValueError(f"solver must be 'auto', 'cholesky' or 'cg'; got {solver!r}")
    if method not in ("auto", "eigh", "krylov"):
        raise ValueError(f"method must be 'auto', 'eigh' or 'krylov'; got {method!r}")
    return MSEPredictor(k_train_train, y_train, learning_rate=check_learning_rate(learning_rate),
                        diag_reg=diag_reg, diag_reg_absolute_scale=diag_reg_absolute_scale,
                        solver=solver, method=method)

