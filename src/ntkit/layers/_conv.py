"""Convolution over 1-D sequences ``(N, C, L)`` and 2-D images ``(N, C, H, W)``."""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import positive_int, real_number
from ..kernel import Kernel, restore_diagonal
from ._base import Layer, fresh_token
from ._serialize import register_layer
from ._spatial import check_padding, int_tuple, pad_input, pads, spatial_axes, window_sum
from ._twin import AffineTwin

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

    def mask_role(self):
        # A 1-wide filter with stride 1 maps each position by itself; wider ones mix
        # masked positions into their neighbours (not implemented).
        return "keep" if set(self.filter_shape) == {1} and set(self.strides) == {1} else None

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
            restore_diagonal(nngp, cov1)
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


class ConvModule(AffineTwin):
    """Finite twin of :class:`Conv`: ``(N, C, *S) -> (N, out_channels, *S_out)``.

    Like :class:`DenseModule`, with fan-in ``C |F|``: in the NTK parametrization ``weight``
    ``(out_channels, C, *F)`` and ``bias`` ``(out_channels,)`` are standard normal and scaled
    in ``forward`` by ``weight_scale = W_std / sqrt(C |F|)`` and ``bias_scale = b_std`` (1 in
    the standard parametrization). ``forward(x)`` is a convolution of :meth:`pad` ``(x)`` with
    the scaled parameters at ``stride``, without further padding.

    Its attributes are those of ``torch.nn.Conv1d`` / ``Conv2d``, so that code reading a
    torch convolution reads this one: ``in_channels``, ``out_channels``, ``kernel_size``
    (``F``), ``stride``, ``dilation`` (1 per axis), ``groups`` (1), ``padding`` (``"valid"``
    or ``"same"``) and ``padding_mode`` (``"zeros"``, or ``"circular"`` for ``CIRCULAR``).
    ``"same"`` splits the padding as torch and JAX do at stride 1 (an odd total puts the extra
    one after); at a larger stride, where torch has no ``"same"``, it follows JAX: the output
    has ``ceil(size / stride)`` positions and the split depends on the input's size, so use
    :meth:`pad`, which applies it for any stride.

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> m = L.ConvModule(1, 8, (3, 3), strides=(1, 1), padding="SAME", W_std=2.0,
        ...                  b_std=0.1, parametrization="ntk")
        >>> m.kernel_size, m.stride, m.padding, m.padding_mode, round(m.weight_scale, 4)
        ((3, 3), (1, 1), 'same', 'zeros', 0.6667)
        >>> m(torch.randn(2, 1, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, filter_shape: tuple[int, ...], *,
                 strides: tuple[int, ...], padding: str, W_std: float, b_std: float | None,
                 parametrization: str, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__((out_channels, in_channels, *filter_shape),
                         in_channels * math.prod(filter_shape), W_std=W_std, b_std=b_std,
                         parametrization=parametrization, generator=generator, dtype=dtype)
        n = len(filter_shape)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = tuple(filter_shape), tuple(strides)
        self.dilation, self.groups = (1,) * n, 1
        self.padding = "valid" if padding == "VALID" else "same"
        self.padding_mode = "circular" if padding == "CIRCULAR" else "zeros"
        self._spec_padding = check_padding(padding)

    def pad(self, x: Tensor) -> Tensor:
        """``(N, C, *S)`` inputs padded as ``forward`` pads them: zeros (``SAME``), wrapped
        entries (``CIRCULAR``) or nothing (``VALID``), split as JAX splits them."""
        return pad_input(x, self.kernel_size, self.stride, self._spec_padding,
                         who="ConvModule")

    def forward(self, x: Tensor) -> Tensor:
        conv = (F.conv1d, F.conv2d, F.conv3d)[len(self.kernel_size) - 1]
        return conv(self.pad(x), *self.scaled_parameters(), stride=self.stride)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, "
                f"padding_mode={self.padding_mode!r}, weight_scale={self.weight_scale:.4g}, "
                f"bias_scale={self.bias_scale:.4g}")
