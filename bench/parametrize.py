"""Benchmark: ``ntkit.parametrize`` under muP against SP (issue 19's acceptance).

1. Coordinate check (Yang et al. 2022, TP5 §D.1): a 3-hidden-layer ReLU MLP (16 inputs, 10
   classes, 64 Gaussian examples) at widths 64..4096, 5 Adam steps at lr 1e-3 from base
   width 64, 3 seeds. Printed: each module's slope of ``log mean|activation|`` in
   ``log width`` after 1 and 5 steps. muP passes when every |slope| < 0.1; SP's readout
   (module ``6``) grows with width (slope > 0.3).
2. Learning-rate transfer on scikit-learn's digits (1797 x 64, standardised): MLP
   ``64 - w - ReLU - w - ReLU - 10``, widths 64..2048, Adam on a log2 grid of base learning
   rates, 3 seeds, 60 steps on minibatches of 128 (``--sweep-steps``, ``--sweep-batch``),
   final training loss on all 1797 examples. Printed: the
   loss table and the best learning rate per width; muP passes when it stays within a factor
   2 across widths. SP is the anchor: how far its best learning rate moves.
3. Sharpness (Noci et al. 2024, "Why do Learning Rates Transfer?"): the same digits MLP
   trained by SGD at one base learning rate, the top eigenvalue of the Hessian of the
   cross-entropy on a fixed batch of 256 examples every few steps
   (``ntkit.parametrize.sharpness``, Lanczos on Hessian-vector products), preconditioned by
   the plan's per-layer learning-rate scales (``param_groups``: the quantity that compares
   with SGD's stability bound 2/lr at every width), widths 64..1024.
   Printed: the table of sharpness vs step per width and its spread across widths
   (max / min over widths at each step); under muP the curves should collapse (spread near
   1), under SP they separate.

Plots are saved to ``--out``. Also printed: the run's 4096 x 4096 float32 matmul as the
machine's yardstick, and the wall time. Run with nothing else busy:

    python bench/parametrize.py [--out bench/out/parametrize] [--quick]
        [--sweep-steps 60] [--sweep-batch 128]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.functional import cross_entropy

from _common import matmul_seconds
from ntkit.parametrize import coord_check, lr_sweep, plan, sharpness

matplotlib.use("Agg")

PARAMETRIZATIONS = ("mup", "sp")


def mlp3(w: int) -> nn.Module:
    return nn.Sequential(nn.Linear(16, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
                         nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 10))


def digits_mlp(w: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
                         nn.Linear(w, 10))


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    return (x - x.mean(0)) / (x.std(0) + 1e-3), torch.tensor(d.target)


def coordinate_check(widths, seeds: int, out: Path) -> None:
    g = torch.Generator().manual_seed(0)
    data = torch.randn(64, 16, generator=g), torch.randint(0, 10, (64,), generator=g)
    checks = {p: coord_check(mlp3, widths, data, parametrization=p, steps=5, lr=1e-3,
                             optimizer="adam", seeds=seeds,
                             generator=torch.Generator().manual_seed(1))
              for p in PARAMETRIZATIONS}
    modules = checks["mup"].modules
    print(f"\n(1) coordinate check: slope of log mean|activation| in log width, widths "
          f"{widths[0]}..{widths[-1]}, 5 Adam steps, lr 1e-3, {seeds} seeds")
    print("module  " + "  ".join(f"{p} t={t}".rjust(9) for p in PARAMETRIZATIONS
                                  for t in (1, 5)))
    slopes = {(p, t): checks[p].slopes(t) for p in PARAMETRIZATIONS for t in (1, 5)}
    for m in modules:
        print(f"{m:>6}  " + "  ".join(f"{slopes[p, t][m]:9.3f}" for p in PARAMETRIZATIONS
                                      for t in (1, 5)))
    worst = max(abs(v) for t in range(6) for v in checks["mup"].slopes(t).values())
    readout = modules[-1]
    sp_readout = min(checks["sp"].slopes(t)[readout] for t in range(1, 6))
    print(f"muP: max |slope| over all modules and steps 0..5 = {worst:.3f} "
          f"({'PASS' if worst < 0.1 else 'FAIL'} < 0.1); SP readout slope, min over steps "
          f"1..5 = {sp_readout:.3f} ({'PASS' if sp_readout > 0.3 else 'FAIL'} > 0.3)")
    print("SP readout slope per step 1..5: " + ", ".join(
        f"{checks['sp'].slopes(t)[readout]:.3f}" for t in range(1, 6)))
    for p, cc in checks.items():
        cc.plot(title=f"coordinate check: {p}").savefig(out / f"coord_check_{p}.png", dpi=100)


def lr_transfer(widths, lrs, seeds: int, steps: int, batch: int, out: Path) -> None:
    import matplotlib.pyplot as plt

    data = digits()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    print(f"\n(2) learning-rate transfer: digits, MLP 64-w-w-10, Adam, {steps} steps of "
          f"batch {batch}, {seeds} seeds; final training loss (mean over seeds)")
    for p, ax in zip(PARAMETRIZATIONS, axes, strict=True):
        t0 = time.perf_counter()
        sweep = lr_sweep(digits_mlp, widths, lrs, data, parametrization=p, steps=steps,
                         optimizer="adam", seeds=seeds, batch_size=batch,
                         generator=torch.Generator().manual_seed(2))
        print(f"{p} ({time.perf_counter() - t0:.0f} s)   lr = 2^k, k: "
              + " ".join(f"{round(math.log2(lr)):>6}" for lr in sweep.lrs))
        for w, row in zip(sweep.widths, sweep.mean_loss, strict=True):
            print(f"  width {w:>5}  " + " ".join(f"{v:6.4f}" if math.isfinite(v) else
                                                "   inf" for v in row.tolist()))
        best = sweep.optimal_lr
        spread = max(best.values()) / min(best.values())
        print("  best lr per width: " + ", ".join(f"{w}: 2^{round(math.log2(v))}"
                                                    for w, v in best.items())
              + f"; max/min = {spread:g}"
              + (f" ({'PASS' if spread <= 2 else 'FAIL'} <= 2)" if p == "mup" else ""))
        sweep.plot(ax, title=p)
    fig.savefig(out / "lr_transfer.png", dpi=100)


def sharpness_curves(widths, steps: int, every: int, lr: float, out: Path) -> None:
    import matplotlib.pyplot as plt

    x, y = digits()
    g = torch.Generator().manual_seed(3)
    probe = torch.randperm(x.shape[0], generator=g)[:256]
    order = torch.randint(x.shape[0], (steps, 128), generator=g)
    marks = list(range(0, steps + 1, every))
    print(f"\n(3) sharpness: digits MLP, SGD lr {lr:g} (base width), batch 128; top eigenvalue "
          f"of the Hessian of the cross-entropy on 256 fixed examples, preconditioned by the "
          f"plan's per-layer SGD rates (stable below 2/lr = {2 / lr:g})")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for p, ax in zip(PARAMETRIZATIONS, axes, strict=True):
        table = torch.full((len(widths), len(marks)), math.nan, dtype=torch.float64)
        for i, w in enumerate(widths):
            model = digits_mlp(w)
            pl = plan(model, p, base=digits_mlp(widths[0]))
            pl.apply_(model, generator=torch.Generator().manual_seed(4))
            opt = torch.optim.SGD(pl.param_groups(lr, optimizer="sgd"))
            rates = pl.param_groups(1.0, optimizer="sgd")   # lr scales n^-c relative to lr
            for t in range(steps + 1):
                if t % every == 0:
                    s = sharpness(model, cross_entropy, (x[probe], y[probe]), ntk=False,
                                  max_iter=30, param_groups=rates,
                                  generator=torch.Generator().manual_seed(t))
                    table[i, t // every] = s.top
                if t == steps:
                    break
                loss = cross_entropy(model(x[order[t]]), y[order[t]])
                if not math.isfinite(float(loss.detach())):
                    break
                opt.zero_grad()
                loss.backward()
                opt.step()
            ax.plot(marks, table[i].numpy(), marker=".", label=str(w))
        ax.axhline(2 / lr, color="gray", linestyle="--", linewidth=1, label="2 / lr")
        ax.set_yscale("log")
        ax.set_xlabel("SGD step")
        ax.set_ylabel("top eigenvalue of D^1/2 H D^1/2")
        ax.set_title(p)
        ax.legend(title="width", fontsize="x-small")
        print(f"{p}: step " + " ".join(f"{t:>7}" for t in marks))
        for w, row in zip(widths, table, strict=True):
            print(f"  width {w:>5} " + " ".join(f"{v:7.2f}" for v in row.tolist()))
        spread = table.amax(0) / table.amin(0)
        print("  max/min   " + " ".join(f"{v:7.2f}" for v in spread.tolist()))
    fig.tight_layout()
    fig.savefig(out / "sharpness.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/parametrize")
    parser.add_argument("--quick", action="store_true",
                        help="small widths and grids (a smoke run, not the acceptance)")
    parser.add_argument("--sweep-steps", type=int, default=60,
                        help="Adam steps per run of the learning-rate sweep")
    parser.add_argument("--sweep-batch", type=int, default=128,
                        help="minibatch size of the learning-rate sweep (its cost is linear "
                             "in steps x batch)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    matmul = matmul_seconds(torch.float32)
    print(f"yardstick: 4096 x 4096 float32 matmul {matmul:.3f} s "
          f"({2 * 4096**3 / matmul / 1e9:.0f} GFLOP/s), torch threads {torch.get_num_threads()}")
    if args.quick:
        coordinate_check([64, 128, 256], 2, out)
        lr_transfer([64, 256], [2.0**k for k in range(-11, -3)], 1, 30, 128, out)
        sharpness_curves([64, 256], 20, 10, 1.0, out)
    else:
        coordinate_check([64, 128, 256, 512, 1024, 2048, 4096], 3, out)
        lr_transfer([64, 128, 256, 512, 1024, 2048], [2.0**k for k in range(-11, -3)], 3,
                    args.sweep_steps, args.sweep_batch, out)
        sharpness_curves([64, 256, 1024], 200, 20, 1.0, out)
    print(f"\nplots in {out}/; wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
