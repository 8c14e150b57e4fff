"""Gaussian expectations of one activation at one variance, from the layer's own formulas.

The pair expectations ``E[phi phi]`` and ``E[phi' phi']`` come from the activation's
``expectations`` (closed form or Gauss-Hermite quadrature: one source of truth); what a layer
does not know (``E[phi^4]``) is a 1-D quadrature of its ``phi``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .._checks import real_number
from ..layers import Activation, Elementwise
from ..layers import activation as named_activation
from ..layers._functions import ELEMENTWISE_FUNCTIONS
from ..layers._named import ACTIVATIONS

__all__ = ["as_activation", "pair_means", "d_phi_sq", "phi_moment"]

_DTYPE = torch.float64


def as_activation(activation, **kwargs) -> Activation:
    """An :class:`~ntkit.layers.Activation` from a layer or a name.

    Names are those of :data:`ntkit.layers.ACTIVATIONS` (``kwargs`` go to the factory, e.g.
    ``negative_slope`` for ``"leaky_relu"``) or of a torch function ntkit stores by name
    (``"tanh"``, ``"silu"``, ``"sigmoid"``...), which becomes an ``Elementwise`` layer.
    """
    if isinstance(activation, Activation):
        if kwargs:
            raise TypeError(f"keyword arguments {sorted(kwargs)} only apply to an activation "
                            f"given by name; got the layer {activation!r}")
        return activation
    if isinstance(activation, str):
        if activation in ACTIVATIONS:
            return named_activation(activation, **kwargs)
        if activation in ELEMENTWISE_FUNCTIONS:
            # Scalars only here, so a finer rule than the layer default costs nothing; the
            # critical point of silu moves by 40% between deg 26 and 120 (quadrature error
            # at variance ~14), and by 1e-3 beyond.
            kwargs.setdefault("deg", 120)
            return Elementwise(ELEMENTWISE_FUNCTIONS[activation], **kwargs)
        known = sorted(set(ACTIVATIONS) | set(ELEMENTWISE_FUNCTIONS))
        raise ValueError(f"activation: unknown name {activation!r}; expected one of {known} "
                         f"or an ntkit.layers activation layer")
    raise TypeError(f"activation must be an ntkit.layers Activation or its name; got "
                    f"{type(activation).__name__}")


def pair_means(act: Activation, k, rho=None, *,
               ntk: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` for ``u, v`` of variance ``k`` and covariance
    ``rho * k`` (``rho = 1``: the same unit), as float64 tensors of the broadcast shape (the
    second ``None`` unless ``ntk``)."""
    k = torch.as_tensor(k, dtype=_DTYPE)
    q12 = k.clone() if rho is None else torch.as_tensor(rho, dtype=_DTYPE) * k
    q12, k = torch.broadcast_tensors(q12, k)
    nngp, tdot = act.expectations(q12.clone(), k.clone(), k.clone(), ntk=ntk)
    return nngp, tdot


def d_phi_sq(act: Activation, k: float) -> float:
    """``d E[phi(z)^2] / dK`` at ``K = k > 0``, a fourth-order central difference of the
    layer's ``E[phi phi]`` (step ``1e-3 k``: truncation ``~1e-12``, rounding ``~1e-13``)."""
    h = 1e-3 * k
    ks = torch.tensor([k - 2 * h, k - h, k + h, k + 2 * h], dtype=_DTYPE)
    f = pair_means(act, ks)[0]
    return float((f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h))


@lru_cache(maxsize=4)
def _half_line_rule(panels: int, nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Composite Gauss-Legendre on [0, 12] for the standard normal density: a kink of phi at 0
    # (relu) falls on a panel edge, so the rule stays spectrally accurate on each side.
    x, w = np.polynomial.legendre.leggauss(nodes)
    edges = np.linspace(0.0, 12.0, panels + 1)
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    z = (mid[:, None] + half[:, None] * x).ravel()
    wz = (half[:, None] * w).ravel() * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    return torch.tensor(z, dtype=_DTYPE), torch.tensor(wz, dtype=_DTYPE)


def phi_moment(act: Activation, k: float, power: int) -> float:
    """``E[phi(z)^power]`` for ``z ~ N(0, k)``, by quadrature on both half-lines (the mass
    beyond 12 standard deviations, ``~1e-33``, is dropped)."""
    k = real_number(k, "K", minimum=0.0)
    z, w = _half_line_rule(48, 16)
    sd = k ** 0.5
    out = act.phi(sd * z).pow(power) @ w + act.phi(-sd * z).pow(power) @ w
    return float(out)
