"""Arc-cosine random features (Cho & Saul 2009) and their composition through depth.

Cho & Saul, "Kernel methods for deep learning" (NeurIPS 2009), eq. (1)-(3): for ``w ~ N(0, I)``,

    k_n(x, y) = 2 E_w[Theta(w.x) Theta(w.y) (w.x)^n (w.y)^n] = (1/pi) |x|^n |y|^n J_n(theta),

    J_0 = pi - theta,  J_1 = sin theta + (pi - theta) cos theta,
    J_2 = 3 sin theta cos theta + (pi - theta) (1 + 2 cos^2 theta),

so ``phi(x) = sqrt(2/m) Theta(W x) (W x)^n`` (``W`` with ``m`` i.i.d. ``N(0, I)`` rows) has
``E[phi(x) . phi(y)] = k_n(x, y)`` exactly. ntkit's ReLU is this with the factor 2 left out
(``E[relu(u) relu(v)] = k_1 / 2`` and ``E[relu'(u) relu'(v)] = k_0 / 2`` for
``(u, v) ~ N(0, [[x.x, x.y], [x.y, y.y]])``), which is why :class:`NNGPFeatures` scales by
``sqrt(1/m)``.

Composed maps (``depth >= 2`` here, every depth of :class:`NNGPFeatures` past the first) feed
estimated features into the next layer: the next layer is unbiased *given* them, but the
kernel of an estimated Gram is not the kernel of its mean, so the composition carries a bias
of order ``1/m`` (second order in the ``O(m^-1/2)`` error of the Gram it reads).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval, Options
from torch import Tensor

from .._checks import as_inputs, check_pair
from ..layers._closed_form import _angle
from ._base import RandomFeatureMap

__all__ = ["ArcCosineFeatures", "NNGPFeatures", "arc_cosine_kernel"]

_DEPTH = [Interval(Integral, 1, None, closed="left")]
_W_STD = [Interval(Real, 0, None, closed="neither")]
_B_STD = [Interval(Real, 0, None, closed="left")]


def arc_cosine_kernel(x1: Tensor, x2: Tensor | None = None, *, order: int = 1) -> Tensor:
    """Cho & Saul's arc-cosine kernel ``k_n(x, y) = (1/pi) |x|^n |y|^n J_n(theta)`` (one layer).

    **Arguments:** ``x1``: ``(N1, d)``; ``x2``: ``(N2, d)`` or ``None`` for ``x1``;
    ``order``: ``n`` in ``{0, 1, 2}``.

    **Returns:** ``(N1, N2)`` in ``x1``'s dtype; the angle is taken stably (``atan2``), so the
    diagonal of ``k(x, x)`` is exact.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> arc_cosine_kernel(x, order=1).tolist()  # (1/pi)|x||y|, and |x|^2 on the diagonal
        [[1.0, 0.6366197723675814], [0.6366197723675814, 4.0]]
    """
    x1 = as_inputs(x1, "x1")
    x2 = x1 if x2 is None else as_inputs(x2, "x2")
    check_pair(x1, x2)
    if order not in (0, 1, 2) or isinstance(order, bool):
        raise ValueError(f"order must be 0, 1 or 2; got {order!r}")
    q12 = x1.flatten(1) @ x2.flatten(1).T
    q11 = x1.flatten(1).square().sum(1)[:, None]
    q22 = x2.flatten(1).square().sum(1)[None, :]
    if x2 is x1:
        q12.diagonal().copy_(q11[:, 0])  # exact angle 0 on the diagonal
    s, theta = _angle(q12, q11, q22)
    rest = math.pi - theta
    if order == 0:
        return rest / math.pi
    if order == 1:
        return (s + rest * q12) / math.pi
    return (3 * s * q12 + rest * (q11 * q22 + 2 * q12 * q12)) / math.pi


def arc_cosine(z: Tensor, omega: Tensor, order: int) -> Tensor:
    """``Theta(z omega^T) (z omega^T)^order``, unscaled: ``(N, p)``, ``(m, p)`` -> ``(N, m)``."""
    u = z @ omega.T
    if order == 0:
        return (u > 0).to(u.dtype)
    u = torch.relu(u)
    return u if order == 1 else u * u


def dense(z: Tensor, *, W_std: float, b_std: float, scale: float = 1.0) -> Tensor:
    """Features of ``Dense(W_std, b_std)``'s pre-activation Gram ``W_std^2 scale^2 z.z' +
    b_std^2``: ``[W_std scale z, b_std]`` (the bias as one constant column, none when 0)."""
    g = z * (W_std * scale)
    if b_std == 0:
        return g
    return torch.cat([g, torch.full_like(g[:, :1], b_std)], dim=1)


class ArcCosineFeatures(RandomFeatureMap):
    """Random features of Cho & Saul's arc-cosine kernel of order ``n``, or of its ``depth``-fold
    composition.

    ``phi^(1)(x) = sqrt(2/m) Theta(W_1 x) (W_1 x)^n`` and ``phi^(l) = `` the same map of
    ``phi^(l-1)`` with a fresh ``W_l`` (``(m, m)``), all ``W`` i.i.d. ``N(0, 1)``. At
    ``depth = 1``, ``E[phi(x) . phi(y)] = k_n(x, y)`` (:func:`arc_cosine_kernel`) exactly; deeper
    maps estimate Cho & Saul's multilayer kernel ``k^(l) = (1/pi) (k^(l-1)(x,x)
    k^(l-1)(y,y))^(n/2) J_n(theta^(l-1))`` with an ``O(1/m)`` bias (see the module docstring).
    Inputs are used as given (no ``1/d``): this is Cho & Saul's kernel, not ntkit's ReLU layer
    (for that, :class:`NNGPFeatures`).

    **Arguments:**

    - ``n_components``: ``m``, the number of features (``>= 1``) and the width of every layer.
    - ``order``: ``n`` in ``{0, 1, 2}`` (step, ramp, quarter-pipe).
    - ``depth``: number of composed layers, ``>= 1``.
    - ``random_state``: ``None``, an int, a ``torch.Generator`` or a NumPy random state.

    **Returns** (``transform`` / ``forward``): ``(N, m)`` from ``(N, d)``.

    Example:
        >>> x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> phi = ArcCosineFeatures(20000, order=1, random_state=0).fit(x)
        >>> k_hat = phi(x) @ phi(x).T
        >>> bool(((k_hat - arc_cosine_kernel(x)).abs() < 0.1 * k_hat.diagonal().max()).all())
        True
    """

    _parameter_constraints: dict = {
        **RandomFeatureMap._parameter_constraints,
        "order": [Options(Integral, {0, 1, 2})],
        "depth": _DEPTH,
    }

    def __init__(self, n_components: int = 100, *, order: int = 1, depth: int = 1,
                 random_state=None):
        super().__init__()
        self.n_components = n_components
        self.order = order
        self.depth = depth
        self.random_state = random_state

    def _draw(self, d, generator):
        m = self.n_components
        return {f"omega{layer}": torch.randn(m, d if layer == 0 else m, generator=generator,
                                             dtype=torch.float64)
                for layer in range(self.depth)}

    def _features(self, x):
        z = x
        scale = math.sqrt(2.0 / self.n_components)
        for layer in range(self.depth):
            z = arc_cosine(z, self._buffer(f"omega{layer}_", x), self.order) * scale
        return z


class DenseReLUFeatureMap(RandomFeatureMap):
    """The hyperparameters shared by the feature maps of ``depth`` times (Dense(W_std, b_std),
    ReLU) followed by Dense(1, W_std, b_std) in ntkit's conventions (:class:`NNGPFeatures`,
    :class:`~ntkit.features.NTKFeatures`): one place for their constraints and ``__init__``.
    """

    _parameter_constraints: dict = {
        **RandomFeatureMap._parameter_constraints,
        "depth": _DEPTH,
        "W_std": _W_STD,
        "b_std": _B_STD,
    }

    def __init__(self, n_components: int = 100, *, depth: int = 1, W_std: float = 1.0,
                 b_std: float = 0.0, random_state=None):
        super().__init__()
        self.n_components = n_components
        self.depth = depth
        self.W_std = W_std
        self.b_std = b_std
        self.random_state = random_state


class NNGPFeatures(DenseReLUFeatureMap):
    """Random features of the NNGP of ``depth`` times ``(Dense(W_std, b_std), ReLU)`` then
    ``Dense(1, W_std, b_std)``, in ntkit's conventions (input kernel ``x.x'/d``).

    With ``c = 1`` if ``b_std > 0`` else ``0`` and ``h = m - c`` hidden features:
    ``g_1 = [W_std x / sqrt(d), b_std]`` has ``g_1 . g_1' = q_1`` (the first pre-activation
    covariance) exactly; each layer maps ``f_l = sqrt(1/h) relu(Omega_l g_l)`` (``Omega_l`` i.i.d.
    ``N(0, 1)``, ``(h, dim g_l)``), whose inner product estimates ntkit's
    ``E[relu(u) relu(v)]`` at ``q_l``, and ``g_{l+1} = [W_std f_l, b_std]``; the output is
    ``g_{depth+1}``, estimating ``L.serial(*[L.Dense(., W_std, b_std), L.ReLU()] * depth,
    L.Dense(1, W_std, b_std)).kernel(x, x').nngp``. Exactly unbiased at ``depth = 1``; deeper,
    a bias of order ``1/m`` (the module docstring). The bias column is not random: it carries
    the ``b_std^2`` of the readout exactly.

    **Arguments:**

    - ``n_components``: ``m``, the number of features, ``>= 1 + c``.
    - ``depth``: number of hidden ``Dense - ReLU`` layers, ``>= 1``.
    - ``W_std`` (``> 0``), ``b_std`` (``>= 0``): of every Dense, as in ``ntkit.layers.Dense``.
    - ``random_state``: ``None``, an int, a ``torch.Generator`` or a NumPy random state.

    **Returns** (``transform`` / ``forward``): ``(N, m)`` from ``(N, d)``.

    Example:
        >>> from ntkit import layers as L
        >>> x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> phi = NNGPFeatures(20000, depth=1, W_std=1.5, b_std=0.1, random_state=0).fit(x)
        >>> net = L.serial(L.Dense(1, W_std=1.5, b_std=0.1), L.ReLU(),
        ...                L.Dense(1, W_std=1.5, b_std=0.1))
        >>> err = phi(x) @ phi(x).T - net.kernel(x).nngp
        >>> bool(err.abs().max() < 0.1 * net.kernel(x).nngp.max())
        True
    """

    def _check_hyper(self, d):
        check_dense_params(self, minimum=1)

    def _draw(self, d, generator):
        h = self.n_components - (self.b_std > 0)
        first = d + (self.b_std > 0)
        return {f"omega{layer}": torch.randn(h, first if layer == 0 else self.n_components,
                                             generator=generator, dtype=torch.float64)
                for layer in range(self.depth)}

    def _features(self, x):
        w, b = float(self.W_std), float(self.b_std)
        h = self.n_components - (b > 0)
        g = dense(x, W_std=w, b_std=b, scale=x.shape[1] ** -0.5)
        for layer in range(self.depth):
            f = arc_cosine(g, self._buffer(f"omega{layer}_", x), 1) * h**-0.5
            g = dense(f, W_std=w, b_std=b)
        return g


def check_dense_params(est, *, minimum: int) -> None:
    """``W_std``, ``b_std`` finite and ``n_components >= minimum + (b_std > 0)`` (the bias
    column), with errors that name the parameter."""
    for name in ("W_std", "b_std"):
        if not math.isfinite(getattr(est, name)):
            raise ValueError(f"{name} must be finite; got {getattr(est, name)!r}")
    need = minimum + (est.b_std > 0)
    if est.n_components < need:
        raise ValueError(f"n_components must be >= {need} for {type(est).__name__} with "
                         f"b_std={est.b_std!r} ({minimum} random feature(s)"
                         f"{' and the bias column' if est.b_std > 0 else ''}); got "
                         f"{est.n_components}")
