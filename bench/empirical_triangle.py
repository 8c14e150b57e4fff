"""Benchmark (A/B): the structured strategy's _Triangle (upper triangle of a block against
itself, in levels of batched tiles) against the plain path (depth 0: the whole product as one GEMM,
then averaged with its transpose), on bench/empirical_ntk.py's CNN, N = 256, float32,
outputs "trace" and "full". Interleaved calls, median of REPEATS. FLOPs: the kernel
products of the diagonal blocks (Jacobian and Gram-route terms, as _pairs._flops counts a
whole product) times the fraction of the product that each variant executes (its tiles'
areas over n^2); torch's FlopCounterMode does not see the in-place addmm_/baddbmm_.

    python bench/empirical_triangle.py [--repeats 7] [--n 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from ntkit.empirical import _pairs, empirical_ntk


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 10))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--flops-only", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = cnn()
    x = torch.randn(args.n, 1, 8, 8)
    tuned = _pairs._depth

    executed = [0.0]
    whole_flops, triangle_init = _pairs._flops, _pairs._Triangle.__init__

    def counting_flops(jacs, terms, outputs):
        total = whole_flops(jacs, terms, outputs)
        executed.append(total)  # the last entry: this block's whole product
        return total

    def counting_init(self, n, k, outputs, depth, like):
        triangle_init(self, n, k, outputs, depth, like)
        area = sum(count * h * h for count, h in self.levels) + (n - self.even) * n
        executed[0] += executed.pop() * area / (n * n)

    _pairs._flops, _pairs._Triangle.__init__ = counting_flops, counting_init

    def run(variant: str, outputs: str) -> torch.Tensor:
        _pairs._depth = tuned if variant == "triangle" else (lambda n, rows, flops: 0)
        try:
            return empirical_ntk(model, x, strategy="structured", outputs=outputs)
        finally:
            _pairs._depth = tuned

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, N = {args.n}, "
          f"median of {args.repeats} interleaved calls")
    print(f"{'outputs':8} {'variant':9} {'median s':>9} {'min s':>8} {'prod GFLOP':>10} "
          f"{'max |diff|':>11}")
    for outputs in ("trace", "full"):
        gflop = {}
        ref = {}
        for v in ("triangle", "plain"):  # warm-up, results, executed FLOPs
            executed[:] = [0.0]
            ref[v] = run(v, outputs)
            gflop[v] = executed[0] / 1e9
        diff = float((ref["triangle"] - ref["plain"]).abs().max())
        times = {"triangle": [float("nan")], "plain": [float("nan")]}
        if not args.flops_only:
            times = {"triangle": [], "plain": []}
        for _ in range(0 if args.flops_only else args.repeats):
            for v in ("triangle", "plain"):
                t0 = time.perf_counter()
                run(v, outputs)
                times[v].append(time.perf_counter() - t0)
        for v in ("triangle", "plain"):
            print(f"{outputs:8} {v:9} {statistics.median(times[v]):9.3f} "
                  f"{min(times[v]):8.3f} {gflop[v]:10.2f} {diff:11.3g}")
        gain = statistics.median(times["plain"]) / statistics.median(times["triangle"])
        print(f"{outputs:8} plain / triangle (median): {gain:.3f}")


if __name__ == "__main__":
    main()
