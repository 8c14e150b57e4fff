"""NTK sketch: Zandieh et al. 2021 (NeurIPS), §3 (their Algorithm 1, "NTKSketch"), in ntkit's
conventions, for networks without biases.

Without biases the ReLU NTK of ``depth`` times ``(Dense(W_std), ReLU)`` then ``Dense(1, W_std)``
is homogeneous: ``Theta(x, y) = n_x n_y F(c)`` with ``n_x = |x| / sqrt(d)`` and ``c`` the cosine
of the angle between ``x`` and ``y``, where ``F`` is the network's NTK on two inputs of norm
``sqrt(d)`` at cosine ``c`` (taken from ``ntkit.layers``, the one source of the formula).
``F`` is replaced by a polynomial ``P(c) = sum_j a_j c^j`` with ``a_j >= 0`` (least squares on
Chebyshev nodes, the endpoint ``c = 1``, the diagonal, weighted up), so that

    phi(x) = n_x [sqrt(a_0), sqrt(a_1) S_1(x̂), ..., sqrt(a_q) S_q(x̂)],    x̂ = x / |x|,

with ``S_j`` an unbiased sketch of the tensor power ``x̂^{⊗j}`` (``E[S_j(x̂) . S_j(ŷ)] =
c^j``): a balanced binary tree of TensorSRHTs (Ahle et al. 2020's PolySketch shape: the
variance grows polynomially, not exponentially, in ``j``). ``E[phi(x) . phi(y)] = n_x n_y
P(c)`` exactly, so the error is the sketch's (``O(m^-1/2)``) plus the fixed polynomial error
``n_x n_y |P(c) - F(c)|``, which :attr:`NTKSketch.poly_error_` reports (its maximum over
``[-1, 1]``, relative to ``F(1)``).

Left out from the paper: the final SRHT that compresses the concatenation (here each degree
gets its own share of ``m``, ``m_j = (m - 1) / #{j >= 1: a_j > 0}``), and the reuse of tree
nodes across degrees; biases (``b_std > 0``) break the homogeneity and are refused.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from torch import Tensor

from ._arccos import _B_STD, _DEPTH, _W_STD
from ._base import RandomFeatureMap
from ._sketch import draw_tensor_srht, tensor_srht

__all__ = ["NTKSketch", "ntk_polynomial"]


def ntk_polynomial(depth: int, W_std: float, degree: int) -> tuple[np.ndarray, float]:
    """Nonnegative coefficients ``a_0..a_degree`` of ``P(c) ≈ F(c)`` (the bias-free ReLU NTK
    at unit ``n_x = n_y``, from ``ntkit.layers``) and ``max |P - F| / F(1)`` on ``[-1, 1]``.

    **Returns:** ``(a, rel_err)``: ``(degree + 1,)`` float64 array and a float.

    Example:
        >>> a, err = ntk_polynomial(1, 1.0, 16)
        >>> bool((a >= 0).all()), err < 0.05
        (True, True)
    """
    from scipy.optimize import nnls

    from .. import layers as L

    net = L.serial(*[L.Dense(1, W_std=W_std, b_std=None), L.ReLU()] * depth,
                   L.Dense(1, W_std=W_std, b_std=None))

    def f(c: np.ndarray) -> np.ndarray:
        c = torch.from_numpy(c)
        v = torch.stack([c, (1 - c * c).clamp(min=0).sqrt()], 1) * math.sqrt(2.0)
        u = torch.tensor([[math.sqrt(2.0), 0.0]], dtype=torch.float64)
        return net.kernel(u, v).ntk[0].numpy()

    nodes = np.cos((2 * np.arange(400) + 1) * np.pi / 800)  # Chebyshev: dense near ±1
    dense_c = np.linspace(-1.0, 1.0, 2001)  # where the error is measured (ends at c = 1)
    values = f(np.concatenate([nodes, dense_c]))
    c = np.concatenate([nodes, [1.0]])
    target_fit = np.concatenate([values[:400], values[-1:]])
    weights = np.ones_like(c)
    weights[-1] = 20.0  # the diagonal Theta(x, x) weighs like many off-diagonal entries
    a, _ = nnls(np.vander(c, degree + 1, increasing=True) * weights[:, None],
                target_fit * weights)
    target = values[400:]
    err = np.abs(np.vander(dense_c, degree + 1, increasing=True) @ a - target).max()
    return a, float(err / target[-1])


def _tree(j: int, name: str) -> list[tuple[str, int, int]]:
    """Post-order internal nodes ``(name, left degree, right degree)`` of the balanced tree
    that sketches a degree-``j`` tensor power (``j >= 2``; leaves are ``x̂`` itself)."""
    if j == 1:
        return []
    left, right = j // 2, j - j // 2
    return _tree(left, name + "l") + _tree(right, name + "r") + [(name, left, right)]


class NTKSketch(RandomFeatureMap):
    """NTK sketch features (Zandieh et al. 2021, §3) of the NTK of ``depth`` times
    ``(Dense(W_std), ReLU)`` then ``Dense(1, W_std)``, no biases, in ntkit's conventions.

    ``phi(x) . phi(y)`` is unbiased for ``n_x n_y P(c)``, the degree-``degree`` nonnegative
    polynomial fit of the NTK (module docstring), whose relative error ``poly_error_`` is the
    floor the sketch converges to; the sketch's own error falls like ``m^-1/2``.

    **Arguments:**

    - ``n_components``: ``m``, ``>= 1 +`` the number of nonzero ``a_j`` (``j >= 1``).
    - ``depth``: number of hidden ``Dense - ReLU`` layers, ``>= 1``; ``W_std > 0``.
    - ``b_std``: must be 0 (the sketch needs a kernel of the angle times the norms; with
      biases use :class:`NTKFeatures`).
    - ``degree``: of the polynomial, ``>= 1``.
    - ``random_state``: ``None``, an int, a ``torch.Generator`` or a NumPy random state.

    **Returns** (``transform`` / ``forward``): ``(N, m)`` from ``(N, d)``. Fitted:
    ``coef_`` (``(degree + 1,)``, the ``a_j``), ``poly_error_``.

    Example:
        >>> from ntkit import layers as L
        >>> x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> phi = NTKSketch(20000, depth=1, degree=16, random_state=0).fit(x)
        >>> ntk = L.serial(L.Dense(1), L.ReLU(), L.Dense(1)).kernel(x).ntk
        >>> bool(((phi(x) @ phi(x).T - ntk).abs() < 0.1 * ntk.diagonal().max()).all())
        True
    """

    _parameter_constraints: dict = {
        **RandomFeatureMap._parameter_constraints,
        "depth": _DEPTH,
        "W_std": _W_STD,
        "b_std": _B_STD,
        "degree": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, n_components: int = 100, *, depth: int = 1, W_std: float = 1.0,
                 b_std: float = 0.0, degree: int = 8, random_state=None):
        super().__init__()
        self.n_components = n_components
        self.depth = depth
        self.W_std = W_std
        self.b_std = b_std
        self.degree = degree
        self.random_state = random_state

    def _check_hyper(self, d):
        if self.b_std != 0:
            raise ValueError(f"b_std must be 0 for NTKSketch (with biases the NTK is not the "
                             f"norms times a function of the angle); got {self.b_std!r}: use "
                             f"NTKFeatures for networks with biases")
        if not math.isfinite(self.W_std):
            raise ValueError(f"W_std must be finite; got {self.W_std!r}")

    def _plan(self, coef: np.ndarray) -> list[tuple[int, int]]:
        """``(j, m_j)`` for each degree ``j >= 1`` with ``a_j > 0``."""
        active = [j for j in range(1, len(coef)) if coef[j] > 0]
        if self.n_components < 1 + len(active):
            raise ValueError(f"n_components must be >= {1 + len(active)} for NTKSketch with "
                             f"degree={self.degree} (one feature for a_0 and one per nonzero "
                             f"coefficient); got {self.n_components}")
        share, extra = divmod(self.n_components - 1, len(active))
        return [(j, share + (i < extra)) for i, j in enumerate(active)]

    def _draw(self, d, generator):
        coef, err = ntk_polynomial(self.depth, float(self.W_std), self.degree)
        self.poly_error_ = err
        draws = {"coef": torch.from_numpy(coef)}
        for j, m_j in self._plan(coef):
            if j == 1:
                for key, value in draw_tensor_srht(d, 1, m_j, generator).items():
                    draws[f"d1_{key}"] = value
            for name, left, right in _tree(j, f"d{j}_"):
                p = d if left == 1 else m_j
                q = d if right == 1 else m_j
                for key, value in draw_tensor_srht(p, q, m_j, generator).items():
                    draws[f"{name}{key}"] = value
        return draws

    def _features(self, x):
        coef = self._buffer("coef_", x)
        norm = x.norm(dim=1, keepdim=True)
        unit = x / torch.where(norm > 0, norm, torch.ones_like(norm))
        scale = norm * x.shape[1] ** -0.5
        parts = [coef[0].sqrt() * scale]
        for j, _ in self._plan(coef.detach().cpu().numpy()):
            parts.append(coef[j].sqrt() * scale * self._power(unit, j))
        return torch.cat(parts, dim=1)

    def _power(self, unit: Tensor, j: int) -> Tensor:
        """``S_j(unit)``, ``(N, m_j)``: the tree of :func:`_tree`, leaves ``unit``."""
        def srht(name: str, t: Tensor, s: Tensor) -> Tensor:
            return tensor_srht(t, s, *(self._buffer(f"{name}{key}_", unit)
                                       for key in ("sigma", "tau", "rows")))

        if j == 1:
            return srht("d1_", unit, torch.ones_like(unit[:, :1]))
        done: dict[str, Tensor] = {}
        for name, left, right in _tree(j, f"d{j}_"):
            t = unit if left == 1 else done.pop(name + "l")
            s = unit if right == 1 else done.pop(name + "r")
            done[name] = srht(name, t, s)
        return done[f"d{j}_"]
