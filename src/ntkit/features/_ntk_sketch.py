"""NTK sketch: Zandieh et al. 2021 (NeurIPS), §3 (their Algorithm 1, "NTKSketch"), in ntkit's
conventions, by two routes.

With ``x̃ = [W_std x / sqrt(d), b_std]`` (the bias as a constant coordinate, none when
``b_std = 0``), ``r = |x̃|`` and ``c`` the cosine of the angle between ``x̃`` and ``ỹ``, the
first layer's pre-activation kernel is ``q_1 = x̃ . ỹ = r_x r_y c``.

**One polynomial of the input angle** (no biases at any depth, or biases at ``depth = 1``).
Without biases every layer is positively homogeneous, so ``Theta(x, y) = r_x r_y F(c)`` with
``F = F_0 / W_std^2``, ``F_0`` the network's NTK on two inputs of norm ``sqrt(d)`` at cosine
``c`` (taken from ``ntkit.layers``, the one source of the formula). With biases and ``depth =
1``: ``Theta = W^2 q_1 kappa_0(c) + W^2 r_x r_y kappa_1(c) + b^2 = r_x r_y F(c) + b^2`` with
the same ``F`` (``kappa_0``, ``kappa_1`` ntkit's ReLU expectations at unit variances): the bias
adds one exact constant feature. ``F`` is replaced by ``P(c) = sum_j a_j c^j`` with ``a_j >=
0`` (:func:`ntk_polynomial`), and

    z(x) = r_x [sqrt(a_1) S_1(x̂), ..., sqrt(a_q) S_q(x̂)],    x̂ = x̃ / r_x,
    phi(x) = [r_x sqrt(a_0), b_std, R z(x)],

with ``S_j`` the PolySketch of ``x̂^{⊗j}`` (``ntkit.features._polysketch``, one tree for all
degrees) and ``R`` the paper's final SRHT from the concatenation to the ``n_components - 1 -
(b_std > 0)`` remaining features (``E[R^T R] = I``), when ``sketch_dim`` is given; by default
``R`` is the identity and each degree gets an equal share of the features (``S_1`` then an
SRHT of ``x̂`` to its share). So ``E[phi(x) . phi(y)] = r_x r_y P(c) + b^2`` exactly: the
error is the sketch's (``O(m^-1/2)``) plus the fixed polynomial error ``r_x r_y |P(c) -
F(c)|``, which :attr:`NTKSketch.poly_error_` reports (its maximum over ``[-1, 1]``, relative
to ``F(1)``).

**Layer by layer** (biases and ``depth >= 2``). Past one hidden layer the bias makes the NTK
depend on the norms other than through ``r_x r_y``: ``q_2 = W^2 r_x r_y kappa_1(c) + b^2``
normalises by ``sqrt((W^2 r_x^2 / 2 + b^2)(W^2 r_y^2 / 2 + b^2))``, so the second ReLU sees an
angle that depends on the norms. The sketch then follows the recursion of Zandieh et al.'s
Algorithm 1 one layer at a time, with ``kappa_1`` and ``kappa_0`` replaced by nonnegative
polynomials ``P_1``, ``P_0`` pinned at ``P(1) = kappa(1)`` and with the exact variances
``s_l^2 = q_l(x, x)`` of the variance chain (``s_1 = r``, ``s_{l+1}^2 = W^2 s_l^2 / 2 +
b^2``). From ``phi_1 = psi_1 = x̃``, per hidden layer:

    u = phi_l / |phi_l|,
    phi_{l+1} = [W s_l sqrt(a_{1,0}), W s_l R_1 [sqrt(a_{1,j}) S_j(u)]_j, b],
    p_l       = [sqrt(a_{0,0}), R_0 [sqrt(a_{0,j}) S_j(u)]_j],
    psi_{l+1} = [phi_{l+1}, W Q_l(psi_l ⊗ p_l)],

with ``S_j`` one PolySketch tree per layer and ``Q_l`` a TensorSRHT (``phi . phi' ≈
q_{l+1}``, ``psi . psi' ≈ Theta_{l+1}``); the features are ``psi_{depth+1}``. ``R_1``, ``R_0``
are the identity by default (each degree its equal share of the ``h - 2`` sketched columns of
``phi``, ``S_1`` an SRHT of ``u`` to its share, and ``p_l`` the same sketches with ``P_0``'s
weights) or, with ``sketch_dim``, SRHTs of the concatenations (trees of width ``sketch_dim``)
to ``h - 2`` columns; ``h = m // 2`` columns for ``phi`` (with its exact constant and the
bias), ``m - h`` for the tensor sketch. Given layer ``l``'s features, layer ``l + 1`` is
exactly unbiased for ``W^2 s s' P_1(u . u') + b^2`` and ``W^2 P_0(u . u') (psi_l . psi_l') +
q_{l+1}``; as ``m`` grows the map converges to the NTK with ``kappa`` replaced by ``P`` (whose
diagonal is exact, :attr:`NTKSketch.poly_error_` the gap off it), and, as every map that feeds
estimated features into a nonlinear next layer, it carries an ``O(1/m)`` bias from ``depth =
2`` on.
"""

from __future__ import annotations

import functools
import math
from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from torch import Tensor

from ._arccos import _B_STD, _DEPTH, _W_STD, check_dense_params, dense
from ._base import RandomFeatureMap
from ._polysketch import draw_powers, nonneg_polynomial, sketch_powers
from ._sketch import put_tensor_srht

__all__ = ["NTKSketch", "ntk_polynomial"]


def ntk_polynomial(depth: int, W_std: float, degree: int) -> tuple[np.ndarray, float]:
    """Nonnegative coefficients ``a_0..a_degree`` of ``P(c) ≈ F_0(c)`` (the bias-free ReLU NTK
    at unit ``|x| / sqrt(d) = |y| / sqrt(d)``, from ``ntkit.layers``) and ``max |P - F_0| /
    F_0(1)`` on ``[-1, 1]``.

    **Returns:** ``(a, rel_err)``: ``(degree + 1,)`` float64 array and a float.

    Example:
        >>> a, err = ntk_polynomial(1, 1.0, 16)
        >>> bool((a >= 0).all()), err < 0.05
        (True, True)
    """
    from .. import layers as L

    net = L.serial(*[L.Dense(1, W_std=W_std, b_std=None), L.ReLU()] * depth,
                   L.Dense(1, W_std=W_std, b_std=None))

    def f(c: np.ndarray) -> np.ndarray:
        c = torch.from_numpy(c)
        v = torch.stack([c, (1 - c * c).clamp(min=0).sqrt()], 1) * math.sqrt(2.0)
        u = torch.tensor([[math.sqrt(2.0), 0.0]], dtype=torch.float64)
        return net.kernel(u, v).ntk[0].numpy()

    return nonneg_polynomial(f, degree)


def relu_polynomials(degree: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """``(a_1, a_0, err_1, err_0)``: nonnegative polynomials of ntkit's ReLU expectations at
    unit variances, ``kappa_1(c) = E[relu(u) relu(v)]`` and ``kappa_0(c) = E[relu'(u)
    relu'(v)]``, pinned at ``c = 1`` (:func:`~ntkit.features._polysketch.nonneg_polynomial`),
    and their errors relative to ``kappa(1) = 1/2``.

    Example:
        >>> a1, a0, e1, e0 = relu_polynomials(8)
        >>> round(float(a1.sum()), 12), round(float(a0.sum()), 12), e1 < 1e-3, e0 < 0.04
        (0.5, 0.5, True, True)
    """
    a1, a0, e1, e0 = _relu_polynomials(degree)
    return a1.copy(), a0.copy(), e1, e0


@functools.lru_cache(maxsize=32)
def _relu_polynomials(degree: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """:func:`relu_polynomials`, computed once per degree (a refit draws new randomness only)."""
    from .. import layers as L

    def kappa(c: np.ndarray, which: int) -> np.ndarray:
        c = torch.from_numpy(c)
        one = torch.ones_like(c)
        return L.ReLU().expectations(c, one, one, ntk=True)[which].numpy()

    a1, e1 = nonneg_polynomial(lambda c: kappa(c, 0), degree, pin=True)
    a0, e0 = nonneg_polynomial(lambda c: kappa(c, 1), degree, pin=True)
    return a1, a0, e1, e0


class NTKSketch(RandomFeatureMap):
    """NTK sketch features (Zandieh et al. 2021, §3) of the NTK of ``depth`` times
    ``(Dense(W_std, b_std), ReLU)`` then ``Dense(1, W_std, b_std)`` in ntkit's conventions.

    Without biases, or with biases at ``depth = 1``, ``phi(x) . phi(y)`` is unbiased for
    ``r_x r_y P(c) + b_std^2``, with ``P`` the degree-``degree`` nonnegative polynomial fit of
    the NTK's angular part (module docstring), whose relative error ``poly_error_`` is the
    floor the sketch converges to; the sketch's own error falls like ``m^-1/2`` (with
    ``sketch_dim`` growing like ``m``). With biases at ``depth >= 2`` the map sketches layer
    by layer: it converges to the NTK with the ReLU's two expectations replaced by
    polynomials (``poly_error_`` the gap), with an ``O(1/m)`` bias on the way.

    **Arguments:**

    - ``n_components``: ``m``, the number of features. One polynomial: one exact feature for
      ``a_0``, one for the bias (if ``b_std > 0``), the rest the sketches', at least one per
      nonzero ``a_j`` (``sketch_dim=None``) or one (``sketch_dim`` given). Layer by layer:
      ``m // 2 - 2`` at least the number of nonzero coefficients (``sketch_dim=None``) or
      ``>= 6``.
    - ``depth``: number of hidden ``Dense - ReLU`` layers, ``>= 1``; ``W_std > 0``;
      ``b_std >= 0``.
    - ``degree``: of the polynomials, ``>= 1``.
    - ``sketch_dim``: ``None`` (default): no final SRHT; every node of the tree has the
      width ``(m - 1 - (b_std > 0)) / #{j >= 1: a_j > 0}`` and the degrees' sketches are
      concatenated as they are (each degree its equal share of ``m``, ``S_1`` an SRHT of
      ``x̂``). An int: the paper's layout, every TensorSRHT of the tree to ``sketch_dim``
      coordinates, and the concatenation (``d`` plus about ``degree * sketch_dim`` numbers)
      compressed to ``m`` by a final SRHT. At equal ``m`` the compression adds its own
      variance; it pays when the output dimension matters more than the transform
      (docs/features.md gives the measured trade-off). Layer by layer alike: ``None`` gives
      each degree an equal share of the ``m // 2 - 2`` sketched columns of every layer's
      NNGP part; an int, trees of that width compressed to them.
    - ``random_state``: ``None``, an int, a ``torch.Generator`` or a NumPy random state.

    **Returns** (``transform`` / ``forward``): ``(N, m)`` from ``(N, d)``. Fitted:
    ``poly_error_``; one polynomial: ``coef_`` (``(degree + 1,)``, the ``a_j`` of ``P``, which
    approximates ``F_0 / W_std^2``); layer by layer: ``coef1_`` and ``coef0_`` (``P_1 ≈
    kappa_1``, ``P_0 ≈ kappa_0``), and ``poly_error_`` is ``max |Theta_P - Theta| /
    sqrt(Theta(x, x) Theta(y, y))`` over cosines in ``[-1, 1]`` and mean squares ``|x|^2 / d``,
    ``|y|^2 / d`` in ``{1/4, 1, 4}``.

    Example:
        >>> from ntkit import layers as L
        >>> x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> phi = NTKSketch(8192, depth=1, b_std=0.5, degree=16, random_state=0).fit(x)
        >>> ntk = L.serial(L.Dense(1, b_std=0.5), L.ReLU(), L.Dense(1, b_std=0.5)).kernel(x).ntk
        >>> bool(((phi(x) @ phi(x).T - ntk).abs() < 0.1 * ntk.diagonal().max()).all())
        True
    """

    _parameter_constraints: dict = {
        **RandomFeatureMap._parameter_constraints,
        "depth": _DEPTH,
        "W_std": _W_STD,
        "b_std": _B_STD,
        "degree": [Interval(Integral, 1, None, closed="left")],
        "sketch_dim": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, n_components: int = 100, *, depth: int = 1, W_std: float = 1.0,
                 b_std: float = 0.0, degree: int = 8, sketch_dim: int | None = None,
                 random_state=None):
        super().__init__()
        self.n_components = n_components
        self.depth = depth
        self.W_std = W_std
        self.b_std = b_std
        self.degree = degree
        self.sketch_dim = sketch_dim
        self.random_state = random_state

    def _layered(self) -> bool:
        return self.b_std > 0 and self.depth > 1

    def _check_hyper(self, d):
        check_dense_params(self, minimum=2)
        if self._layered() and self.n_components < 6:
            raise ValueError(
                f"n_components must be >= 6 for NTKSketch with b_std > 0 and depth >= 2 (the "
                f"layer-by-layer sketch: m // 2 >= 3 columns for the NNGP part and the rest for "
                f"the tensor sketch); got {self.n_components}")

    def _draw(self, d, generator):
        return (self._draw_layered if self._layered() else self._draw_one)(d, generator)

    def _features(self, x):
        if self._layered():
            return list(self._steps(x))[-1][1]
        return self._features_one(x)

    # --- one polynomial of the input angle -------------------------------------------------

    def _layout(self, coef) -> tuple[list[int], int, int, int]:
        """``(active degrees, tree width, degree-1 width, zero columns)``; the last two only
        without a final SRHT (``sketch_dim=None``)."""
        active = _active(coef)
        free = self.n_components - 1 - int(self.b_std > 0)
        if self.sketch_dim is not None:
            return active, int(self.sketch_dim), 0, 0
        if free < len(active):
            raise ValueError(f"n_components must be >= {self.n_components - free + len(active)} "
                             f"for NTKSketch with degree={self.degree} and sketch_dim=None (one "
                             f"feature per nonzero coefficient a_j, j >= 1, and "
                             f"{self.n_components - free} exact); got {self.n_components}")
        width, extra = divmod(free, len(active))
        return active, width, width + extra if 1 in active else 0, 0 if 1 in active else extra

    def _draw_one(self, d, generator):
        coef, err = ntk_polynomial(self.depth, float(self.W_std), self.degree)
        self.poly_error_ = err
        coef = coef / float(self.W_std) ** 2  # F = F_0 / W^2 in terms of r = W |x| / sqrt(d)
        draws = {"coef": torch.from_numpy(coef)}
        active, width, width1, _ = self._layout(coef)
        dims = draw_powers(draws, generator, active, leaf=d + int(self.b_std > 0), width=width)
        out = self.n_components - 1 - int(self.b_std > 0)
        if self.sketch_dim is not None:  # the paper's final SRHT of the concatenation
            put_tensor_srht(draws, "out_", sum(dims.values()), 1, out, generator)
        elif width1:  # degree 1 to its share of the features, as the others
            put_tensor_srht(draws, "j1_srht_", dims[1], 1, width1, generator)
        return draws

    def _features_one(self, x):
        coef = self._buffer("coef_", x)
        active, _, width1, zeros = self._layout(coef)
        xt = dense(x, W_std=float(self.W_std), b_std=float(self.b_std), scale=x.shape[1] ** -0.5)
        r = xt.norm(dim=1, keepdim=True)
        unit = xt / torch.where(r > 0, r, torch.ones_like(r))
        ones = torch.ones_like(r)
        powers = sketch_powers(unit, active, self._tensor_srht)
        parts = []
        for j in active:
            s_j = powers[j]
            if j == 1 and self.sketch_dim is None:
                s_j = self._tensor_srht("j1_srht_", s_j, ones)
            parts.append(coef[j].sqrt() * s_j)
        z = torch.cat(parts, dim=1) * r
        if self.sketch_dim is not None:
            z = self._tensor_srht("out_", z, ones)
        exact = [coef[0].sqrt() * r]
        if self.b_std > 0:
            exact.append(torch.full_like(r, float(self.b_std)))
        return torch.cat([*exact, z, r.new_zeros(r.shape[0], zeros)], dim=1)

    # --- layer by layer (biases, depth >= 2) ------------------------------------------------

    def _split(self, active: list[int]) -> tuple[int, int, int, int]:
        """``(h, r, width, width1)``: columns of ``phi`` and of the tensor sketch, the trees'
        width and (``sketch_dim=None``) the width of ``S_1``'s SRHT."""
        h = self.n_components // 2
        r = self.n_components - h
        if self.sketch_dim is not None:
            return h, r, int(self.sketch_dim), 0
        if h - 2 < len(active):
            raise ValueError(
                f"n_components must be >= {2 * (len(active) + 2)} for NTKSketch with "
                f"b_std > 0, depth >= 2, degree={self.degree} and sketch_dim=None (m // 2 - 2 "
                f">= one feature per nonzero coefficient); got {self.n_components}")
        width, extra = divmod(h - 2, len(active))
        return h, r, width, width + extra if 1 in active else 0

    def _draw_layered(self, d, generator):
        a1, a0, _, _ = relu_polynomials(self.degree)
        self.poly_error_ = _layered_poly_error(self.depth, float(self.W_std),
                                               float(self.b_std), self.degree)
        draws = {"coef1": torch.from_numpy(a1), "coef0": torch.from_numpy(a0)}
        act1, act0, active = _active(a1), _active(a0), _active(a1 + a0)
        h, r, width, width1 = self._split(active)
        for layer in range(self.depth):
            pre = f"l{layer}_"
            dims = draw_powers(draws, generator, active, leaf=d + 1 if layer == 0 else h,
                               width=width, prefix=pre)
            if self.sketch_dim is not None:  # compress the concatenations, as the paper
                put_tensor_srht(draws, pre + "k1_", sum(dims[j] for j in act1), 1, h - 2,
                                generator)
                put_tensor_srht(draws, pre + "k0_", sum(dims[j] for j in act0), 1, h - 2,
                                generator)
            elif width1:  # S_1 = u to its share, as the other degrees
                put_tensor_srht(draws, pre + "j1_srht_", dims[1], 1, width1, generator)
            put_tensor_srht(draws, pre + "theta_", d + 1 if layer == 0 else self.n_components,
                            h - 1, r, generator)
        return draws

    def _steps(self, x: Tensor):
        """Yield ``(phi_{l+1}, psi_{l+1})`` after each hidden layer (module docstring):
        ``(N, m // 2)`` and ``(N, m)``."""
        w, b = float(self.W_std), float(self.b_std)
        a1, a0 = self._buffer("coef1_", x), self._buffer("coef0_", x)
        act1, act0 = _active(a1), _active(a0)
        active = _active(a1 + a0)
        h, _, _, width1 = self._split(active)
        phi = psi = dense(x, W_std=w, b_std=b, scale=x.shape[1] ** -0.5)
        s = phi.norm(dim=1, keepdim=True)  # exact: sqrt(q_1(x, x))
        one = torch.ones_like(s)
        for layer in range(self.depth):
            pre = f"l{layer}_"
            norm = phi.norm(dim=1, keepdim=True)
            unit = phi / torch.where(norm > 0, norm, one)
            powers = sketch_powers(unit, active, self._tensor_srht, prefix=pre)
            if self.sketch_dim is not None:
                z1 = self._tensor_srht(pre + "k1_", torch.cat([a1[j].sqrt() * powers[j]
                                                        for j in act1], 1), one)
                z0 = self._tensor_srht(pre + "k0_", torch.cat([a0[j].sqrt() * powers[j]
                                                        for j in act0], 1), one)
            else:  # equal shares, concatenated as they are (zeros where a_j = 0)
                if width1:
                    powers[1] = self._tensor_srht(pre + "j1_srht_", powers[1], one)
                z1 = torch.cat([a1[j].sqrt() * powers[j] for j in active], 1)
                z0 = torch.cat([a0[j].sqrt() * powers[j] for j in active], 1)
                pad = h - 2 - z1.shape[1]  # only without degree 1: columns of zeros
                z1, z0 = (torch.nn.functional.pad(z, (0, pad)) for z in (z1, z0))
            phi = torch.cat([(w * a1[0].sqrt()) * s, (w * s) * z1, b * one], dim=1)
            p = torch.cat([a0[0].sqrt() * one, z0], dim=1)
            psi = torch.cat([phi, w * self._tensor_srht(pre + "theta_", psi, p)], dim=1)
            s = (w * w * a1.sum() * s * s + b * b).sqrt()  # P_1(1) = kappa_1(1): exact
            yield phi, psi


def layered_poly_error(depth: int, W_std: float, b_std: float, a1: np.ndarray,
                       a0: np.ndarray) -> float:
    """``max |Theta_P - Theta| / sqrt(Theta(x, x) Theta(y, y))`` over cosines in ``[-1, 1]``
    and mean squares ``|x|^2 / d, |y|^2 / d`` in ``{1/4, 1, 4}``: ``Theta`` the NTK of
    ``ntkit.layers``, ``Theta_P`` its recursion with ``kappa_1``, ``kappa_0`` replaced by the
    polynomials ``a1``, ``a0`` (the limit of the layer-by-layer sketch)."""
    from .. import layers as L

    net = L.serial(*[L.Dense(1, W_std=W_std, b_std=b_std), L.ReLU()] * depth,
                   L.Dense(1, W_std=W_std, b_std=b_std))
    c = torch.linspace(-1.0, 1.0, 2001, dtype=torch.float64)
    sine = (1 - c * c).clamp(min=0).sqrt()
    worst = 0.0
    for n1 in (0.25, 1.0, 4.0):
        for n2 in (0.25, 1.0, 4.0):
            u = torch.tensor([[math.sqrt(2 * n1), 0.0]], dtype=torch.float64)
            v = torch.stack([c, sine], 1) * math.sqrt(2 * n2)
            exact = net.kernel(u, v).ntk[0]
            diag = (net.kernel(u).ntk[0, 0] * net.kernel(v[:1]).ntk[0, 0]).sqrt()
            q11, q22 = W_std**2 * n1 + b_std**2, W_std**2 * n2 + b_std**2
            q12 = W_std**2 * math.sqrt(n1 * n2) * c + b_std**2
            theta = q12
            for _ in range(depth):
                cos = q12 / math.sqrt(q11 * q22)
                p1 = sum(float(a) * cos**j for j, a in enumerate(a1))
                p0 = sum(float(a) * cos**j for j, a in enumerate(a0))
                q12 = W_std**2 * math.sqrt(q11 * q22) * p1 + b_std**2
                theta = q12 + W_std**2 * p0 * theta
                q11 = W_std**2 * q11 * float(a1.sum()) + b_std**2
                q22 = W_std**2 * q22 * float(a1.sum()) + b_std**2
            worst = max(worst, float(((theta - exact).abs() / diag).max()))
    return worst


@functools.lru_cache(maxsize=32)
def _layered_poly_error(depth: int, W_std: float, b_std: float, degree: int) -> float:
    """:func:`layered_poly_error` of :func:`relu_polynomials`, computed once per network."""
    a1, a0, _, _ = _relu_polynomials(degree)
    return layered_poly_error(depth, W_std, b_std, a1, a0)


def _active(coef) -> list[int]:
    """The degrees ``j >= 1`` with a nonzero coefficient (an array or a tensor, read once)."""
    return [j for j, a in enumerate(coef.tolist()) if j >= 1 and a > 0]
