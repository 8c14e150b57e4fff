"""NTK random features: Zandieh, Han, Avron, Shoham, Kapralov & Shin, "Scaling Neural Tangent
Kernels via Sketching and Random Features" (NeurIPS 2021), §4 (NTK random features, their
Algorithm 2), in ntkit's conventions.

The NTK of ``depth`` times ``(Dense(W_std, b_std), ReLU)`` then ``Dense(1, W_std, b_std)``
(DESIGN.md): ``q_1 = W^2 x.x'/d + b^2``, ``Theta_1 = q_1``, and per hidden layer ``l``:
``K_l = E[relu relu](q_l)``, ``T_l = E[relu' relu'](q_l)``, ``q_{l+1} = W^2 K_l + b^2``,
``Theta_{l+1} = W^2 Theta_l T_l + q_{l+1}``; the network's NTK is ``Theta_{depth+1}``.
Features mirror each line: ``g_l`` (``g . g' ≈ q_l``), ``f_l = relu(Omega_l g_l)/sqrt(h)``
(``≈ K_l``, arc-cosine order 1), ``s_l = step(Omega_l g_l)/sqrt(h)`` (``≈ T_l``, order 0, from
the same projection), ``t_l`` (``t . t' ≈ Theta_l``) and

    g_{l+1} = [W f_l, b],        t_{l+1} = [W Q_l(t_l ⊗ s_l), g_{l+1}],

with ``Q_l`` a TensorSRHT (``ntkit.features._sketch``) to ``r`` dimensions. Splitting ``m``:
``c = 1`` bias column if ``b_std > 0``, ``h = (m - c) // 2`` arc-cosine features, ``r = m - c -
h`` sketch features (Zandieh et al. take ``m1`` and ``ms`` as free; an even split makes the
two terms of ``Theta`` cost the same). At ``depth = 1`` every factor is independent of the
one it multiplies (``t_1 = g_1`` is exact), so ``E[t_2 . t_2'] = Theta_2`` exactly; deeper,
``q_l`` and ``Theta_l`` are estimates and the products carry an ``O(1/m)`` bias.
"""

from __future__ import annotations

import torch

from ._arccos import DenseReLUFeatureMap, check_dense_params, dense
from ._sketch import put_tensor_srht

__all__ = ["NTKFeatures"]


class NTKFeatures(DenseReLUFeatureMap):
    """Random features of the NTK of ``depth`` times ``(Dense(W_std, b_std), ReLU)`` then
    ``Dense(1, W_std, b_std)`` in ntkit's conventions (Zandieh et al. 2021, NTK random features).

    ``phi(x) . phi(x')`` estimates ``L.serial(*[L.Dense(., W_std, b_std), L.ReLU()] * depth,
    L.Dense(1, W_std, b_std)).kernel(x, x').ntk``: exactly unbiased at ``depth = 1``, with an
    ``O(1/m)`` bias deeper (the module docstring gives the construction and the split of
    ``m`` into ``h`` arc-cosine, ``r`` sketch and one bias feature).

    **Arguments:**

    - ``n_components``: ``m``, the number of features, ``>= 2 + c`` (``c = 1`` if
      ``b_std > 0``).
    - ``depth``: number of hidden ``Dense - ReLU`` layers, ``>= 1``.
    - ``W_std`` (``> 0``), ``b_std`` (``>= 0``): of every Dense, as in ``ntkit.layers.Dense``.
    - ``random_state``: ``None``, an int, a ``torch.Generator`` or a NumPy random state.

    **Returns** (``transform`` / ``forward``): ``(N, m)`` from ``(N, d)``.

    Example:
        >>> from ntkit import layers as L
        >>> x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> phi = NTKFeatures(20000, depth=1, random_state=0).fit(x)
        >>> ntk = L.serial(L.Dense(1), L.ReLU(), L.Dense(1)).kernel(x).ntk
        >>> bool(((phi(x) @ phi(x).T - ntk).abs() < 0.05 * ntk.diagonal().max()).all())
        True
    """

    def _split(self) -> tuple[int, int, int]:
        """``(c, h, r)``: bias columns, arc-cosine features, sketch features."""
        c = int(self.b_std > 0)
        h = (self.n_components - c) // 2
        return c, h, self.n_components - c - h

    def _check_hyper(self, d):
        check_dense_params(self, minimum=2)

    def _draw(self, d, generator):
        c, h, r = self._split()
        draws = {}
        for layer in range(self.depth):
            g_dim = d + c if layer == 0 else h + c
            t_dim = d + c if layer == 0 else self.n_components
            draws[f"omega{layer}"] = torch.randn(h, g_dim, generator=generator,
                                                 dtype=torch.float64)
            put_tensor_srht(draws, f"q{layer}_", t_dim, h, r, generator)
        return draws

    def _features(self, x):
        w, b = float(self.W_std), float(self.b_std)
        c, h, r = self._split()
        g = dense(x, W_std=w, b_std=b, scale=x.shape[1] ** -0.5)
        t = g
        for layer in range(self.depth):
            u = g @ self._buffer(f"omega{layer}_", x).T
            f = torch.relu(u) * h**-0.5
            s = (u > 0).to(x.dtype) * h**-0.5
            sketch = self._tensor_srht(f"q{layer}_", t, s)
            g = dense(f, W_std=w, b_std=b)
            t = torch.cat([sketch * w, g], dim=1)
        return t
