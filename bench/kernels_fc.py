"""Benchmark: NNGP+NTK of fully-connected networks against the Gram matrix of the same run.

Network (docs/benchmarks.md): ``Dense(512, W_std=1.5, b_std=0.05) - act`` three times, then
``Dense(1)``; inputs ``N x 784`` standard normal; ``K(X, X)``. The anchor, timed in the same
run, is the Gram matrix ``x @ x.T`` of the same ``N`` and dtype: the one part no kernel can
skip, so ``kernel / gram = 1.0`` is the floor and the ratio is comparable across machines.
neural-tangents 0.6.5 (JAX 0.4.25, jit, CPU) was measured on this machine type at N=4000
(ReLU): 0.68 s float32 and 1.17 s float64, about 6x and 4x its Gram matrix.

Peak memory is measured in a fresh Python process per configuration (so that no freed memory
is reused unseen): the growth of its resident high-water mark (``VmHWM``) from just before the
kernel call, i.e. beyond the inputs, also in units of one ``N x N`` matrix of the dtype. Run
with nothing else busy:

    python bench/kernels_fc.py [--n 1000,2000,4000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys

import torch

import ntkit
from _common import matmul_seconds, median_time, status_kb
from ntkit import layers as L


def mlp(act: L.Layer) -> L.Serial:
    hidden = [l for _ in range(3) for l in (L.Dense(512, W_std=1.5, b_std=0.05), act)]
    return L.serial(*hidden, L.Dense(1, b_std=None))


ACTIVATIONS = {"ReLU": L.ReLU(), "Erf": L.Erf()}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _inputs(n: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(n, 784, dtype=dtype, generator=torch.Generator().manual_seed(n))


def _peak_child(act: str, dtype: str, n: int) -> None:
    """In a fresh process: print the resident-memory growth while computing the kernel."""
    x = _inputs(n, DTYPES[dtype])
    net = mlp(ACTIVATIONS[act])
    net.kernel(x[:600])  # load libraries and start threads before measuring
    gc.collect()
    before = status_kb("VmRSS")
    k = net.kernel(x)
    print((status_kb("VmHWM") - before) * 1024, k.ntk.shape[0])


def peak_bytes(act: str, dtype: str, n: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--peak-child", f"{act},{dtype},{n}"],
                         check=True, capture_output=True, text=True)
    return float(out.stdout.split()[0])


def _row(name: str, net: L.Layer, dname: str, n: int, repeats: int) -> str:
    x = _inputs(n, DTYPES[dname])
    gram = median_time(lambda: x @ x.T, repeats)
    kernel = median_time(lambda: net.kernel(x), repeats)
    peak = peak_bytes(name, dname, n)
    nxn = n * n * x.element_size()
    return (f"{name:<5} {dname:<8} {n:>5} {kernel:>9.3f} {gram:>8.3f} {kernel / gram:>6.2f} "
            f"{peak / 2**20:>8.1f} {peak / nxn:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="1000,2000,4000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_child:
        act, dtype, n = args.peak_child.split(",")
        return _peak_child(act, dtype, int(n))
    sizes = [int(v) for v in args.n.split(",")]

    matmul = matmul_seconds()
    print(f"ntkit {ntkit.__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"one 4096x4096 float32 matmul: {matmul:.3f} s "
          f"({2 * 4096**3 / matmul / 1e9:.0f} GFLOP/s)")
    print()
    header = (f"{'act':<5} {'dtype':<8} {'N':>5} {'kernel s':>9} {'gram s':>8} {'ratio':>6} "
              f"{'peak MB':>8} {'peak/NxN':>8}")
    print(header)
    print("-" * len(header))
    for name, act in ACTIVATIONS.items():
        for dname in DTYPES:
            for n in sizes:
                print(_row(name, mlp(act), dname, n, args.repeats), flush=True)
    print()
    print("anchor: neural-tangents 0.6.5 ReLU at N=4000: 0.68 s float32 (~6x its Gram), "
          "1.17 s float64 (~4x); target here: ratio <= 1.5 and peak <= 2.5 NxN at N=4000")


if __name__ == "__main__":
    main()
