"""Argument checks shared across ntkit: clear errors instead of silent garbage."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` is finite, in one reduction pass when they are: a finite
    sum implies finite entries; only a non-finite sum (a NaN/inf, or overflow of the sum of
    huge values) pays for the elementwise test. ~20x faster than ``isfinite(x).all()`` on
    large kernels, which allocates a boolean copy."""
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):
        return True
    return bool(torch.isfinite(x).all())


def as_inputs(x, name: str) -> Tensor:
    """``x`` as a floating-point tensor of shape ``(N, ...)`` with ``N >= 1``, all finite.

    Accepts tensors and NumPy arrays; integers and other types raise ``TypeError``.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array; got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must have a floating-point dtype; got {x.dtype} "
            f"(convert it, e.g. {name}.double())"
        )
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape (N, features...) with a batch axis first; got shape "
            f"{tuple(x.shape)} (for one example use {name}[None])"
        )
    if x.shape[0] == 0 or x[0].numel() == 0:
        raise ValueError(
            f"{name} is empty: shape {tuple(x.shape)}; pass at least one example with at least "
            f"one feature"
        )
    if not all_finite(x):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); clean the inputs first")
    return x


def check_pair(x1: Tensor, x2: Tensor) -> None:
    """``x1`` and ``x2`` must agree in feature shape, dtype and device."""
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(
            f"x1 and x2 must have the same feature shape; got {tuple(x1.shape[1:])} and "
            f"{tuple(x2.shape[1:])}"
        )
    if x1.dtype != x2.dtype:
        raise TypeError(f"x1 and x2 must have the same dtype; got {x1.dtype} and {x2.dtype}")
    if x1.device != x2.device:
        raise ValueError(f"x1 and x2 must be on the same device; got {x1.device} and {x2.device}")


def check_get(get) -> tuple[str, ...]:
    """Normalise ``get`` to a tuple drawn from ``("nngp", "ntk")``."""
    if isinstance(get, str):
        get = (get,)
    if not isinstance(get, Sequence) or len(get) == 0:
        raise ValueError(f"get must be 'nngp', 'ntk' or a tuple of them; got {get!r}")
    for g in get:
        if g not in ("nngp", "ntk"):
            raise ValueError(f"get: unknown kernel {g!r}; expected 'nngp' and/or 'ntk'")
    return tuple(get)


def real_number(value, name: str, *, minimum: float | None = None, allow_none: bool = False):
    """A finite real ``value`` (``>= minimum`` when given), returned as ``float``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return value


def positive_int(value, name: str) -> int:
    """A strictly positive ``int``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer; got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value}")
    return int(value)
