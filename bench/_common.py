"""Timing and memory helpers shared by the benchmarks (run as ``python bench/<name>.py``)."""

from __future__ import annotations

import statistics
import time

import torch

__all__ = ["matmul_seconds", "median_time", "status_kb"]


def median_time(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call (allocator,
    thread pool, lazy imports)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_seconds(dtype: torch.dtype = torch.float32) -> float:
    """Median of 3 timings of one 4096 x 4096 matmul: the yardstick that lets runs on
    different machines compare (neural-tangents' bars: 0.8 s in float32)."""
    a = torch.randn(4096, 4096, dtype=dtype)
    return median_time(lambda: a @ a, 3)


def status_kb(field: str, pid: int | str = "self") -> int:
    """A ``/proc/<pid>/status`` field in kB (Linux), e.g. ``"VmRSS"`` or ``"VmHWM"``."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")
