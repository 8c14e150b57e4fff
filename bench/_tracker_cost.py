"""Benchmark part: the per-record cost of ``KernelTracker.step`` against one
``ntkit.empirical_ntk`` call on the same probe set (issue 18: goal <= 1.2x).

Models (docs/benchmarks.md, "Empirical"): MLP 784-512-512-10 (ReLU) and the CNN (three
``Conv2d(., 32, 3, padding=1)`` + ReLU on 1x8x8 inputs, flatten, ``Linear(2048, 10)``), float32,
probe inputs standard normal, ``y_probe`` (N, 10) standard normal (so the alignment is computed
too), ``every=1`` (every call records), ``strategy="auto"``, ``outputs="trace"``. One call of
each is a warm-up (and gives the tracker its initial kernel); then ``repeats`` rounds, each
timing one ``empirical_ntk`` and one ``tracker.step`` back to back (interleaved, so that a
change in the machine's load hits both), and the medians are compared (the ratio of the
fastest of each is printed too: on a busy machine it is the steadier of the two). The eNTK is
the anchor, measured in the same run; the 4096 x 4096 float32 matmul is printed as the
machine's yardstick. Imported by ``bench/analysis.py``; run alone as

    python bench/_tracker_cost.py [--n 64,256] [--models MLP,CNN] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import matmul_seconds
from empirical_ntk import MODELS
from ntkit import empirical_ntk
from ntkit.analysis import KernelTracker

GOAL = 1.2


def _seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def time_one(model_name: str, n: int, repeats: int) -> dict:
    """Median seconds of ``empirical_ntk`` and of a recording ``tracker.step`` for one model
    and probe size, interleaved over ``repeats`` rounds."""
    make, shape = MODELS[model_name]
    torch.manual_seed(0)
    model = make()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randn(n, 10, generator=g)
    tracker = KernelTracker(model, x, y, every=1)
    empirical_ntk(model, x)
    tracker.step(0)
    ntk, step = [], []
    for r in range(1, repeats + 1):
        ntk.append(_seconds(lambda: empirical_ntk(model, x)))
        step.append(_seconds(lambda r=r: tracker.step(r)))
    return {"model": model_name, "n": n, "ntk": statistics.median(ntk),
            "step": statistics.median(step), "min_ratio": min(step) / min(ntk)}


def tracker_cost_table(models=("MLP", "CNN"), ns=(64, 256), repeats: int = 5, *,
                       yardstick: bool = True) -> str:
    """The table: per model and probe size, the median seconds of one ``empirical_ntk``, of
    one recording ``tracker.step``, their ratio against the goal, and the ratio of the
    fastest of each (less sensitive to other load on the machine)."""
    lines = []
    if yardstick:
        mm = matmul_seconds(torch.float32)
        lines.append(f"yardstick: 4096 x 4096 float32 matmul {mm:.3f} s "
                     f"({2 * 4096**3 / mm / 1e9:.0f} GFLOP/s), torch threads "
                     f"{torch.get_num_threads()}")
    lines.append(f"KernelTracker.step per record vs one empirical_ntk (float32, trace, "
                 f"median of {repeats} interleaved; goal <= {GOAL}x)")
    lines.append(f"{'model':<6}{'N':>6}{'eNTK s':>10}{'step s':>10}{'ratio':>8}"
                 f"{'min ratio':>11}  goal")
    for name in models:
        for n in ns:
            row = time_one(name, n, repeats)
            ratio = row["step"] / row["ntk"]
            lines.append(f"{name:<6}{n:>6}{row['ntk']:>10.4f}{row['step']:>10.4f}"
                         f"{ratio:>8.3f}{row['min_ratio']:>11.3f}  "
                         f"{'ok' if ratio <= GOAL else 'MISSED'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="64,256", help="probe sizes, comma-separated")
    parser.add_argument("--models", default="MLP,CNN")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(tracker_cost_table(tuple(args.models.split(",")),
                             tuple(int(v) for v in args.n.split(",")), args.repeats))


if __name__ == "__main__":
    main()
