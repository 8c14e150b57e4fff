"""Gaussian-process inference with NNGP / NTK kernels (Lee et al. 2018, 2019)."""

from __future__ import annotations

from typing import NamedTuple

import torch  # noqa: F401 - used by the doctests
from torch import Tensor

from .._checks import check_get
from ..kernel import Kernel
from ..solve import PSDSolver
from ._inputs import as_tensor, kernel_and_targets, regularizer, test_kernel

__all__ = ["Gaussian", "GPPredictor", "gp_inference"]


class Gaussian(NamedTuple):
    """Mean ``(m,)`` / ``(m, outputs)`` and covariance ``(m, m)`` (shared by every output,
    the kernel being ``K ⊗ I``) of a Gaussian over outputs; either may carry a leading time
    axis. ``covariance`` is ``None`` when it was not asked for."""

    mean: Tensor
    covariance: Tensor | None


def _pick(k, g: str, name: str) -> Tensor:
    if isinstance(k, Kernel):
        out = getattr(k, g)
        if out is None or out.ndim != 2:
            raise ValueError(f"{name} has no {g!r} matrix; compute it with get=({g!r}, ...)")
        return out
    return k


class GPPredictor:
    """Posterior of :func:`gp_inference`; call ``predict(k_test_train, k_test_test=None, *,
    get=None)``. Cholesky factors are computed on first use per kernel and cached."""

    def __init__(self, k_train_train, y_train, *, diag_reg: float,
                 diag_reg_absolute_scale: bool, solver: str = "auto"):
        if not isinstance(k_train_train, Kernel):
            k_train_train = kernel_and_targets(k_train_train, y_train)[0]
        self.k_train_train = k_train_train
        self._y = y_train
        self._reg_args = (diag_reg, diag_reg_absolute_scale)
        self._solver = solver
        self._solvers: dict[str, tuple[PSDSolver, Tensor]] = {}

    def solver(self, g: str) -> PSDSolver:
        """The cached solver of ``K_g + reg I`` (``g``: ``"nngp"``/``"ntk"``, or ``"nngp"`` for
        a plain tensor ``k_train_train``)."""
        return self._solve(g)[0]

    def _solve(self, g: str) -> tuple[PSDSolver, Tensor]:
        """The cached solver of ``K_g + reg I`` and ``(K_g + reg I)^{+} y``."""
        if g not in self._solvers:
            k, y = kernel_and_targets(_pick(self.k_train_train, g, "k_train_train"), self._y)
            solver = PSDSolver(k, diag_reg=regularizer(*self._reg_args, k), method=self._solver)
            self._solvers[g] = (solver, solver.solve(y))
        return self._solvers[g]

    def __call__(self, k_test_train, k_test_test=None, *, get=None):
        """Posterior mean (and covariance when ``k_test_test`` is given) on test inputs.

        **Arguments:**

        - ``k_test_train``: ``(m, n)`` tensor, or a :class:`~ntkit.Kernel` holding the
          matrices ``get`` needs (``nngp`` and ``ntk`` for the NTK covariance).
        - ``k_test_test``: ``(m, m)`` NNGP of the test inputs (tensor or ``Kernel``), or
          ``None`` for the mean only.
        - ``get``: with ``Kernel`` arguments, ``"nngp"``, ``"ntk"`` or a tuple (default both);
          with tensors, leave it ``None``.

        **Returns:** a :class:`Gaussian` ``(mean, covariance)``; with a tuple ``get``, a dict
        ``{name: Gaussian}``.
        """
        kernels = isinstance(self.k_train_train, Kernel)
        if not kernels:
            if get is not None:
                raise ValueError("get applies to Kernel arguments; with a plain tensor "
                                 "k_train_train leave get=None")
            return self._one("k", k_test_train, k_test_test)
        single = isinstance(get, str)
        names = check_get(("nngp", "ntk") if get is None else get)
        out = {g: self._one(g, k_test_train, k_test_test) for g in names}
        return out[names[0]] if single else out

    def _one(self, g: str, k_test_train, k_test_test) -> Gaussian:
        key = "nngp" if g == "k" else g
        solver, alpha = self._solve(key)
        k = solver.k
        kt = test_kernel(_pick(k_test_train, key, "k_test_train"), k)
        mean = kt @ alpha
        if k_test_test is None:
            return Gaussian(mean, None)
        ktt = _pick(k_test_test, "nngp", "k_test_test")
        if ktt.shape != (kt.shape[0], kt.shape[0]):
            raise ValueError(f"k_test_test must have shape {(kt.shape[0],) * 2}; got "
                             f"{tuple(ktt.shape)}")
        ktt = as_tensor(ktt, "k_test_test", k.dtype).to(k.device)
        if g != "ntk":
            # Bayesian posterior: K_tt - K_td K^{-1} K_dt.
            q = kt @ solver.solve(kt.T)
            return Gaussian(mean, _checked(ktt - q, ktt.diagonal().abs() + q.diagonal().abs()))
        # Infinite ensemble trained to convergence (Lee et al. 2019, eq. 16): with
        # A = Theta_td Theta^{-1}, cov = K_tt + A K A^T - A K_dt - K_td A^T (K the NNGP).
        nngp = _pick(self.k_train_train, "nngp", "k_train_train").to(k.dtype)
        nngp_td = test_kernel(_pick(k_test_train, "nngp", "k_test_train"), k)
        a_t = solver.solve(kt.T)  # (n, m) = A^T
        cross = nngp_td @ a_t
        aka = a_t.T @ nngp @ a_t
        scale = ktt.diagonal().abs() + aka.diagonal().abs() + 2 * cross.diagonal().abs()
        return Gaussian(mean, _checked(ktt + aka - cross - cross.T, scale))


def _checked(cov: Tensor, scale: Tensor) -> Tensor:
    """``cov``, after checking that its variances are not negative beyond rounding.

    The posterior variances are differences of terms of size ``scale`` (per test point). The
    subtracted quadratic form ``k_i K^+ k_i`` is accurate to ``2 sqrt(eps) K_tt,ii``: its
    rounding error ``eps |k_i| / sqrt(lambda)`` per eigen-direction, with ``lambda >= n eps
    lambda_max`` on the range and ``|k_i|^2 <= n K_tt,ii lambda_max`` for a jointly PSD
    kernel. A ``k_test_test`` that does not belong with the training and cross kernels
    (another kernel, another scale, a float32 copy) gives negative variances of the order of
    the terms themselves; ``10 sqrt(eps) * scale`` separates the two."""
    var = cov.diagonal()
    tol = 10 * torch.finfo(cov.dtype).eps ** 0.5 * scale
    bad = var < -tol
    if bool(bad.any()):
        i = int(torch.argmax(torch.where(bad, -var / scale, 0.0)))
        raise ValueError(
            f"k_test_test gives a negative posterior variance {float(var[i]):.6g} at test "
            f"point {i} (beyond rounding, {float(tol[i]):.3g}): it must be the kernel of the "
            f"test inputs computed with the same kernel function as k_train_train and "
            f"k_test_train (the joint kernel must be positive semi-definite)")
    return cov


def gp_inference(k_train_train, y_train, *, diag_reg: float = 0.0,
                 diag_reg_absolute_scale: bool = False,
                 solver: str = "auto") -> GPPredictor:
    """Posterior of a GP with NNGP / NTK kernels given training data, for given test kernels.

    With a plain ``(n, n)`` kernel: the GP posterior ``mean = K_td (K + reg I)^{-1} Y``,
    ``cov = K_tt - K_td (K + reg I)^{-1} K_dt``. With :class:`~ntkit.Kernel` records and
    ``get="nngp"`` the same for the NNGP (exact Bayesian inference in the infinitely wide
    network); ``get="ntk"`` gives the distribution of infinitely many infinitely wide networks
    trained to convergence on MSE (the NTK mean, and the covariance of Lee et al. 2019 that also
    needs the NNGP). ``reg`` is ``diag_reg`` times the mean diagonal unless
    ``diag_reg_absolute_scale``. Factorisations: :class:`ntkit.solve.PSDSolver` (``solver``).

    **Arguments:** ``k_train_train`` ``(n, n)`` tensor or ``Kernel``; ``y_train`` ``(n,)`` or
    ``(n, outputs)``.

    **Returns:** a :class:`GPPredictor` ``predict(k_test_train, k_test_test=None, *, get=None)``
    giving :class:`Gaussian` ``(mean (m, ...), covariance (m, m))``.

    Example:
        >>> k = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
        >>> predict = gp_inference(k, torch.tensor([1.0, 1.0], dtype=torch.float64))
        >>> mean, cov = predict(k, k)  # at the training inputs: the targets, no variance
        >>> [round(v, 12) for v in mean.tolist()], float(cov.abs().max()) < 1e-12
        ([1.0, 1.0], True)
    """
    return GPPredictor(k_train_train, y_train, diag_reg=diag_reg,
                       diag_reg_absolute_scale=diag_reg_absolute_scale, solver=solver)
