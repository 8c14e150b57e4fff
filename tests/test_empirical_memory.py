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


_PEAK_SCRIPT = r"""
import json, sys, torch
from torch import nn
from ntkit.empirical import empirical_ntk

def status(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ":"))

strategy, budget = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
if strategy == "structured":  # a CNN: per-example Jacobians of 3x3 convolutions, 20 MB each
    model = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(64 * 8 * 8, 10))
    x = torch.randn(40, 1, 8, 8)
else:  # the benchmark MLP: 670k parameters, per-example Jacobians of 27 MB
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    x = torch.randn(24, 784)
empirical_ntk(model, x[:2], strategy=strategy)  # libraries, threads
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the high-water mark to the current resident size
before = status("VmRSS")
theta = empirical_ntk(model, x, strategy=strategy, max_memory=budget)
print(json.dumps({"peak": status("VmHWM") - before, "finite": bool(theta.isfinite().all())}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("strategy", ["jacobian", "structured"])
def test_peak_memory_stays_under_max_memory(strategy):
    import json
    import subprocess

    budget = 200 * 2**20  # a few examples' Jacobians per block: many blocks, recomputed
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, strategy, str(budget)],
                         capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["finite"]
    # The budget covers the working memory (Jacobians, factors, temporaries); the result,
    # the model and the inputs (under 3 MB here) are outside it, so no slack is given.
    assert result["peak"] <= budget, result["peak"] / 2**20
