"""Spatial arithmetic shared by convolutions and pooling: padding, window sums, layouts.

A spatial kernel is stored with the batch axes first, then the spatial axes: full
``(N1, N2, *S, *S)`` (positions ``p`` of ``x1`` then ``p'`` of ``x2``) or diagonal
``(N1, N2, *S)``; a batch's own covariance ``cov1`` drops ``N2``. A convolution sums a
kernel along the window *diagonally* (``p + a`` and ``p' + a`` move together, because the
same weight multiplies both positions), pooling sums each position independently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import positive_int
from ..kernel import restore_diagonal

PADDINGS = ("SAME", "VALID", "CIRCULAR")


def int_tuple(value, n: int, name: str) -> tuple[int, ...]:
    """``value`` (an int, or a sequence of ``n`` ints) as a tuple of ``n`` positive ints."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise ValueError(f"{name} must have {n} entries (one per spatial axis); got "
                             f"{tuple(value)!r}")
        return tuple(positive_int(v, name) for v in value)
    return (positive_int(value, name),) * n


def check_padding(padding) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}; got {padding!r}")
    return padding


def pads(size: int, window: int, stride: int, padding: str, *, who: str,
         what: str = "filter") -> tuple[int, int, int]:
    """``(lo, hi, out)``: zeros (or wrapped entries) before and after one axis of ``size``,
    and the output length, as in ``jax.lax.padtype_to_pads`` (neural-tangents)."""
    if padding == "VALID":
        if window > size:
            raise ValueError(
                f"{who}: {what} of size {window} is larger than the unpadded input of size "
                f"{size} along a spatial axis (padding='VALID'); use a smaller {what} or "
                f"padding='SAME'"
            )
        return 0, 0, (size - window) // stride + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2, out


def pad_input(x: Tensor, window: tuple[int, ...], strides: tuple[int, ...], padding: str, *,
              who: str, what: str = "filter") -> Tensor:
    """``(N, C, *S)`` inputs padded along each spatial axis as :func:`pads` says for a window
    and stride per axis: zeros (``"SAME"``), wrapped entries (``"CIRCULAR"``) or nothing
    (``"VALID"``), ready for a ``VALID`` convolution or pooling with those strides."""
    widths: list[int] = []
    for d, (w, s) in enumerate(zip(window, strides, strict=True)):
        size = x.shape[2 + d]
        lo, hi, _ = pads(size, w, s, padding, who=who, what=what)
        if padding == "CIRCULAR":
            x = x.index_select(2 + d, torch.arange(-lo, size + hi, device=x.device) % size)
        widths = [lo, hi] + widths  # F.pad lists the last axis first
    return F.pad(x, widths) if padding == "SAME" else x


def window_sum(t: Tensor, axes: tuple[int, ...], window: int, stride: int, lo: int,
               out: int, circular: bool) -> Tensor:
    """``r[i] = sum_{a < window} t[i * stride + a - lo]`` along every axis in ``axes`` at once
    (the same ``i`` and ``a`` on each: a diagonal window when ``len(axes) == 2``).

    Out-of-range indices are zeros, or wrap around when ``circular``. ``t`` keeps its other
    axes; the result has length ``out`` along ``axes``. Each shift is one strided add, so the
    cost is ``window`` passes over the output and no padded copy.
    """
    size = t.shape[axes[0]]
    if circular:
        idx = torch.arange(-lo, (out - 1) * stride + window - lo, device=t.device) % size
        for ax in axes:
            t = t.index_select(ax, idx)
        size, lo = t.shape[axes[0]], 0
    result = None
    shifts = sorted(range(window), key=lambda a: a != lo)  # the full-range shift first
    for a in shifts:
        i0 = max(0, -(-(lo - a) // stride))
        i1 = min(out - 1, (size - 1 + lo - a) // stride)
        if i0 > i1:
            continue
        src = [slice(None)] * t.ndim
        dst = [slice(None)] * t.ndim
        for ax in axes:
            src[ax] = slice(i0 * stride + a - lo, i1 * stride + a - lo + 1, stride)
            dst[ax] = slice(i0, i1 + 1)
        piece = t[tuple(src)]
        if result is None:
            if i0 == 0 and i1 == out - 1:
                result = piece.clone(memory_format=torch.contiguous_format)
                continue
            shape = list(t.shape)
            for ax in axes:
                shape[ax] = out
            result = t.new_zeros(shape)
        result[tuple(dst)] += piece
    if result is None:  # every window falls in the padding
        shape = list(t.shape)
        for ax in axes:
            shape[ax] = out
        result = t.new_zeros(shape)
    return result


def spatial_axes(t: Tensor, n_spatial: int, full: bool) -> list[tuple[int, ...]]:
    """For each spatial dimension, the axes of ``t`` that carry it: ``(p_d, p'_d)`` in a full
    kernel, ``(p_d,)`` in a diagonal one (the batch axes come first)."""
    first = t.ndim - (2 * n_spatial if full else n_spatial)
    if full:
        return [(first + d, first + n_spatial + d) for d in range(n_spatial)]
    return [(first + d,) for d in range(n_spatial)]


def to_diagonal(t: Tensor, n_spatial: int) -> Tensor:
    """The same-position entries ``(..., *S)`` of a full spatial kernel ``(..., *S, *S)``."""
    sizes = t.shape[t.ndim - n_spatial:]
    p = math.prod(sizes)
    lead = t.shape[:t.ndim - 2 * n_spatial]
    # A copy, not a view, so that the full kernel can be freed.
    return t.reshape(*lead, p, p).diagonal(dim1=-2, dim2=-1).reshape(*lead, *sizes).contiguous()


def diagonal_mean(t: Tensor, n_spatial: int, full: bool) -> Tensor:
    """Mean over positions of the same-position entries: ``(...)`` from a spatial kernel."""
    d = to_diagonal(t, n_spatial) if full else t
    return d.reshape(*d.shape[:d.ndim - n_spatial], -1).mean(-1)


def check_full(k, who: str) -> None:
    """``who`` mixes positions: its input must carry covariances between positions."""
    if k.n_spatial == 0:
        raise ValueError(
            f"{who} acts on images (N, C, *spatial) but received a fully-connected kernel of "
            f"per-example shape {k.shape1[1:]}; put it before Flatten/GlobalAvgPool"
        )
    if k.diagonal_spatial:
        raise ValueError(
            f"{who} mixes spatial positions and needs the full (N1, N2, *S, *S) kernel, but "
            f"received the same-position (diagonal) layout; call it through net.kernel(...), "
            f"which chooses the layout from the whole network"
        )


def reduce_positions(k, f, out: tuple[int, ...], **fields):
    """``k`` with its spatial axes reduced by ``f`` (a map of each kernel array): the NNGP, NTK
    and both variances, the diagonal kept exactly equal to ``cov1`` when ``x1`` is ``x2``, and
    per-example shapes ``(N, *out)``; ``fields`` are further :meth:`Kernel.replace` fields."""
    nngp, cov1 = f(k.nngp), f(k.cov1)
    if k.x1_is_x2 and not k.diagonal:
        restore_diagonal(nngp, cov1)
    return k.replace(
        nngp=nngp, ntk=k.ntk if k.ntk is None or k.ntk.ndim == 0 else f(k.ntk),
        cov1=cov1, cov2=None if k.cov2 is None else f(k.cov2),
        shape1=(k.shape1[0],) + out, shape2=(k.shape2[0],) + out, **fields,
    )
