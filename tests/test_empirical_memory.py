"""ntkit.empirical._memory: block sizes under a budget and the large-buffer allocation."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from ntkit.empirical import _memory


def test_block_size_is_the_largest_that_fits_the_budget():
    # 2 b e + b^2 p <= budget, with e = 1000 and p = 10 bytes and a 1e6-byte budget:
    # b = (-2e + sqrt(4 e^2 + 4 p budget)) / (2 p) = 231.66... -> 231.
    b = _memory.block_size(10_000, per_example=1000, per_pair=10, max_memory=1_000_000,
                           batch_size=None, strategy="structured")
    assert b == 231
    assert 2 * b * 1000 + b * b * 10 <= 1_000_000 < 2 * (b + 1) * 1000 + (b + 1) ** 2 * 10
    assert _memory.block_size(100, per_example=1000, per_pair=10, max_memory=1_000_000,
                              batch_size=None, strategy="structured") == 100
    assert _memory.block_size(10_000, per_example=1000, per_pair=10, max_memory=1_000_000,
                              batch_size=50, strategy="structured") == 50


@pytest.mark.parametrize("shape", [(3, 5), (1 << 20, 2)])  # 60 B and 8 MiB (huge pages)
def test_zeros_are_zeros_of_the_like_dtype(shape):
    like = torch.ones(1, dtype=torch.float64)
    z = _memory.zeros(shape, like)
    assert z.shape == shape and z.dtype == torch.float64 and z.device == like.device
    assert int(torch.count_nonzero(z)) == 0
    e = _memory.empty(shape, like)
    e.fill_(2.5)  # an uninitialised buffer is writable over its whole length
    assert float(e.sum()) == 2.5 * math.prod(shape)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise is Linux-only")
def test_large_buffers_ask_for_huge_pages_over_whole_pages_inside_them(monkeypatch):
    calls = []
    monkeypatch.setattr(_memory, "_madvise", lambda lo, n, advice: calls.append((lo, n, advice)))
    like = torch.zeros(1)
    small = _memory.empty((1000,), like)  # 4 kB: below _HUGE_FROM, no advice
    assert calls == []
    big = _memory.empty((3 << 20,), like)  # 12 MiB
    assert len(calls) == 1
    lo, n, advice = calls[0]
    start, size = big.data_ptr(), big.numel() * 4
    assert advice == 14  # MADV_HUGEPAGE
    assert lo % 4096 == 0 and n % 4096 == 0  # madvise needs whole pages
    assert start <= lo and lo + n <= start + size  # never outside the buffer
    assert size - n < 2 * 4096  # and all of it but the partial pages at its two ends
    del small
