"""Pooling over positions: windowed (``AvgPool``, ``SumPool``) and global."""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernel import Kernel, restore_diagonal
from ._base import Layer
from ._mask import remask
from ._serialize import register_layer
from ._spatial import (
    check_full,
    check_padding,
    int_tuple,
    pad_input,
    pads,
    reduce_positions,
    spatial_axes,
    window_sum,
)

__all__ = ["AvgPool", "SumPool", "GlobalAvgPool", "GlobalSumPool"]

_POOL_FIELDS = {"window_shape": "shape", "strides": "strides", "padding": "string"}


def _spatial_in(layer: Layer, in_shape, min_axes: int = 1) -> tuple[int, ...]:
    in_shape = layer._one(in_shape)
    if len(in_shape) < 1 + min_axes:
        raise ValueError(
            f"{layer!r} acts on channels-first inputs (channels, *spatial); got per-example "
            f"shape {tuple(in_shape)}: put it before Flatten/GlobalAvgPool, or add a channel "
            f"axis with x[:, None]"
        )
    return tuple(in_shape)


@register_layer(fields=_POOL_FIELDS, required=("window_shape",))
@dataclass(frozen=True)
class AvgPool(Layer):
    """Mean over windows of positions (neural-tangents' ``AvgPool``, ``normalize_edges=False``).

    The output at ``p`` is ``1/|w| sum_a z(s p + a)``, padded entries counting as zeros (as
    ``torch.nn.AvgPool2d(count_include_pad=True)``), so the kernel is
    ``K'(p, p') = 1/|w|^2 sum_{a, a'} K(s p + a, s p' + a')``, needing the full spatial
    covariance.

    **Arguments:** ``window_shape`` (one int per spatial axis, e.g. ``(2, 2)``); ``strides``
    (default 1, as neural-tangents; an int or one per axis); ``padding``: ``"VALID"``
    (default), ``"SAME"`` or ``"CIRCULAR"``. A window larger than the image raises.

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> net = L.serial(L.Conv(4, (3, 3)), L.AvgPool((2, 2), strides=2), L.Flatten())
        >>> net.kernel(torch.randn(3, 1, 4, 4, dtype=torch.float64)).nngp.shape
        torch.Size([3, 3])
    """

    window_shape: tuple[int, ...]
    _: KW_ONLY
    strides: int | tuple[int, ...] = 1
    padding: str = "VALID"

    _sum = False

    def __post_init__(self):
        ws = self.window_shape
        if isinstance(ws, int) or not 1 <= len(ws) <= 3:
            raise ValueError(f"window_shape must be a tuple of 1 or 2 positive ints, e.g. "
                             f"(2, 2); got {ws!r}")
        object.__setattr__(self, "window_shape", int_tuple(ws, len(ws), "window_shape"))
        object.__setattr__(self, "strides", int_tuple(self.strides, len(ws), "strides"))
        object.__setattr__(self, "padding", check_padding(self.padding))

    def __repr__(self):
        return (f"{type(self).__name__}({self.window_shape}, strides={self.strides}, "
                f"padding={self.padding!r})")

    def plan(self, out_full):
        return self, True

    def _geometry(self, in_shape) -> list[tuple[int, int, int]]:
        in_shape = _spatial_in(self, in_shape)
        if len(in_shape) != 1 + len(self.window_shape):
            raise ValueError(
                f"{self!r} has a {len(self.window_shape)}-D window; got per-example shape "
                f"{in_shape} (channels first)"
            )
        for size, w in zip(in_shape[1:], self.window_shape, strict=True):
            if w > size:
                raise ValueError(
                    f"{self!r}: pooling window {self.window_shape} is larger than the image "
                    f"{in_shape[1:]}; use a smaller window (or fewer pooling layers)"
                )
        return [pads(size, w, s, self.padding, who=repr(self), what="window")
                for size, w, s in zip(in_shape[1:], self.window_shape, self.strides,
                                      strict=True)]

    def out_shape(self, in_shape):
        geometry = self._geometry(in_shape)
        return (in_shape[0],) + tuple(out for _, _, out in geometry)

    def kernel_fn(self, k: Kernel) -> Kernel:
        k = self._one(k)
        check_full(k, repr(self))
        out_shape = self.out_shape(k.shape1[1:])
        geometry = self._geometry(k.shape1[1:])
        circular = self.padding == "CIRCULAR"
        scale = 1.0 if self._sum else 1.0 / math.prod(self.window_shape) ** 2

        def pool(t: Tensor) -> Tensor:
            for d, axes in enumerate(spatial_axes(t, k.n_spatial, True)):
                lo, _, out = geometry[d]
                w, s = self.window_shape[d], self.strides[d]
                for ax in axes:  # each position on its own: a separable 2 S-D window sum
                    t = window_sum(t, (ax,), w, s, lo, out, circular)
            return t.mul_(scale) if scale != 1.0 else t

        nngp = pool(k.nngp)
        cov1 = pool(k.cov1)
        if k.x1_is_x2 and not k.diagonal:
            restore_diagonal(nngp, cov1)
        return k.replace(
            nngp=nngp,
            ntk=k.ntk if k.ntk is None or k.ntk.ndim == 0 else pool(k.ntk),
            cov1=cov1, cov2=None if k.cov2 is None else pool(k.cov2),
            shape1=(k.shape1[0],) + out_shape, shape2=(k.shape2[0],) + out_shape,
        )

    def build(self, in_shape, generator, dtype) -> nn.Module:
        return _PoolModule(self.window_shape, self.strides, self.padding, self._sum)


@register_layer(fields=_POOL_FIELDS, required=("window_shape",))
@dataclass(frozen=True)
class SumPool(AvgPool):
    """Sum over windows of positions: :class:`AvgPool` times the window size ``|w|``
    (kernel times ``|w|^2``).

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
        >>> s = L.serial(L.Conv(3, (3, 3)), L.SumPool((2, 2)), L.Flatten()).kernel(x).nngp
        >>> a = L.serial(L.Conv(3, (3, 3)), L.AvgPool((2, 2)), L.Flatten()).kernel(x).nngp
        >>> bool(torch.allclose(s, 16 * a))
        True
    """

    _sum = True


class _PoolModule(nn.Module):
    def __init__(self, window, strides, padding, is_sum):
        super().__init__()
        self.window, self.strides, self.padding, self.is_sum = window, strides, padding, is_sum

    def forward(self, x: Tensor) -> Tensor:
        x = pad_input(x, self.window, self.strides, self.padding, who="pooling", what="window")
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[len(self.window) - 1]
        out = pool(x, self.window, self.strides)
        return out * math.prod(self.window) if self.is_sum else out


@register_layer
@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """Mean over all positions: ``(N, C, *S) -> (N, C)``; the kernel is the mean of the full
    spatial kernel over all pairs of positions, ``K' = mean_{p, p'} K(p, p')``. With masked
    inputs (``kernel(..., mask_constant=c)``) the mean is over unmasked positions only, as
    in neural-tangents, and the mask ends here.

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> x = torch.randn(3, 2, 5, dtype=torch.float64)
        >>> L.serial(L.Conv(4, (3,)), L.GlobalAvgPool()).kernel(x).nngp.shape
        torch.Size([3, 3])
    """

    _sum = False

    def mask_role(self):
        return "end"  # the mean over unmasked positions

    def plan(self, out_full):
        return self, True

    def out_shape(self, in_shape):
        return (_spatial_in(self, in_shape)[0],)

    def kernel_fn(self, k: Kernel) -> Kernel:
        k = self._one(k)
        check_full(k, repr(self))
        s = k.n_spatial

        def pool(t: Tensor, reduce=torch.sum if self._sum else torch.mean) -> Tensor:
            return reduce(t.reshape(*t.shape[:t.ndim - 2 * s], -1), -1)

        out = self.out_shape(k.shape1[1:])
        if k.mask1 is None:
            return reduce_positions(k, pool, out)
        # Masked inputs: the mean over unmasked positions only (neural-tangents'), i.e. the
        # sum of the remasked kernel (zero at masked positions) over the unmasked counts
        # (integers: the diagonal stays cov1 exactly, divided by the same n^2).
        n1 = (~k.mask1).flatten(1).sum(1).to(k.nngp.dtype)
        n2 = n1 if k.mask2 is None else (~k.mask2).flatten(1).sum(1).to(k.nngp.dtype)
        k = reduce_positions(remask(k), lambda t: pool(t, torch.sum), out, mask1=None,
                             mask2=None)
        if self._sum:
            return k
        pair = n1 ** 2 if k.diagonal else n1[:, None] * n2[None, :]
        return k.replace(nngp=k.nngp / pair,
                         ntk=k.ntk if k.ntk is None or k.ntk.ndim == 0 else k.ntk / pair,
                         cov1=k.cov1 / n1 ** 2, cov2=None if k.cov2 is None else k.cov2 / n2 ** 2)

    def build(self, in_shape, generator, dtype) -> nn.Module:
        return _GlobalPoolModule(self._sum)

    def __repr__(self):
        return f"{type(self).__name__}()"


@register_layer
@dataclass(frozen=True)
class GlobalSumPool(GlobalAvgPool):
    """Sum over all positions: :class:`GlobalAvgPool` times the number of positions ``P``
    (kernel times ``P^2``).

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> x = torch.randn(3, 2, 5, dtype=torch.float64)
        >>> s = L.serial(L.Conv(4, (3,)), L.GlobalSumPool()).kernel(x).nngp
        >>> a = L.serial(L.Conv(4, (3,)), L.GlobalAvgPool()).kernel(x).nngp
        >>> bool(torch.allclose(s, 25 * a))
        True
    """

    _sum = True


class _GlobalPoolModule(nn.Module):
    takes_mask = ends_mask = True  # see ntkit.layers.masked_forward

    def __init__(self, is_sum: bool):
        super().__init__()
        self.is_sum = is_sum

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        if mask is None:
            return flat.sum(-1) if self.is_sum else flat.mean(-1)
        keep = ~mask.reshape(mask.shape[0], 1, -1)  # masked positions left out
        total = (flat * keep).sum(-1)
        return total if self.is_sum else total / keep.sum(-1)
