"""Large uninitialised buffers backed by transparent huge pages where Linux offers them: the
one allocator of the empirical NTK's buffers and of the analytic kernels' large outputs."""

from __future__ import annotations

import ctypes
import sys

from torch import Tensor

__all__ = ["empty", "zeros"]

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
