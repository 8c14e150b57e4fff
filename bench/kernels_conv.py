"""Benchmark: NNGP+NTK of the benchmark CNN, time and peak memory, against neural-tangents.

Network (docs/benchmarks.md): ``Conv(64, 3x3, SAME) - ReLU - Conv(64, 3x3, SAME) - ReLU -
AvgPool(2x2, stride 1, VALID) - Conv(64, 3x3, SAME) - ReLU - GlobalAvgPool | Flatten -
Dense(10)``, ``W_std=1``, no biases; inputs ``N x 1 x 8 x 8`` standard normal; ``K(X, X)``.
The stride-1 pool (8x8 -> 7x7) keeps the full spatial covariance through every conv before it;
with ``Flatten`` the last conv runs on same-position covariances only.

Method. Every row runs in a fresh Python process (nothing freed earlier is reused unseen):
it imports ntkit, builds the inputs and runs the kernel once on 2 inputs (libraries,
threads), then resets the resident high-water mark (``echo 5 > /proc/self/clear_refs``, Linux;
importing torch alone peaks above a small run, so ``ru_maxrss`` would hide it) and records the
resident size as the baseline, times ``repeats`` calls of ``net.kernel(x)`` with the default
settings (1 GiB working-memory budget for image networks) and reports the median time and the
peak: the high-water mark ``VmHWM`` after the calls minus the baseline (where clear_refs is not
writable, ``ru_maxrss`` growth, a lower bound). The anchor is the time of
one 4096x4096 float32 matmul in the parent process of the same run, so that machines compare.

    python bench/kernels_conv.py [--n 100,200,400] [--repeats 3] [--quick]

neural-tangents 0.6.5 (JAX 0.4.25, jit, CPU; its 4096x4096 float32 matmul took 0.8 s) on this
machine type: the "nt bar" column. Targets: at most half of nt's time at N=100 and 200 in each
dtype; N=400 with GlobalAvgPool under 2 GiB peak in both dtypes.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

import ntkit
from _common import matmul_seconds, status_kb
from ntkit import layers as L

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# neural-tangents 0.6.5 (seconds, peak GB), measured on this machine type (see the issue).
NT_BAR = {("GAP", "float32", 100): "12.1 s / 2.0 GB", ("GAP", "float64", 100): "3.8 s / 2.9 GB",
          ("GAP", "float32", 200): "45.7 s / 5.8 GB", ("GAP", "float64", 200): "19.6 s / 9.5 GB",
          ("GAP", "float32", 400): "> 20 GB (not run)",
          ("GAP", "float64", 400): "> 20 GB (not run)",
          ("Flatten", "float32", 100): "11.1 s"}
NT_MATMUL = 0.8


def cnn(head: str) -> L.Serial:
    def conv():
        return L.Conv(64, (3, 3), padding="SAME", W_std=1.0, b_std=None)

    last = L.GlobalAvgPool() if head == "GAP" else L.Flatten()
    return L.serial(conv(), L.ReLU(), conv(), L.ReLU(), L.AvgPool((2, 2), strides=1),
                    conv(), L.ReLU(), last, L.Dense(10, b_std=None))


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _child(head: str, dtype: str, n: int, repeats: int) -> None:
    """In a fresh process: print the median time and the peak memory growth as JSON."""
    x = torch.randn(n, 1, 8, 8, dtype=DTYPES[dtype], generator=torch.Generator().manual_seed(n))
    net = cnn(head)
    net.kernel(x[:2])  # load libraries and start threads before measuring
    reset = _reset_peak()
    base = status_kb("VmRSS") * 1024 if reset else _maxrss_bytes()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        k = net.kernel(x, progress=False)
        times.append(time.perf_counter() - t)
    assert k.ntk.shape == (n, n) and bool(torch.isfinite(k.ntk).all())
    peak = (status_kb("VmHWM") * 1024 if reset else _maxrss_bytes()) - base
    print(json.dumps({"seconds": statistics.median(times), "peak": peak}))


def _row(head: str, dtype: str, n: int, repeats: int) -> dict:
    threads = ["--threads", str(torch.get_num_threads())]
    out = subprocess.run([sys.executable, __file__, "--child", f"{head},{dtype},{n},{repeats}",
                          *threads], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="100,200,400")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="N=50 only, one repeat: checks that the benchmark runs")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        head, dtype, n, repeats = args.child.split(",")
        return _child(head, dtype, int(n), int(repeats))
    sizes = [50] if args.quick else [int(v) for v in args.n.split(",")]
    repeats = 1 if args.quick else args.repeats

    matmul = matmul_seconds()
    print(f"ntkit {ntkit.__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"one 4096x4096 float32 matmul: {matmul:.3f} s (neural-tangents' machine: "
          f"{NT_MATMUL} s)")
    print()
    header = (f"{'network':<8} {'N':>4} {'dtype':<8} {'seconds':>8} {'peak MiB':>9} "
              f"{'/matmul':>8}  nt 0.6.5 bar")
    print(header)
    print("-" * len(header) + "-" * 12)
    for head in ("GAP", "Flatten"):
        for n in sizes:
            for dtype in DTYPES:
                if head == "Flatten" and n == 400 and not args.quick:
                    continue
                r = _row(head, dtype, n, 1 if n >= 400 else repeats)
                bar = NT_BAR.get((head, dtype, n), "")
                print(f"{head:<8} {n:>4} {dtype:<8} {r['seconds']:>8.2f} "
                      f"{r['peak'] / 2**20:>9.0f} {r['seconds'] / matmul:>8.1f}  {bar}",
                      flush=True)
    print()
    print("targets: time <= nt / 2 at N=100, 200 (each dtype); GAP at N=400 under 2048 MiB; "
          "compare /matmul with nt's time / 0.8 s on another machine")


if __name__ == "__main__":
    main()
