"""The prior kernel map of a deep kernel machine, ``G -> K(G)``, on Gram blocks.

A DKM layer's prior mean is the NNGP map of one ``Dense`` after an activation, applied to the
Gram of the layer below: ``K(G)_{ab} = W_std^2 E[phi(u) phi(v)] + b_std^2`` with
``(u, v) ~ N(0, [[G_aa, G_ab], [G_ab, G_bb]])`` (Yang et al. 2023, sec. 4; the same recursion as
:mod:`ntkit.layers`, whose ``Activation.expectations`` is the one source of the expectations).
The first Gram is the first ``Dense`` layer's pre-activation kernel of the inputs,
``G^0 = W_std^2 x . x' / d + b_std^2`` (ntkit's input convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..layers import ABReLU, Activation

__all__ = ["GramMap"]


class _HomogeneousExpectation(torch.autograd.Function):
    """``E[phi(u) phi(v)]`` of a positively homogeneous ``phi`` (the arc-cosine family) with
    gradients from the layer's own expectations.

    ``ntkit.layers``' closed forms work in place, which autograd cannot differentiate, and the
    angle's square root has an infinite derivative at ``c = 1`` although ``E`` is smooth there.
    Price's theorem gives ``dE/dq12 = E[phi'(u) phi'(v)]``; with ``E = sqrt(q11 q22) J(c)``,
    ``c = q12 / sqrt(q11 q22)`` and ``J' = E[phi' phi']`` (scale-free for degree 1),
    ``dE/dq11 = (E - q12 E[phi' phi']) / (2 q11)`` and likewise for ``q22``.
    """

    @staticmethod
    def forward(ctx, q12, q11, q22, activation):
        e, tdot = activation.expectations(q12, q11, q22, ntk=True)
        ctx.save_for_backward(q12, q11, q22, e, tdot)
        return e

    @staticmethod
    def backward(ctx, grad):
        q12, q11, q22, e, tdot = ctx.saved_tensors
        rest = e - q12 * tdot
        tiny = torch.finfo(q11.dtype).tiny
        g11 = grad * rest / (2 * q11.clamp(min=tiny))
        g22 = grad * rest / (2 * q22.clamp(min=tiny))
        return (_reduce(grad * tdot, q12), _reduce(g11, q11), _reduce(g22, q22), None)


def _reduce(g: Tensor, like: Tensor) -> Tensor:
    """``g`` summed down to the broadcast shape of ``like``."""
    while g.ndim > like.ndim:
        g = g.sum(0)
    for i, n in enumerate(like.shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(i, keepdim=True)
    return g


@dataclass(frozen=True)
class GramMap:
    """``K(G) = W_std^2 E[phi(u) phi(v)] + b_std^2`` on Gram entries, differentiable in ``G``.

    **Fields:** ``activation``, an :class:`~ntkit.layers.Activation` (the arc-cosine family
    ``ReLU``/``LeakyReLU``/``Abs``/``ABReLU``, or one whose ``expectations`` autograd can
    differentiate, such as ``Erf`` and ``GELU``); ``W_std``, ``b_std`` the ``Dense`` scales.

    Example:
        >>> from ntkit import layers as L
        >>> m = GramMap(L.ReLU(), W_std=2.0 ** 0.5, b_std=0.0)
        >>> q = torch.tensor([2.0], dtype=torch.float64)
        >>> round(float(m(q, q, q)[0]), 12)  # E[relu(u)^2] = q / 2, times W_std^2 = 2
        2.0
    """

    activation: Activation
    W_std: float
    b_std: float

    def __call__(self, q12: Tensor, q11: Tensor, q22: Tensor) -> Tensor:
        """The map on broadcastable covariances ``q12`` and variances ``q11``, ``q22``."""
        if isinstance(self.activation, ABReLU):
            e = _HomogeneousExpectation.apply(q12, q11, q22, self.activation)
        else:
            e = self.activation.expectations(q12, q11, q22, ntk=False)[0]
        return self.W_std**2 * e + self.b_std**2

    def blocks(self, g_ii: Tensor, g_ti: Tensor, g_tt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``K`` on the blocks a DKM keeps: ``(K_ii (M, M), K_ti (N, M), diag K_tt (N,))`` from
        ``G_ii (M, M)``, ``G_ti (N, M)`` and ``diag G_tt (N,)``."""
        d_i = g_ii.diagonal()
        k_ii = self(g_ii, d_i[:, None], d_i[None, :])
        k_ii = (k_ii + k_ii.T) / 2
        return k_ii, self(g_ti, g_tt[:, None], d_i[None, :]), self(g_tt, g_tt, g_tt)

    def input_gram(self, x_i: Tensor, x_t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The first ``Dense``'s Gram blocks ``W_std^2 x . x' / d + b_std^2`` of inducing inputs
        ``x_i (M, d)`` and data ``x_t (N, d)``: ``(G_ii, G_ti, diag G_tt)``."""
        d = x_i.shape[1]
        w2, b2 = self.W_std**2 / d, self.b_std**2
        return (w2 * x_i @ x_i.T + b2, w2 * x_t @ x_i.T + b2,
                w2 * (x_t * x_t).sum(1) + b2)


def check_differentiable(activation: Activation) -> None:
    """Raise ``TypeError`` unless :class:`GramMap` can differentiate ``activation``'s map."""
    if isinstance(activation, ABReLU):
        return
    q = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([0.3, -0.5], dtype=torch.float64, requires_grad=True)
    try:
        activation.expectations(c, q, q.flip(0), ntk=False)[0].sum().backward()
    except RuntimeError as err:
        raise TypeError(
            f"activation {activation!r}: autograd cannot differentiate its expectations "
            f"({err}); use the arc-cosine family (relu, leaky_relu, abs) or erf / gelu") from None
    if not (bool(torch.isfinite(q.grad).all()) and bool(torch.isfinite(c.grad).all())):
        raise TypeError(f"activation {activation!r}: its expectations have non-finite "
                        f"gradients")
