"""Normalisation and noise: ``LayerNorm`` and ``Dropout`` (training mode)."""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass

import torch
from torch import Tensor, nn

from .._checks import real_number
from ..kernel import Kernel, restore_diagonal
from ._base import Layer
from ._serialize import register_layer
from ._spatial import diagonal_mean, to_diagonal

__all__ = ["LayerNorm", "Dropout"]


def _per_position(cov: Tensor, k: Kernel) -> Tensor:
    """Variances ``(N, *S)`` (or ``(N,)``) of one batch's covariance ``cov`` (as ``cov1``)."""
    return to_diagonal(cov, k.n_spatial) if k.full_spatial else cov


@register_layer(fields={"spatial": "bool", "eps": "real"})
@dataclass(frozen=True)
class LayerNorm(Layer):
    """``(z - mean) / sqrt(var + eps)`` over the channels of each example (and position), or
    over channels and positions together with ``spatial=True``; no affine parameters.

    In the infinite-width limit the mean vanishes and the variance is the kernel's own, so
    (neural-tangents' ``LayerNorm``) ``K(x, p; x', p') <- K / sqrt((eps + v(x, p))
    (eps + v(x', p')))``, with ``v(x, p) = K(x, p; x, p)`` over channels, or its mean over
    positions with ``spatial=True``; ``Theta`` is divided alike.

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> x = torch.randn(3, 5, dtype=torch.float64)
        >>> k = L.serial(L.Dense(8, W_std=2.0), L.LayerNorm()).kernel(x)
        >>> [round(v, 6) for v in k.nngp.diagonal().tolist()]
        [1.0, 1.0, 1.0]
    """

    _: KW_ONLY
    spatial: bool = False
    eps: float = 1e-12

    def __post_init__(self):
        if not isinstance(self.spatial, bool):
            raise TypeError(f"spatial must be True or False; got {self.spatial!r}")
        object.__setattr__(self, "eps", real_number(self.eps, "eps", minimum=0.0))

    def __repr__(self):
        return "LayerNorm(spatial=True)" if self.spatial else "LayerNorm()"

    def out_shape(self, in_shape):
        return self._one(in_shape)

    def _norms(self, cov: Tensor, k: Kernel) -> Tensor:
        """``sqrt(eps + v)`` per example ``(N, *S)``, or ``(N, *1)`` with ``spatial``."""
        if self.spatial and k.n_spatial:
            v = diagonal_mean(cov, k.n_spatial, k.full_spatial)
            return (v + self.eps).sqrt().reshape(-1, *(1,) * k.n_spatial)
        return (_per_position(cov, k) + self.eps).sqrt()

    def kernel_fn(self, k: Kernel) -> Kernel:
        k = self._one(k)
        s = k.n_spatial
        full = k.full_spatial

        def rows_cols(norm: Tensor) -> tuple[Tensor, Tensor]:
            # (N, *S) norms as the row and column factors of a (N, [N,] *S[, *S]) kernel.
            if not full:
                return norm, norm
            ones = (1,) * s
            sizes = norm.shape[1:]
            return norm.reshape(-1, *sizes, *ones), norm.reshape(-1, *ones, *sizes)

        r1, c1 = rows_cols(self._norms(k.cov1, k))
        cov1 = k.cov1 / (r1 * c1)
        if k.cov2 is not None:
            r2, c2 = rows_cols(self._norms(k.cov2, k))
            cov2 = k.cov2 / (r2 * c2)
        else:
            cov2, r2, c2 = None, r1, c1
        if k.diagonal:
            scale = r1 * c1
        else:
            scale = r1.unsqueeze(1) * c2.unsqueeze(0)
        nngp = cov1 if k.diagonal else k.nngp / scale
        if k.x1_is_x2 and not k.diagonal:
            restore_diagonal(nngp, cov1)
        ntk = k.ntk if k.ntk is None or k.ntk.ndim == 0 else k.ntk / scale
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)

    def build(self, in_shape, generator, dtype) -> nn.Module:
        return _LayerNormModule(self.spatial, self.eps, len(in_shape))


class _LayerNormModule(nn.Module):
    def __init__(self, spatial: bool, eps: float, ndim: int):
        super().__init__()
        self.dims = tuple(range(1, ndim + 1)) if spatial else (1,)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(self.dims, keepdim=True)
        var = x.var(self.dims, keepdim=True, unbiased=False)
        return (x - mean) / (var + self.eps).sqrt()


@register_layer(fields={"rate": "real"}, required=("rate",))
@dataclass(frozen=True)
class Dropout(Layer):
    """Dropout in training mode: each unit is kept with probability ``1 - rate`` and scaled by
    ``1 / (1 - rate)`` (``torch.nn.Dropout``), independently per example and unit.

    Different examples (or positions) see independent masks, whose mean is 1: their
    covariance is unchanged. An example with itself, at the same position, gets
    ``E[m^2] = 1 / (1 - rate)``: the diagonal (``cov1``, and ``K(x_i, x_i)`` when ``x1`` is
    ``x2``) is multiplied by ``1 / (1 - rate)``, for the NNGP and the NTK (neural-tangents'
    ``Dropout(mode="train")``). The output is not Gaussian: a ``Dense`` or ``Conv`` must follow
    before a nonlinearity.

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> k = L.serial(L.Dense(4), L.Dropout(0.5)).kernel(torch.eye(2, dtype=torch.float64))
        >>> k.nngp.tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """

    rate: float

    def __post_init__(self):
        rate = real_number(self.rate, "rate", minimum=0.0)
        if rate >= 1.0:
            raise ValueError(f"rate must be in [0, 1) (the probability of dropping a unit); "
                             f"got {rate}")
        object.__setattr__(self, "rate", rate)

    def out_shape(self, in_shape):
        return self._one(in_shape)

    def kernel_fn(self, k: Kernel) -> Kernel:
        k = self._one(k)
        factor = 1.0 / (1.0 - self.rate)

        def self_diag(cov: Tensor | None) -> Tensor | None:
            # Same example and same position: the variance.
            if cov is None or not k.full_spatial:
                return None if cov is None else cov * factor
            out = cov.clone()
            p = math.prod(k.shape1[2:])
            out.reshape(cov.shape[0], p, p).diagonal(dim1=1, dim2=2).mul_(factor)
            return out

        cov1 = self_diag(k.cov1)
        if k.diagonal:
            nngp = cov1
            ntk = None if k.ntk is None or k.ntk.ndim == 0 else self_diag(k.ntk)
        else:
            nngp, ntk = k.nngp, k.ntk
            if k.x1_is_x2:
                nngp = nngp.clone()
                restore_diagonal(nngp, cov1)
                if ntk is not None and ntk.ndim:
                    ntk = ntk.clone()
                    diag = ntk.diagonal(dim1=0, dim2=1).movedim(-1, 0)
                    diag.copy_(self_diag(diag))
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=self_diag(k.cov2),
                         is_gaussian=False, linear_in=frozenset())

    def build(self, in_shape, generator, dtype) -> nn.Module:
        # The masks come from a generator seeded by the build's, so a seeded twin is
        # reproducible; every forward pass draws new masks.
        seed = int(torch.randint(2**62, (), generator=generator))
        return _DropoutModule(self.rate, seed)


class _DropoutModule(nn.Module):
    def __init__(self, rate: float, seed: int):
        super().__init__()
        self.rate = rate
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, dtype=torch.float64) >= self.rate
        return x * keep.to(x.device, x.dtype) / (1.0 - self.rate)
