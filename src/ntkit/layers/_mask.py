"""Masked positions (padding tokens) in sequence inputs, as neural-tangents masks them.

neural-tangents' ``kernel_fn(x1, x2, mask_constant=c)`` / ``apply_fn(..., mask_constant=c)``:
an input entry equal to ``c`` (``NaN`` matches ``NaN``) is masked and replaced by zero; a
position is masked when all its channels are (a position masked in some channels only has no
infinite-width kernel there either, and raises). The mask then travels with the kernel
(``Kernel.mask1``, ``Kernel.mask2``, ``(N, *S)`` booleans, ``True`` = masked):

- after every layer of a ``serial`` chain the covariances of masked positions are set to zero
  (neural-tangents' ``remask_kernel``), so a masked position stays a zero feature vector;
- ``SelfAttention`` gives masked keys no attention weight (softmax logits ``-inf``, other
  mechanisms ``0``) and zeroes masked queries' outputs;
- ``GlobalAvgPool`` averages over the unmasked positions only (``GlobalSumPool`` sums them),
  and the mask ends there.

Other layers that mix positions (``Conv`` with wider filters, ``AvgPool``, ``Flatten``, ...)
raise before any work: their masked kernels are not implemented here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._checks import real_number

__all__ = ["input_mask", "masked_forward"]


def input_mask(x, mask_constant: float, *, name: str = "x") -> tuple[Tensor, Tensor]:
    """The masked positions of channels-first sequences and the inputs with them zeroed.

    **Arguments:**

    - ``x``: ``(N, C, *S)`` inputs (tensor or NumPy array, floating point); entries equal to
      ``mask_constant`` mark padding.
    - ``mask_constant``: a real number, or ``float("nan")`` to mark padding with ``NaN``.
    - ``name``: the argument's name in error messages.

    **Returns:** ``(x0, mask)``: ``x0`` of ``x``'s shape with masked entries set to zero, and
    ``mask`` ``(N, *S)`` booleans, ``True`` where every channel equals ``mask_constant``.
    Raises ``ValueError`` when a position is masked in some channels only, or when an example
    has every position masked (nothing left to attend to or average).

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> x = torch.tensor([[[1.0, 2.0, -9.0], [3.0, 4.0, -9.0]]])  # (1, C=2, S=3)
        >>> x0, mask = L.input_mask(x, -9.0)
        >>> mask.tolist(), x0[0, :, 2].tolist()
        ([[False, False, True]], [0.0, 0.0])
    """
    if isinstance(mask_constant, bool) or not isinstance(mask_constant, (int, float)):
        raise TypeError(f"mask_constant must be a real number (or float('nan')); got "
                        f"{mask_constant!r}")
    c = float(mask_constant)
    if not math.isnan(c):
        c = real_number(c, "mask_constant")  # +-inf would be indistinguishable from overflow
    import numpy as np
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = f"{type(x).__name__}" + (f" of dtype {x.dtype}" if isinstance(x, Tensor) else "")
        raise TypeError(f"{name} must be a floating-point torch.Tensor or numpy array; got "
                        f"{got}")
    if x.ndim < 3:
        raise ValueError(
            f"masks apply to channels-first sequences (N, C, *positions); got {name} of shape "
            f"{tuple(x.shape)}: a fully-connected input has no positions to mask"
        )
    hit = torch.isnan(x) if math.isnan(c) else x == c
    mask = hit.all(1)
    partial = hit.any(1) & ~mask
    if bool(partial.any()):
        i, *pos = (int(v) for v in partial.nonzero()[0])
        raise ValueError(
            f"{name}[{i}] at position {tuple(pos)} equals mask_constant={mask_constant!r} in "
            f"some channels only: a position is masked when all its channels equal the mask "
            f"constant (partly masked positions have no infinite-width kernel); pick a "
            f"mask_constant that does not occur in real data"
        )
    full = mask.flatten(1).all(1)
    if bool(full.any()):
        raise ValueError(
            f"{name}[{int(full.nonzero()[0, 0])}] has every position masked "
            f"(mask_constant={mask_constant!r}): drop that example"
        )
    return x.masked_fill(hit, 0.0), mask


def check_mask(mask: Tensor, x: Tensor, name: str = "mask") -> Tensor:
    """``mask`` as ``(N, *S)`` booleans matching ``(N, C, *S)`` activations ``x``."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a boolean torch.Tensor (True = masked position); got "
                        f"{type(mask).__name__}"
                        f"{' of dtype ' + str(mask.dtype) if isinstance(mask, Tensor) else ''}")
    want = (x.shape[0], *x.shape[2:])
    if tuple(mask.shape) != want:
        raise ValueError(f"{name} must have shape (N, *positions) = {want} for inputs of shape "
                         f"{tuple(x.shape)}; got {tuple(mask.shape)}")
    return mask


def _keep(m1: Tensor, m2: Tensor | None, *, pair: bool, full: bool) -> Tensor:
    """Where a kernel array has no masked position: ``(N1, N2, P, P)`` (``pair`` and
    ``full``), ``(N1, N2, P)`` (``pair``, spatial diagonal), ``(N, P, P)`` or ``(N, P)``."""
    k1 = ~m1.flatten(1)
    k2 = k1 if m2 is None else ~m2.flatten(1)
    if pair:
        return (k1[:, None, :, None] & k2[None, :, None, :]) if full \
            else (k1[:, None, :] & k2[None, :, :])
    return (k1[:, :, None] & k1[:, None, :]) if full else k1


def zero_masked(t: Tensor | None, m1: Tensor, m2: Tensor | None, *, pair: bool,
                full: bool = True) -> Tensor | None:
    """``t`` (a kernel array with positions flattened, see ``_keep``) with every entry that
    involves a masked position set to zero (``where``, not a product: no ``0 * inf``)."""
    if t is None or t.ndim == 0:
        return t
    return _where(_keep(m1, m2, pair=pair, full=full), t)


def _where(keep: Tensor, t: Tensor | None) -> Tensor | None:
    """``t``, a kernel array of ``keep``'s size (positions flattened or not), zero where
    ``keep`` is false; ``None`` and the 0-d zero NTK pass through."""
    if t is None or t.ndim == 0:
        return t
    zero = torch.zeros((), dtype=t.dtype, device=t.device)
    return torch.where(keep, t.reshape(keep.shape), zero).reshape(t.shape)


def remask(k):
    """The kernel ``k`` with the covariances of its masked positions zeroed (identity when it
    carries no mask or has no positions): neural-tangents' ``Kernel.mask``."""
    if isinstance(k, list) or k.mask1 is None or k.n_spatial == 0:
        return k
    full = not k.diagonal_spatial
    m2 = k.mask1 if k.mask2 is None else k.mask2
    # One mask per kind of array: the NNGP and NTK share theirs (cov1's with diagonal=True).
    keep1 = _keep(k.mask1, None, pair=False, full=full)
    keep12 = keep1 if k.diagonal else _keep(k.mask1, m2, pair=True, full=full)
    keep2 = None if k.cov2 is None else _keep(m2, None, pair=False, full=full)
    return k.replace(nngp=_where(keep12, k.nngp), ntk=_where(keep12, k.ntk),
                     cov1=_where(keep1, k.cov1), cov2=_where(keep2, k.cov2))


def check_maskable(net) -> None:
    """Raise ``ValueError`` naming the first layer of ``net`` that cannot carry masks before
    the mask ends (at a global pooling)."""
    def walk(layer) -> bool:  # True once a global pooling ended the mask
        role = layer.mask_role()
        if role == "chain":
            return any(walk(child) for child in layer.children())
        if role in ("keep", "end"):
            return role == "end"
        raise ValueError(
            f"{layer!r} does not support masked inputs (mask_constant): masks are carried by "
            f"position-wise layers (activations, Conv with filter (1,) and stride 1), "
            f"SelfAttention and GlobalAvgPool/GlobalSumPool (where the mask ends)"
        )

    walk(net)


def masked_forward(model: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    """The finite twin of a masked network: ``model`` (from ``spec.module``) on ``x`` with the
    positions ``mask`` masked, as the kernel with ``mask_constant`` treats them.

    **Arguments:**

    - ``model``: the finite twin of a ``serial`` chain (an ``nn.Sequential``) or of one layer
      (see :func:`check_maskable` for the layers that carry masks).
    - ``x``: ``(N, C, *S)`` inputs, masked entries already zero (see :func:`input_mask`).
    - ``mask``: ``(N, *S)`` booleans, ``True`` = masked.

    **Returns:** the model's outputs; outputs at masked positions are zero until a global
    pooling, which averages over unmasked positions only.

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> net = L.serial(L.Conv(8, (1,)), L.SelfAttention(2, n_chan_out=8), L.GlobalAvgPool())
        >>> x = torch.randn(2, 3, 4, dtype=torch.float64)
        >>> x[0, :, 3] = -1.0
        >>> x0, mask = L.input_mask(x, -1.0)
        >>> model = net.module((3, 4), generator=torch.Generator().manual_seed(0),
        ...                    dtype=torch.float64)
        >>> L.masked_forward(model, x0, mask).shape
        torch.Size([2, 8])
    """
    mask = check_mask(mask, x)
    modules = list(model) if isinstance(model, nn.Sequential) else [model]
    for module in modules:
        if mask is not None and x.ndim > 2:
            x = x.masked_fill(mask.unsqueeze(1), 0.0)
        if getattr(module, "takes_mask", False):  # attention, global pooling
            x = module(x, mask=mask)
        elif isinstance(module, nn.Sequential):
            x = masked_forward(module, x, mask) if mask is not None else module(x)
        else:
            x = module(x)
        if getattr(module, "ends_mask", False):
            mask = None
    if mask is not None and x.ndim > 2:
        x = x.masked_fill(mask.unsqueeze(1), 0.0)
    return x
