"""Reshaping layers: ``Flatten``, and the layout step the block driver inserts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from ..kernel import Kernel
from ._base import Layer
from ._budget import leaf_footprint
from ._serialize import register_layer
from ._spatial import diagonal_mean, reduce_positions, to_diagonal

__all__ = ["Flatten"]


@register_layer
@dataclass(frozen=True)
class Flatten(Layer):
    """``(N, C, *S) -> (N, C * prod(S))`` (``x.reshape(N, -1)``; identity on ``(N, d)``).

    A ``Dense`` after it weights every unit by ``1 / (C prod(S))``, so the kernel is the mean
    over positions of the same-position covariances, ``K' = mean_p K(p, p)``
    (neural-tangents' ``Flatten``); only those are needed, so a network ending in ``Flatten``
    is computed in the diagonal layout, ``(HW)^2`` times cheaper per pair than the full one.
    The flattened units have different variances at different positions, so the output is not
    one Gaussian field: a ``Dense`` must follow before any nonlinearity.

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
        >>> net = L.serial(L.Conv(8, (3, 3)), L.ReLU(), L.Flatten(), L.Dense(1))
        >>> net.kernel(x).ntk.shape, net.module((2, 4, 4))(x.float()).shape
        (torch.Size([3, 3]), torch.Size([3, 1]))
    """

    def plan(self, out_full):
        return self, False

    def out_shape(self, in_shape):
        return (math.prod(self._one(in_shape)),)

    def kernel_fn(self, k: Kernel) -> Kernel:
        k = self._one(k)
        s = k.n_spatial
        if s == 0:
            return k
        full = k.full_spatial

        def flat(t: Tensor) -> Tensor:
            return diagonal_mean(t, s, full)

        return reduce_positions(
            k, flat, self.out_shape(k.shape1[1:]),
            is_gaussian=k.is_gaussian and math.prod(k.shape1[2:]) == 1, diagonal_spatial=False,
        )

    def build(self, in_shape, generator, dtype) -> nn.Module:
        return nn.Flatten()

    def __repr__(self):
        return "Flatten()"


@dataclass(frozen=True)
class SpatialDiagonal(Layer):
    """Keeps only the same-position covariances from here on (inserted by the layout plan
    where no later layer mixes positions); the identity on the finite twin."""

    def out_shape(self, in_shape):
        return in_shape

    def footprint(self, in_shape, layout):
        return leaf_footprint(in_shape, in_shape, layout, to_diagonal=True)

    def kernel_fn(self, k):
        return k if isinstance(k, list) else drop_to_diagonal(k)

    def build(self, in_shape, generator, dtype) -> nn.Module:
        return nn.Identity()

    def __repr__(self):
        return "SpatialDiagonal()"


def drop_to_diagonal(k: Kernel) -> Kernel:
    """``k`` in the diagonal spatial layout (unchanged if it is already, or not spatial)."""
    if not k.full_spatial:
        return k
    s = k.n_spatial

    def diag(t: Tensor | None) -> Tensor | None:
        return t if t is None or t.ndim == 0 else to_diagonal(t, s)

    return k.replace(nngp=diag(k.nngp), ntk=diag(k.ntk), cov1=diag(k.cov1), cov2=diag(k.cov2),
                     diagonal_spatial=True)
