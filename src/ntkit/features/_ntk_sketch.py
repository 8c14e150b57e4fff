"""NTK sketch: Zandieh et al. 2021 (NeurIPS), §3 (their Algorithm 1, "NTKSketch"), in ntkit's
conventions.

With ``x̃ = [W_std x / sqrt(d), b_std]`` (the bias as a constant coordinate, none when
``b_std = 0``), ``r = |x̃|`` and ``c`` the cosine of the angle between ``x̃`` and ``ỹ``, the
first layer's pre-activation kernel is ``q_1 = x̃ . ỹ = r_x r_y c``. Two cases are products of
the norms and a function of the angle:

- no biases, any ``depth``: every layer is positively homogeneous, so ``Theta(x, y) = r_x r_y
  F(c)`` with ``F = F_0 / W_std^2``, ``F_0`` the network's NTK on two inputs of norm
  ``sqrt(d)`` at cosine ``c`` (taken from ``ntkit.layers``, the one source of the formula);
- biases and ``depth = 1``: ``Theta = W^2 q_1 kappa_0(c) + W^2 r_x r_y kappa_1(c) + b^2 =
  r_x r_y F(c) + b^2`` with the same ``F`` (``kappa_0``, ``kappa_1`` ntkit's ReLU
  expectations at unit variances): the bias adds one exact constant feature.

Deeper networks with biases are not of this form: ``q_2 = W^2 r_x r_y kappa_1(c) + b^2``
normalises by ``sqrt(q_2(x, x) q_2(y, y)) = sqrt((W^2 r_x^2 / 2 + b^2)(W^2 r_y^2 / 2 + b^2))``,
which is not ``r_x r_y`` times a constant, so the second ReLU sees an angle that depends on the
norms (``NTKFeatures`` handles them). ``F`` is replaced by ``P(c) = sum_j a_j c^j`` with
``a_j >= 0`` (:func:`ntk_polynomial`), and

    z(x) = r_x [sqrt(a_1) S_1(x̂), ..., sqrt(a_q) S_q(x̂)],    x̂ = x̃ / r_x,
    phi(x) = [r_x sqrt(a_0), b_std, R z(x)],

with ``S_j`` an unbiased sketch of the tensor power ``x̂^{⊗j}`` (``E[S_j(x̂) . S_j(ŷ)] = c^j``;
``S_1 = x̂`` exactly) and ``R`` the paper's final SRHT from the concatenation to the
``n_components - 1 - (b_std > 0)`` remaining features (``E[R^T R] = I``), when ``sketch_dim``
is given; by default ``R`` is the identity and each degree gets an equal share of the
features (``S_1`` then an SRHT of ``x̂`` to its share). So
``E[phi(x) . phi(y)] = r_x r_y P(c) + b^2`` exactly: the error is the sketch's
(``O(m^-1/2)``) plus the fixed polynomial error ``r_x r_y |P(c) - F(c)|``, which
:attr:`NTKSketch.poly_error_` reports (its maximum over ``[-1, 1]``, relative to ``F(1)``).

**One tree for all degrees.** The ``S_j`` come from one balanced binary tree of TensorSRHTs
over ``2^L >= q`` leaves, each leaf ``x̂`` (Ahle et al. 2020's PolySketch: the variance grows
polynomially, not exponentially, in the degree): a node over a dyadic block of ``2^h`` leaves
sketches ``x̂^{⊗2^h}`` to ``sketch_dim`` coordinates. ``[0, j)`` is the union of at most
``L + 1`` disjoint dyadic blocks (the binary digits of ``j``), whose nodes use independent
randomness, so ``S_j`` is their sketches joined left to right by ``popcount(j) - 1`` further
TensorSRHTs of its own. All degrees up to ``q`` then cost at most the tree's ``2^L - 1`` nodes plus
``sum_j (popcount(j) - 1)`` joins (``12`` TensorSRHTs at ``q = 8``, ``32`` at ``q = 16``)
instead of ``sum_j (j - 1)`` for one tree per degree (``28`` and ``120``). Degrees share
nodes, so their sketches are correlated; ``E[phi . phi']`` is linear in them and stays exact.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from torch import Tensor

from ._arccos import _B_STD, _DEPTH, _W_STD, check_dense_params, dense
from ._base import RandomFeatureMap
from ._sketch import draw_tensor_srht, tensor_srht

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


def dyadic_blocks(j: int) -> list[tuple[int, int]]:
    """``[0, j)`` as disjoint dyadic blocks ``(start, size)``, largest first (one per binary
    digit of ``j``).

    Example:
        >>> dyadic_blocks(6)
        [(0, 4), (4, 2)]
    """
    out, start = [], 0
    for h in range(j.bit_length() - 1, -1, -1):
        if j >> h & 1:
            out.append((start, 1 << h))
            start += 1 << h
    return out


def tree_nodes(degrees: list[int]) -> list[tuple[int, int]]:
    """The internal nodes ``(start, size)`` (``size >= 2``) of the tree that the blocks of
    ``degrees`` need, children before parents."""
    need: set[tuple[int, int]] = set()
    stack = [b for j in degrees for b in dyadic_blocks(j) if b[1] > 1]
    while stack:
        start, size = stack.pop()
        if (start, size) not in need:
            need.add((start, size))
            half = size // 2
            stack += [(s, half) for s in (start, start + half) if half > 1]
    return sorted(need, key=lambda node: (node[1], node[0]))


class NTKSketch(RandomFeatureMap):
    """NTK sketch features (Zandieh et al. 2021, §3) of the NTK of ``depth`` times
    ``(Dense(W_std, b_std), ReLU)`` then ``Dense(1, W_std, b_std)`` in ntkit's conventions.

    ``phi(x) . phi(y)`` is unbiased for ``r_x r_y P(c) + b_std^2``, with ``P`` the
    degree-``degree`` nonnegative polynomial fit of the NTK's angular part (module
    docstring), whose relative error ``poly_error_`` is the floor the sketch converges to;
    the sketch's own error falls like ``m^-1/2`` (with ``sketch_dim`` growing like ``m``).

    **Arguments:**

    - ``n_components``: ``m``, the number of features: one exact feature for ``a_0``, one
      for the bias (if ``b_std > 0``), the rest the sketches', at least one per nonzero
      ``a_j`` (``sketch_dim=None``) or one (``sketch_dim`` given).
    - ``depth``: number of hidden ``Dense - ReLU`` layers, ``>= 1``; ``W_std > 0``.
    - ``b_std``: ``>= 0``; ``> 0`` only with ``depth = 1`` (deeper, the NTK is not the norms
      times a function of the angle: use :class:`NTKFeatures`).
    - ``degree``: of the polynomial, ``>= 1``.
    - ``sketch_dim``: ``None`` (default): no final SRHT; every node of the tree has the
      width ``(m - 1 - (b_std > 0)) / #{j >= 1: a_j > 0}`` and the degrees' sketches are
      concatenated as they are (each degree its equal share of ``m``, ``S_1`` an SRHT of
      ``x̂``). An int: the paper's layout, every TensorSRHT of the tree to ``sketch_dim``
      coordinates, and the concatenation (``d`` plus about ``degree * sketch_dim`` numbers)
      compressed to ``m`` by a final SRHT. At equal ``m`` the compression adds its own
      variance; it pays when the output dimension matters more than the transform
      (docs/features.md gives the measured trade-off).
    - ``random_state``: ``None``, an int, a ``torch.Generator`` or a NumPy random state.

    **Returns** (``transform`` / ``forward``): ``(N, m)`` from ``(N, d)``. Fitted:
    ``coef_`` (``(degree + 1,)``, the ``a_j`` of ``P``, which approximates ``F_0 / W_std^2``),
    ``poly_error_``.

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

    def _check_hyper(self, d):
        check_dense_params(self, minimum=2)
        if self.b_std > 0 and self.depth > 1:
            raise ValueError(
                f"b_std > 0 needs depth=1 for NTKSketch (past one hidden layer the bias makes "
                f"the NTK depend on the norms other than through their product, see "
                f"ntkit.features._ntk_sketch); got b_std={self.b_std!r} with "
                f"depth={self.depth}: use NTKFeatures for deeper networks with biases")

    def _layout(self, coef: np.ndarray) -> tuple[list[int], int, int, int]:
        """``(active degrees, tree width, degree-1 width, zero columns)``; the last two only
        without a final SRHT (``sketch_dim=None``)."""
        active = [j for j in range(1, len(coef)) if coef[j] > 0]
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

    def _draw(self, d, generator):
        coef, err = ntk_polynomial(self.depth, float(self.W_std), self.degree)
        self.poly_error_ = err
        coef = coef / float(self.W_std) ** 2  # F = F_0 / W^2 in terms of r = W |x| / sqrt(d)
        draws = {"coef": torch.from_numpy(coef)}
        active, width, width1, _ = self._layout(coef)
        leaf = d + int(self.b_std > 0)

        def put(name: str, p: int, q: int, m: int) -> None:
            for key, value in draw_tensor_srht(p, q, m, generator).items():
                draws[f"{name}{key}"] = value

        for start, size in tree_nodes(active):
            side = leaf if size == 2 else width
            put(f"n{start}_{size}_", side, side, width)
        total = 0
        for j in active:
            blocks = dyadic_blocks(j)
            acc = leaf if j == 1 else width
            for k, (_, size) in enumerate(blocks[1:], 1):
                put(f"j{j}_{k}_", acc, leaf if size == 1 else width, width)
                acc = width
            total += acc
        if self.sketch_dim is not None:  # the paper's final SRHT of the concatenation
            put("out_", total, 1, self.n_components - 1 - int(self.b_std > 0))
        elif width1:  # degree 1 to its share of the features, as the others
            put("j1_srht_", leaf, 1, width1)
        return draws

    def _features(self, x):
        coef = self._buffer("coef_", x)
        active, _, width1, zeros = self._layout(coef.detach().cpu().numpy())
        xt = dense(x, W_std=float(self.W_std), b_std=float(self.b_std), scale=x.shape[1] ** -0.5)
        r = xt.norm(dim=1, keepdim=True)
        unit = xt / torch.where(r > 0, r, torch.ones_like(r))
        ones = torch.ones_like(r)
        nodes = self._tree(unit, active)
        parts = []
        for j in active:
            s_j = self._power(unit, j, nodes)
            if j == 1 and self.sketch_dim is None:
                s_j = self._srht("j1_srht_", s_j, ones)
            parts.append(coef[j].sqrt() * s_j)
        z = torch.cat(parts, dim=1) * r
        if self.sketch_dim is not None:
            z = self._srht("out_", z, ones)
        exact = [coef[0].sqrt() * r]
        if self.b_std > 0:
            exact.append(torch.full_like(r, float(self.b_std)))
        return torch.cat([*exact, z, r.new_zeros(r.shape[0], zeros)], dim=1)

    def _srht(self, name: str, t: Tensor, s: Tensor) -> Tensor:
        return tensor_srht(t, s, *(self._buffer(f"{name}{key}_", t)
                                   for key in ("sigma", "tau", "rows")))

    def _tree(self, unit: Tensor, degrees: list[int]) -> dict[tuple[int, int], Tensor]:
        """Every node's sketch ``(N, sketch_dim)`` of ``unit^{⊗size}``, and the leaves."""
        done = {(start, 1): unit for start in range(max(degrees))}
        for start, size in tree_nodes(degrees):
            half = size // 2
            done[start, size] = self._srht(f"n{start}_{size}_", done[start, half],
                                           done[start + half, half])
        return done

    def _power(self, unit: Tensor, j: int, nodes: dict) -> Tensor:
        """``S_j(unit)``: the blocks of ``[0, j)`` joined left to right."""
        blocks = dyadic_blocks(j)
        acc = nodes[blocks[0]]
        for k, block in enumerate(blocks[1:], 1):
            acc = self._srht(f"j{j}_{k}_", acc, nodes[block])
        return acc
