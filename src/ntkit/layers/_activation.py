"""Elementwise nonlinearities: the shared kernel map, and the parameter-free Identity."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from ..kernel import Kernel, restore_diagonal
from ._base import Layer
from ._serialize import register_layer

__all__ = ["Activation", "ActivationModule", "Identity"]


class Activation(Layer):
    """An elementwise nonlinearity ``phi`` applied to Gaussian pre-activations.

    With ``(u, v) ~ N(0, [[K11, K12], [K12, K22]])`` the kernel map is
    ``K12 <- E[phi(u) phi(v)]`` and ``Theta <- Theta * E[phi'(u) phi'(v)]`` (Jacot et al.
    2018; the expectations are ``expectations``). Subclasses give ``phi`` (the finite twin) and
    ``expectations``.
    """

    def phi(self, x: Tensor) -> Tensor:
        """The nonlinearity on finite activations."""
        raise NotImplementedError

    def expectations(self, q12: Tensor, q11: Tensor, q22: Tensor,
                     *, ntk: bool) -> tuple[Tensor, Tensor | None]:
        """``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` with ``u, v`` variances ``q11, q22`` and
        covariance ``q12`` (broadcastable tensors); the second is ``None`` unless ``ntk``.
        Must not modify its arguments."""
        raise NotImplementedError

    def expectations_into(self, q12: Tensor, q11: Tensor, q22: Tensor, *, ntk: bool,
                          out: Tensor | None = None, tdot: Tensor | None = None,
                          scratch: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """:meth:`expectations`, written into buffers of the pairs' shape when given: ``out``
        receives ``E[phi(u) phi(v)]`` (it may be ``q12`` itself), ``tdot`` (working space
        even when ``ntk`` is false) ``E[phi'(u) phi'(v)]``, ``scratch`` is working space.
        The fused fully connected chain (``_fc_chain``) calls it on reused buffers. This
        default allocates (it calls :meth:`expectations`) and copies; the closed forms of
        ``_closed_form`` work in the buffers, and their :meth:`expectations` is this method
        without buffers."""
        nngp, t = self.expectations(q12, q11, q22, ntk=ntk)
        if out is not None:
            nngp = out.copy_(nngp)
        if t is not None and tdot is not None:
            t = tdot.copy_(t)
        return nngp, t

    def mask_role(self):
        return "keep"  # position by position

    def fc_role(self):
        return "activation" if type(self).kernel_fn is Activation.kernel_fn else None

    def out_shape(self, in_shape):
        return self._one(in_shape)

    def kernel_fn(self, k: Kernel) -> Kernel:
        k = self._one(k)
        if not k.is_gaussian:
            raise ValueError(
                f"{self!r} needs Gaussian pre-activations, but its input is raw data, the "
                f"output of another nonlinearity, or a FanInConcat: put a Dense before it, or "
                f"write two nonlinearities next to each other in one serial(...) so that they "
                f"are composed into one activation and integrated numerically"
            )
        need_ntk = k.ntk is not None
        # Images: every position is one Gaussian unit per channel; its variance is the spatial
        # diagonal of the covariance (``Kernel.var1``), so the same formulas apply entrywise.
        # Positions are flattened first: broadcasting over (N, N, P, P) is several times
        # faster than over (N, N, H, W, H, W).
        flat = _flatten_positions(k)
        if k.diagonal:
            nngp, tdot = self.expectations(flat.cov1, flat.var1, flat.var2, ntk=need_ntk)
            cov1, cov2 = nngp, None
        else:
            nngp, tdot = self.expectations(flat.nngp, flat.var1, flat.var2, ntk=need_ntk)
            # The general formula at (q, q, q), as neural-tangents does, so that the diagonal
            # of nngp and cov agree (both are made identical below when x1 is x2).
            cov1 = self.expectations(flat.cov1, *flat.self_variances(flat.cov1), ntk=False)[0]
            cov2 = None if k.cov2 is None else self.expectations(
                flat.cov2, *flat.self_variances(flat.cov2), ntk=False)[0]
            if k.x1_is_x2:
                # Exact diagonal. (Exact symmetry is restored once, at the end, by the block
                # driver: every entry depends only on the same entry of the layer before.)
                restore_diagonal(nngp, cov1)
        shape = k.nngp.shape
        nngp, cov1 = nngp.reshape(shape), cov1.reshape(k.cov1.shape)
        cov2 = None if cov2 is None else cov2.reshape(k.cov2.shape)
        tdot = None if tdot is None else tdot.reshape(shape)
        return k.replace(
            nngp=nngp,
            ntk=None if tdot is None else k.ntk * tdot,
            cov1=cov1,
            cov2=cov2,
            is_gaussian=False,
            linear_in=frozenset(),
        )

    def build(self, in_shape, generator, dtype) -> nn.Module:
        return ActivationModule(self)


def _flatten_positions(k: Kernel) -> Kernel:
    """``k`` with the positions of a full spatial kernel flattened to one axis each:
    ``(N1, N2, P, P)``, ``cov1`` ``(N1, P, P)`` (views where possible); others unchanged."""
    if not k.full_spatial:
        return k
    p = math.prod(k.shape1[2:])

    def flat(t: Tensor | None, batch: int) -> Tensor | None:
        return None if t is None else t.reshape(*t.shape[:batch], p, p)

    return k.replace(nngp=flat(k.nngp, 1 if k.diagonal else 2), cov1=flat(k.cov1, 1),
                     cov2=flat(k.cov2, 1), shape1=k.shape1[:2] + (p,),
                     shape2=k.shape2[:2] + (p,))


class ActivationModule(nn.Module):
    """Finite twin of an :class:`Activation`: applies ``activation.phi`` elementwise."""

    def __init__(self, activation: Activation):
        super().__init__()
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.activation.phi(x)

    def extra_repr(self) -> str:
        return repr(self.activation)


@register_layer
@dataclass(frozen=True)
class Identity(Layer):
    """The identity: the kernel passes through unchanged (as do its Gaussianity and sources).

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> x = torch.eye(2, dtype=torch.float64)
        >>> L.serial(L.Dense(3), L.Identity()).kernel(x).nngp.tolist()
        [[0.5, 0.0], [0.0, 0.5]]
    """

    def mask_role(self):
        return "keep"  # position by position

    def out_shape(self, in_shape):
        return in_shape

    def kernel_fn(self, k):
        return k

    def build(self, in_shape, generator, dtype) -> nn.Module:
        return nn.Identity()
