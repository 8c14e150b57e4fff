"""ntkit._alloc: large uninitialised buffers backed by huge pages (Linux)."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from ntkit import _alloc


@pytest.mark.parametrize("shape", [(3, 5), (1 << 20, 2)])  # 60 B and 8 MiB (huge pages)
def test_zeros_are_zeros_of_the_like_dtype(shape):
    like = torch.ones(1, dtype=torch.float64)
    z = _alloc.zeros(shape, like)
    assert z.shape == shape and z.dtype == torch.float64 and z.device == like.device
    assert int(torch.count_nonzero(z)) == 0
    e = _alloc.empty(shape, like)
    e.fill_(2.5)  # an uninitialised buffer is writable over its whole length
    assert float(e.sum()) == 2.5 * math.prod(shape)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise is Linux-only")
def test_large_buffers_ask_for_huge_pages_over_whole_pages_inside_them(monkeypatch):
    calls = []
    monkeypatch.setattr(_alloc, "_madvise", lambda lo, n, advice: calls.append((lo, n, advice)))
    like = torch.zeros(1)
    small = _alloc.empty((1000,), like)  # 4 kB: below _HUGE_FROM, no advice
    assert calls == []
    big = _alloc.empty((3 << 20,), like)  # 12 MiB
    assert len(calls) == 1
    lo, n, advice = calls[0]
    start, size = big.data_ptr(), big.numel() * 4
    assert advice == 14  # MADV_HUGEPAGE
    assert lo % 4096 == 0 and n % 4096 == 0  # madvise needs whole pages
    assert start <= lo and lo + n <= start + size  # never outside the buffer
    assert size - n < 2 * 4096  # and all of it but the partial pages at its two ends
    del small


def test_large_buffers_are_ordinary_tensors():
    """The kernels' large outputs (``layers._compute``) come from here: contiguous, writable,
    picklable, shareable."""
    import pickle

    t = _alloc.empty((1100, 1100), torch.zeros(0, dtype=torch.float32))
    assert t.shape == (1100, 1100) and t.dtype == torch.float32 and t.is_contiguous()
    t.fill_(2.0)
    assert float(pickle.loads(pickle.dumps(t)).sum()) == 2.0 * 1100 * 1100
    assert t.share_memory_().is_shared()
    small = _alloc.empty((3, 3), torch.zeros(0, dtype=torch.float64))
    assert small.dtype == torch.float64
