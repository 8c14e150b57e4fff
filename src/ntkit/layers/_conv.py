"""Convolution over 1-D sequences ``(N, C, L)`` and 2-D images ``(N, C, H, W)``."""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import positive_int, real_number
from ..kernel import Kernel
from ._base import Layer, draw_normal, fresh_token
from ._serialize import register_layer
from ._spatial import check_padding, int_tuple, pads, spatial_axes, window_sum

__all__ = ["Conv", "ConvModule"]

_PARAMETRIZATIONS = ("ntk", "standard")


@register_layer(fields={"out_channels": "width", "filter_shape": "shape", "strides": "strides",
                        "padding": "string", "W_std": "real", "b_std": "real or null",
                        "parametrization": "string"},
                required=("out_channels", "filter_shape"))
@dataclass(frozen=True)
class Conv(Layer):
    """Convolution with ``out_channels`` filters of ``filter_shape`` on channels-first inputs.

    ``filter_shape`` of length 1 acts on sequences ``(N, C, L)``, of length 2 on images
    ``(N, C, H, W)`` (PyTorch's layout). The kernel follows neural-tangents' ``Conv``
    (Novak et al. 2019, Arora et al. 2019): with ``|F|`` the filter size,

    ``K'(x, p; x', p') = W_std^2 / |F| sum_a K(x, s p + a; x', s p' + a) + b_std^2``

    (``a`` over the filter window, ``s`` the strides, zeros or wrapped entries outside the
    input as for the finite twin), and in the NTK parametrization
    ``Theta' = W_std^2 (the same window mean of Theta) + K'``.

    **Arguments:**

    - ``out_channels``: channels of the finite twin (the kernel is its infinite limit).
    - ``filter_shape``: e.g. ``(3, 3)`` or ``(5,)``.
    - ``strides``: an int or one per spatial axis.
    - ``padding``: ``"SAME"`` (output ``ceil(size / stride)``, zeros split as in JAX: the
      extra one after), ``"VALID"`` (no padding) or ``"CIRCULAR"`` (``SAME`` with wrap-around).
    - ``W_std``, ``b_std``, ``parametrization``: as for :class:`Dense`, with fan-in
      ``C |F|``. A bias (one per channel, shared by all positions) adds ``b_std^2``
      everywhere; ``b_std=None`` means no bias.

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> x = torch.ones(2, 3, 5, 5, dtype=torch.float64)
        >>> k = L.Conv(8, (3, 3), padding="VALID", W_std=2.0).kernel(x)
        >>> tuple(k.nngp.shape), k.nngp[0, 1, 0, 0, 2, 2].item()
        ((2, 2, 3, 3, 3, 3), 4.0)
    """

    out_channels: int
    filter_shape: tuple[int, ...]
    _: KW_ONLY
    strides: int | tuple[int, ...] = 1
    padding: str = "SAME"
    W_std: float = 1.0
    b_std: float | None = 0.0
    parametrization: str = "ntk"

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "out_channels", positive_int(self.out_channels, "out_channels"))
        fs = self.filter_shape
        if isinstance(fs, int) or not 1 <= len(fs) <= 3:
            raise ValueError(
                f"filter_shape must be a tuple of 1 (sequences) or 2 (images) positive ints, "
                f"e.g. (3, 3); got {fs!r}"
            )
        set_(self, "filter_shape", int_tuple(fs, len(fs), "filter_shape"))
        set_(self, "strides", int_tuple(self.strides, len(fs), "strides"))
        set_(self, "padding", check_padding(self.padding))
        set_(self, "W_std", real_number(self.W_std, "W_std", minimum=0.0))
        set_(self, "b_std", real_number(self.b_std, "b_std", minimum=0.0, allow_none=True))
        if self.parametrization not in _PARAMETRIZATIONS:
            raise ValueError(
                f"parametrization must be one of {_PARAMETRIZATIONS}; got {self.parametrization!r}"
            )

    def __repr__(self):
        opts = "".join(f", {name}={getattr(self, name)!r}"
                       for name, default in (("strides", (1,) * len(self.filter_shape)),
                                             ("padding", "SAME"), ("W_std", 1.0),
                                             ("b_std", 0.0), ("parametrization", "ntk"))
                       if getattr(self, name) != default)
        return f"Conv({self.out_channels}, {self.filter_shape}{opts})"

    def _pads(self, in_shape) -> list[tuple[int, int, int]]:
        return [pads(size, f, s, self.padding, who=repr(self))
                for size, f, s in zip(in_shape[1:], self.filter_shape, self.strides,
                                      strict=True)]

    def out_shape(self, in_shape):
        in_shape = self._one(in_shape)
        n = len(self.filter_shape)
        if len(in_shape) != n + 1:
            kind = {1: "(channels, length)", 2: "(channels, height, width)"}.get(
                n, f"(channels, {n} spatial axes)")
            raise ValueError(
                f"{self!r} has a {n}-D filter and acts on per-example inputs {kind}, channels "
                f"first (NCHW); got per-example shape {tuple(in_shape)}"
                + (": add a channel axis, e.g. x[:, None]" if len(in_shape) == n else "")
            )
        return (self.out_channels,) + tuple(out for _, _, out in self._pads(in_shape))

    def kernel_fn(self, k: Kernel) -> Kernel:
        k = self._one(k)
        out_shape = self.out_shape(k.shape1[1:])
        geometry = self._pads(k.shape1[1:])
        circular = self.padding == "CIRCULAR"
        full = k.full_spatial
        size = math.prod(self.filter_shape)

        def window_sum_all(t: Tensor) -> Tensor:
            for (lo, _, out), f, s, axes in zip(geometry, self.filter_shape, self.strides,
                                                spatial_axes(t, k.n_spatial, full),
                                                strict=True):
                t = window_sum(t, axes, f, s, lo, out, circular)
            return t  # a new tensor: scaling it in place is safe

        w2 = self.W_std**2
        b2 = (self.b_std or 0.0) ** 2

        def affine(t: Tensor) -> Tensor:
            t = window_sum_all(t).mul_(w2 / size)
            return t.add_(b2) if b2 else t

        nngp = affine(k.nngp)
        ntk = k.ntk
        if ntk is not None:
            if self.parametrization == "ntk":
                ntk = nngp if ntk.ndim == 0 else window_sum_all(ntk).mul_(w2 / size).add_(nngp)
            else:
                # Standard: d z / d W are the C |F| inputs in the window (fan-in C |F| times
                # their window mean).
                ntk = window_sum_all(k.nngp).mul_(k.shape1[1])
                if k.ntk.ndim:
                    ntk.add_(window_sum_all(k.ntk), alpha=w2 / size)
                if self.b_std is not None:
                    ntk.add_(1.0)
        cov1 = affine(k.cov1)
        if k.x1_is_x2 and not k.diagonal:
            nngp.diagonal(dim1=0, dim2=1).copy_(cov1.movedim(0, -1))
        token = fresh_token()
        return k.replace(
            nngp=nngp, ntk=ntk, cov1=cov1,
            cov2=None if k.cov2 is None else affine(k.cov2),
            shape1=(k.shape1[0],) + out_shape, shape2=(k.shape2[0],) + out_shape,
            is_gaussian=True, linear_in=frozenset({token}), depends_on=k.depends_on | {token},
        )

    def build(self, in_shape, generator, dtype) -> nn.Module:
        return ConvModule(in_shape[0], self.out_channels, self.filter_shape,
                          strides=self.strides, padding=self.padding, W_std=self.W_std,
                          b_std=self.b_std, parametrization=self.parametrization,
                          generator=generator, dtype=dtype)


class ConvModule(nn.Module):
    """Finite twin of :class:`Conv`: ``(N, C, *S) -> (N, out_channels, *S_out)``.

    Like :class:`DenseModule`, with fan-in ``C |F|``: in the NTK parametrization ``weight``
    ``(out, C, *F)`` and ``bias`` are standard normal and scaled by ``W_std / sqrt(C |F|)``
    and ``b_std`` in ``forward``; padding is applied explicitly (JAX's ``SAME`` split, or
    wrap-around) before a ``VALID`` convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, filter_shape: tuple[int, ...], *,
                 strides: tuple[int, ...], padding: str, W_std: float, b_std: float | None,
                 parametrization: str, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        dtype = dtype or torch.get_default_dtype()
        ntk = parametrization == "ntk"
        fan_in = in_channels * math.prod(filter_shape)
        self.filter_shape, self.strides, self.padding = filter_shape, strides, padding
        self.weight_scale = W_std / math.sqrt(fan_in) if ntk else 1.0
        self.weight = nn.Parameter(draw_normal((out_channels, in_channels, *filter_shape),
                                               1.0 if ntk else W_std / math.sqrt(fan_in),
                                               generator, dtype))
        has_bias = b_std is not None and (not ntk or b_std > 0)
        self.bias_scale = (b_std if ntk else 1.0) if has_bias else 0.0
        self.bias = (nn.Parameter(draw_normal((out_channels,), 1.0 if ntk else b_std,
                                              generator, dtype)) if has_bias else None)

    def forward(self, x: Tensor) -> Tensor:
        n = len(self.filter_shape)
        widths = []
        for d in range(n):
            size = x.shape[2 + d]
            lo, hi, _ = pads(size, self.filter_shape[d], self.strides[d], self.padding,
                             who="ConvModule")
            if self.padding == "CIRCULAR":
                idx = torch.arange(-lo, size + hi, device=x.device) % size
                x = x.index_select(2 + d, idx)
            widths = [lo, hi] + widths
        if self.padding == "SAME":
            x = F.pad(x, widths)
        w = self.weight if self.weight_scale == 1.0 else self.weight * self.weight_scale
        b = None
        if self.bias is not None:
            b = self.bias if self.bias_scale == 1.0 else self.bias * self.bias_scale
        conv = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
        return conv(x, w, b, stride=self.strides)

    def extra_repr(self) -> str:
        return (f"filter_shape={self.filter_shape}, strides={self.strides}, "
                f"padding={self.padding!r}, weight_scale={self.weight_scale:.4g}")
