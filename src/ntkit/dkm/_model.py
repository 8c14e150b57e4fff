"""Deep kernel machines (Yang, Robeyns, Milsom, Anson, Schoots, Aitchison, "A theory of
representation learning gives a deep generalisation of kernel methods", ICML 2023)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .. import layers as L  # noqa: N812 - the documented alias
from .._checks import as_inputs, positive_int, real_number
from ._gram_map import GramMap, check_differentiable
from ._sgpr import OutputLayer, factor, output_layer

__all__ = ["DKM"]

_OPTIMIZERS = ("lbfgs", "adam")
_tri = torch.linalg.solve_triangular


def _kl(u: Tensor, chol_k: Tensor, v: Tensor) -> Tensor:
    """``KL(N(0, V V^T) || N(0, C C^T))`` with ``u = C^{-1} V`` (both factors lower, ``M x M``):
    ``(tr(K^{-1} G) - M + log|K| - log|G|) / 2``."""
    m = v.shape[0]
    return (u.square().sum() - m + 2 * chol_k.diagonal().log().sum()
            - 2 * v.diagonal().abs().log().sum()) / 2


class DKM:
    """A deep kernel machine for regression: per-layer Gram matrices learned under the DKM
    objective, with inducing points (Yang et al. 2023).

    The model is the representation-learning limit of a deep GP / Bayesian network whose
    layer ``l`` Gram ``G_l`` has the prior mean ``K(G_{l-1})``, the NNGP map of ``Dense`` after
    ``activation`` (:class:`GramMap`; ``G_0`` is the first ``Dense``'s input Gram). Only the
    inducing Grams ``G_l^ii`` ``(M, M)``, ``l = 1 .. depth``, are parameters, held PSD as
    ``V V^T`` with ``V`` lower triangular. The data's blocks follow from them by the paper's
    kernel interpolation, the GP conditional under the layer's prior:
    ``G_ti = K_ti K_ii^{-1} G_ii`` and
    ``G_tt = K_tt - K_ti K_ii^{-1} K_it + K_ti K_ii^{-1} G_ii K_ii^{-1} K_it``
    (only the diagonal of ``G_tt`` is needed). The objective maximised is

    ``log P(y | G_depth) - sum_l nu_l KL(N(0, G_l^ii) || N(0, K(G_{l-1}^ii)))``,

    whose first term is the output layer's collapsed inducing-point bound (Titsias 2009) with
    the top kernel ``K(G_depth)`` and noise variance ``noise``, averaged over output columns
    (so ``nu_l`` is the paper's ``N_l / N_{L+1}``, the layer width per output). As
    ``nu -> inf`` every ``G_l`` is its prior: the DKM is the NNGP of :meth:`nngp_spec` (with
    ``n_inducing = N`` exactly the NNGP's GP posterior mean). Costs ``O(N M^2)`` per layer and
    step. All arithmetic is float64. Targets are modelled with zero prior mean: centre them.

    **Arguments:**

    - ``depth``: number of learned Gram layers ``L >= 1`` (the network of :meth:`nngp_spec`
      has ``depth + 1`` hidden layers: ``G_0`` is the first's, fixed by the inputs).
    - ``nu``: ``> 0``, one float or ``depth`` of them, the KL strengths.
    - ``n_inducing``: ``M``, at most the number of training points; inducing inputs are a
      random subset of them (all of them, in order, when ``M = N``).
    - ``activation``: a name of :data:`ntkit.layers.ACTIVATIONS` or an
      :class:`~ntkit.layers.Activation` (arc-cosine family, ``erf``, ``gelu``).
    - ``W_std``, ``b_std``: the ``Dense`` scales (ntkit's NTK-parametrization conventions).
    - ``noise``: the Gaussian likelihood's variance ``> 0``.
    - ``optimizer``: ``"lbfgs"`` (strong-Wolfe line search: the objective never decreases)
      or ``"adam"`` (learning rate ``lr``; not monotone).
    - ``max_steps``: optimizer steps; ``tol``: stop when a step changes the objective by less
      than ``tol * (1 + |objective|)``; ``random_state``: seed of the inducing subset.

    **Attributes after fit:** ``inducing_`` ``(M, d)``, ``grams_`` (list of ``depth``
    ``(M, M)`` tensors ``G_l^ii``), ``objective_history_`` (objective before the first step and
    after each step), ``n_steps_``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(40, 3, generator=g, dtype=torch.float64)
        >>> y = torch.sin(2 * x[:, 0])
        >>> dkm = DKM(1, nu=1.0, n_inducing=20, max_steps=10).fit(x, y)
        >>> dkm.predict(x[:5]).shape, len(dkm.grams_)
        (torch.Size([5]), 1)
        >>> h = dkm.objective_history_
        >>> bool(all(b >= a - 1e-9 * abs(a) for a, b in zip(h, h[1:])))
        True
    """

    def __init__(self, depth: int, *, nu: float | Sequence[float], n_inducing: int,
                 activation: str | L.Activation = "relu", W_std: float = 1.0,
                 b_std: float = 0.0, noise: float = 0.1, optimizer: str = "lbfgs",
                 max_steps: int = 100, lr: float = 1e-2, tol: float = 1e-10,
                 random_state: int = 0):
        self.depth = positive_int(depth, "depth")
        nus = [nu] * self.depth if not isinstance(nu, Sequence) else list(nu)
        if len(nus) != self.depth:
            raise ValueError(f"nu must be one number or {self.depth} (one per layer); got "
                             f"{len(nus)}")
        self.nu = [real_number(v, "nu") for v in nus]
        if min(self.nu) <= 0:
            raise ValueError(f"nu must be > 0; got {nu!r}")
        self.n_inducing = positive_int(n_inducing, "n_inducing")
        act = L.activation(activation) if isinstance(activation, str) else activation
        if not isinstance(act, L.Activation):
            raise TypeError(f"activation must be a name or an ntkit.layers.Activation; got "
                            f"{type(activation).__name__}")
        check_differentiable(act)
        self.activation = act
        self.W_std = real_number(W_std, "W_std")
        self.b_std = real_number(b_std, "b_std", minimum=0.0)
        self.noise = real_number(noise, "noise")
        if self.W_std <= 0 or self.noise <= 0:
            raise ValueError(f"W_std and noise must be > 0; got W_std={W_std}, noise={noise}")
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}; got {optimizer!r}")
        self.optimizer = optimizer
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 0:
            raise ValueError(f"max_steps must be an integer >= 0; got {max_steps!r}")
        self.max_steps = max_steps
        self.lr = real_number(lr, "lr")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0; got {lr}")
        self.tol = real_number(tol, "tol", minimum=0.0)
        self.random_state = int(random_state)
        self._map = GramMap(act, self.W_std, self.b_std)

    def nngp_spec(self, width: int = 512) -> L.Serial:
        """The network whose NNGP is this DKM's ``nu -> inf`` limit: ``depth + 1`` blocks
        ``Dense(width, W_std, b_std), activation``, then ``Dense(1, W_std, b_std)``."""
        blocks = [L.Dense(width, W_std=self.W_std, b_std=self.b_std), self.activation]
        return L.serial(*(blocks * (self.depth + 1)),
                        L.Dense(1, W_std=self.W_std, b_std=self.b_std))

    # -- the model -------------------------------------------------------------------------

    def _propagate(self, vs: Sequence[Tensor], x: Tensor):
        """Top-layer kernel blocks ``(K_ii, K_ti, diag K_tt)`` at the data ``x (N, d)`` and the
        weighted KL sum, given the inducing Grams' factors ``vs``."""
        g_ii, g_ti, g_tt = self._map.input_gram(self.inducing_, x)
        kl = g_ii.new_zeros(())
        for nu, v in zip(self.nu, vs, strict=True):
            k_ii, k_ti, k_tt = self._map.blocks(g_ii, g_ti, g_tt)
            chol = factor(k_ii, "a DKM layer's prior inducing kernel K(G)")
            v = v.tril()
            u = _tri(chol, v, upper=False)
            w = _tri(chol, k_ti.T, upper=False)
            kl = kl + nu * _kl(u, chol, v)
            uw = u.T @ w
            g_ii, g_ti = v @ v.T, (v @ uw).T
            g_tt = k_tt - w.square().sum(0) + uw.square().sum(0)
        return self._map.blocks(g_ii, g_ti, g_tt), kl

    def _evaluate(self, vs: Sequence[Tensor]) -> tuple[Tensor, OutputLayer]:
        top, kl = self._propagate(vs, self._x)
        out = output_layer(*top, self._y, self.noise)
        return out.log_likelihood - kl, out

    # -- the estimator interface -----------------------------------------------------------

    def fit(self, X, y) -> DKM:
        """Learn the inducing Grams on ``X (N, d)``, ``y (N,)`` or ``(N, k)``.

        **Returns:** ``self``.
        """
        x = as_inputs(X, "X")
        if x.ndim != 2:
            raise ValueError(f"X must have shape (N, d); got {tuple(x.shape)}")
        x = x.to(torch.float64)
        yt = _targets(y, x.shape[0])
        n = x.shape[0]
        if self.n_inducing > n:
            raise ValueError(f"n_inducing must be <= the number of training points {n}; got "
                             f"{self.n_inducing}")
        if self.n_inducing == n:
            idx = torch.arange(n)
        else:
            g = torch.Generator().manual_seed(self.random_state)
            idx = torch.randperm(n, generator=g)[: self.n_inducing].sort().values
        self.inducing_ = x[idx]
        self._x, self._y, self._y_1d = x, yt, (torch.as_tensor(y).ndim == 1)
        vs = [v.requires_grad_() for v in self._prior_factors()]
        self.objective_history_ = _optimize(self, vs)
        self.n_steps_ = len(self.objective_history_) - 1
        self._vs = [v.detach() for v in vs]
        with torch.no_grad():
            self._out = self._evaluate(self._vs)[1]
        self.grams_ = [v.tril() @ v.tril().T for v in self._vs]
        return self

    def _prior_factors(self) -> list[Tensor]:
        """Cholesky factors of the prior means ``K(G_{l-1}^ii)``: the ``nu -> inf`` optimum."""
        with torch.no_grad():
            x_i = self.inducing_
            g_ii = self._map.input_gram(x_i, x_i[:1])[0]
            out = []
            for _ in range(self.depth):
                d = g_ii.diagonal()
                k_ii = self._map(g_ii, d[:, None], d[None, :])
                out.append(factor((k_ii + k_ii.T) / 2, "the prior inducing kernel").contiguous())
                g_ii = out[-1] @ out[-1].T
            return out

    def objective(self) -> float:
        """The DKM objective (log-likelihood bound per output minus the ``nu``-weighted KLs) at
        the fitted Grams on the training data."""
        self._check_fitted()
        with torch.no_grad():
            return float(self._evaluate(self._vs)[0])

    def predict(self, X, *, return_std: bool = False):
        """Predictive mean at ``X (m, d)``: ``(m,)`` for 1-D training targets, else
        ``(m, k)``; with ``return_std``, also the predictive standard deviation of a target
        ``(m,)`` (latent variance plus ``noise``)."""
        self._check_fitted()
        x = as_inputs(X, "X")
        if x.ndim != 2 or x.shape[1] != self.inducing_.shape[1]:
            raise ValueError(f"X must have shape (m, {self.inducing_.shape[1]}); got "
                             f"{tuple(x.shape)}")
        with torch.no_grad():
            (_, k_si, k_ss), _ = self._propagate(self._vs, x.to(torch.float64))
            mean, var = self._out.predict(k_si, k_ss)
        mean = mean[:, 0] if self._y_1d else mean
        return (mean, (var + self.noise).sqrt()) if return_std else mean

    def _check_fitted(self) -> None:
        if not hasattr(self, "_out"):
            raise RuntimeError("this DKM is not fitted yet; call fit(X, y) first")


def _targets(y, n: int) -> Tensor:
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if not isinstance(y, Tensor) or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"y must be a real torch.Tensor or numpy array; got "
                        f"{getattr(y, 'dtype', type(y).__name__)}")
    if y.ndim not in (1, 2) or y.shape[0] != n or y.numel() == 0:
        raise ValueError(f"y must have shape ({n},) or ({n}, k) to match X; got "
                         f"{tuple(y.shape)}")
    y = y.to(torch.float64)
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y contains NaN or infinite values")
    return y if y.ndim == 2 else y[:, None]


def _optimize(model: DKM, vs: list[Tensor]) -> list[float]:
    """Maximise the objective over ``vs`` in place; the objective before the first step and
    after each step."""

    def loss() -> Tensor:
        return -model._evaluate(vs)[0]

    with torch.no_grad():
        history = [-float(loss())]
    if model.max_steps == 0:
        return history
    if model.optimizer == "lbfgs":
        # One iteration per step() so the objective is recorded per step; the strong-Wolfe
        # line search only accepts points with sufficient decrease of the loss.
        opt = torch.optim.LBFGS(vs, lr=1.0, max_iter=1, max_eval=40, history_size=20,
                                line_search_fn="strong_wolfe", tolerance_grad=0.0,
                                tolerance_change=0.0)
    else:
        opt = torch.optim.Adam(vs, lr=model.lr)

    def closure() -> Tensor:
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    for _ in range(model.max_steps):
        opt.step(closure)
        with torch.no_grad():
            history.append(-float(loss()))
        if not math.isfinite(history[-1]):
            raise FloatingPointError("the DKM objective became non-finite; lower lr or raise "
                                     "noise")
        if abs(history[-1] - history[-2]) <= model.tol * (1 + abs(history[-1])):
            break
    return history
