"""Block sizes over examples that keep a strategy's working memory under a budget, and
allocation of the large buffers that the strategies fill."""

from __future__ import annotations

import ctypes
import math
import sys

from torch import Tensor

from .._bytes import parse_bytes

__all__ = ["DEFAULT_BUDGET", "block_size", "check_max_memory", "empty", "zeros"]

# Working memory per call when the caller sets no ``max_memory``.
DEFAULT_BUDGET = 1 << 30


def check_max_memory(max_memory) -> int | None:
    """``max_memory`` in bytes: ``None``, or a budget that :func:`ntkit._bytes.parse_bytes`
    reads (bytes, or a string such as ``"4GB"``)."""
    return None if max_memory is None else parse_bytes(max_memory)


def block_size(n: int, *, per_example: float, per_pair: float, max_memory: int | None,
               batch_size: int | None, strategy: str) -> int:
    """Largest block ``b <= n`` with ``2 b per_example + b^2 per_pair <= budget`` (bytes).

    ``per_example``: bytes kept per example of a block (Jacobians, layer features);
    ``per_pair``: bytes of temporaries per pair of examples of two blocks. ``batch_size``,
    when given, caps the block. One example over ``max_memory`` raises ``ValueError``.
    """
    one = 2 * per_example + per_pair
    if max_memory is not None and one > max_memory:
        raise ValueError(
            f"max_memory={max_memory} bytes is too small: strategy={strategy!r} needs about "
            f"{math.ceil(one)} bytes for a single example of this model; raise max_memory or "
            f"choose another strategy"
        )
    budget = DEFAULT_BUDGET if max_memory is None else max_memory
    if per_pair > 0:
        b = (-2 * per_example + math.sqrt(4 * per_example**2 + 4 * per_pair * budget)) / (
            2 * per_pair)
    else:
        b = budget / (2 * per_example)
    b = max(1, min(n, int(b)))
    return min(b, batch_size) if batch_size is not None else b


_MADV_HUGEPAGE = 14  # Linux <sys/mman.h>
_HUGE_FROM = 1 << 22  # bytes: buffers from 4 MiB up ask for huge pages
_madvise = None


def _advise_huge(t: Tensor) -> None:
    """Ask Linux to back ``t``'s (not yet touched) pages with transparent huge pages.

    A fresh buffer of a few hundred MB costs about as much in page faults on first write
    with 4 KiB pages as the product that fills it; with 2 MiB pages several times less,
    except for the first two or three in a process, while the kernel compacts memory into
    huge pages (measured figures: bench/RESULTS.md). Works where
    ``/sys/kernel/mm/transparent_hugepage/enabled`` is ``madvise`` or ``always``; elsewhere
    (other systems, no THP) it does nothing.
    """
    global _madvise
    if _madvise is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).madvise
            fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            fn.restype = ctypes.c_int
            _madvise = fn
        except (OSError, AttributeError):
            _madvise = False
    if not _madvise:
        return
    start, size = t.data_ptr(), t.numel() * t.element_size()
    lo, hi = (start + 4095) & ~4095, (start + size) & ~4095  # whole pages inside the buffer
    if hi > lo:
        _madvise(lo, hi - lo, _MADV_HUGEPAGE)  # advice only: a failure changes nothing


def empty(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Uninitialised buffer of ``like``'s dtype and device (huge pages for a large CPU one
    on Linux, see ``_advise_huge``)."""
    t = like.new_empty(shape)
    if (sys.platform.startswith("linux") and t.device.type == "cpu"
            and t.numel() * t.element_size() >= _HUGE_FROM):
        _advise_huge(t)
    return t


def zeros(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """``empty(shape, like)`` filled with zeros."""
    return empty(shape, like).zero_()
