"""Benchmark: grokking as the transition from lazy to rich training (Kumar et al., ICLR 2024).

The setting of their Figure 1: a two-layer network of width ``N = 500``,
``f(x) = (1/N) sum_i phi(w_i . x / sqrt(D))`` with ``phi(z) = z + eps z^2 / 2`` (readout fixed
at ``1/N``, only ``W`` trained, ``W ~ N(0, 1)``), inputs ``x ~ N(0, I_D)``, ``D = 100``, target
``y = (beta . x)^2 / 2`` for a random unit ``beta``, ``P = 550`` training and 1000 test points.
The output is put in the lazy/rich family of Chizat et al. with
``ntkit.parametrize.centered(f, alpha)`` and trained by full-batch gradient descent on
``loss_scale * mean((h(x) - y)^2)`` (``loss_scale = 1/alpha^2``) at a fixed learning rate
``eta * N``: the paper's ``eta = N / alpha^2`` on the unscaled loss, i.e. the learning rate
scaled by ``1/alpha^2``, so that the function moves at an ``alpha``-independent speed. Large
``alpha`` is lazy (the network first fits the training set with its initial kernel, which does
not generalise, and learns features late), small ``alpha`` is rich.

For each ``alpha`` the table gives the first step with train loss below ``--threshold`` times
its initial value (``mean(y^2)``), the same for the test loss, the delay between the two and
their ratio, and the centred kernel-target alignment (``ntkit.analysis``) of the empirical NTK
on ``--n-align`` test points at init, at the train step, at the test step and at the end (a
run stops at twice its test step, or after ``--steps``). The
anchor, from the same run: the test loss of kernel regression with the NTK at init (the
linearised model's end point, the horizontal line of the paper's Figure 1b); the yardstick: the
run's own 4096 x 4096 float32 matmul. The plot (``--out``) shows the loss curves and the
alignment over training.

    python bench/grokking.py [--alphas 0.0625,0.25,1,4] [--steps 20000] [--eps 0.02]
                             [--eta 10] [--seed 0] [--out bench/out/grokking] [--quick]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch import nn

import ntkit as nk
from _common import matmul_seconds
from ntkit.analysis import centered_target_alignment
from ntkit.parametrize import centered

D, P, P_TEST, WIDTH = 100, 550, 1000, 500


class TwoLayer(nn.Module):
    """``(1/N) sum_i phi(w_i . x / sqrt(D))``, ``phi(z) = z + eps z^2 / 2``: Kumar et al.'s
    network with its readout fixed (their ``NN_func2``); ``(P, D) -> (P,)``."""

    def __init__(self, d: int, width: int, eps: float, generator: torch.Generator):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.randn(width, d, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x @ self.weight.T / math.sqrt(x.shape[1])
        return (h + 0.5 * self.eps * h**2).mean(dim=1)


def task(seed: int, d: int = D, p: int = P, p_test: int = P_TEST):
    g = torch.Generator().manual_seed(seed)
    x, xt = torch.randn(p, d, generator=g), torch.randn(p_test, d, generator=g)
    beta = torch.randn(d, generator=g)
    beta = beta / beta.norm()
    return x, 0.5 * (x @ beta) ** 2, xt, 0.5 * (xt @ beta) ** 2


def kernel_regression_test_loss(model: nn.Module, x, y, xt, yt) -> float:
    """Test MSE of the interpolating kernel regression with the model's NTK, where gradient
    descent on the linearised, centred model ends (float64 solve)."""
    k = nk.empirical_ntk(model, x).double()
    kt = nk.empirical_ntk(model, xt, x).double()
    pred = kt @ torch.linalg.solve(k, y.double())
    return float(((pred - yt.double()) ** 2).mean())


def train(alpha: float, *, eps: float, eta: float, steps: int, seed: int, threshold: float,
          n_align: int, checkpoints: int = 40) -> dict:
    x, y, xt, yt = task(seed)
    net = TwoLayer(D, WIDTH, eps, torch.Generator().manual_seed(seed + 1))
    h = centered(net, alpha)
    opt = torch.optim.SGD(h.parameters(), lr=eta * WIDTH)
    l0, lt0 = float((y**2).mean()), float((yt**2).mean())
    xa, ya = xt[:n_align], yt[:n_align]

    def alignment() -> float:
        return centered_target_alignment(nk.empirical_ntk(h, xa), ya)

    marks = sorted({0, steps, *(int(round(steps ** (i / checkpoints)))
                                for i in range(1, checkpoints))})
    rec = {"step": [], "train": [], "test": [], "align_step": [], "align": []}
    hit = {"train": None, "test": None}
    at = {"init": alignment()}
    start = time.perf_counter()
    for t in range(steps + 1):
        loss = ((h(x) - y) ** 2).mean()
        # Losses every step early on, every 10th later (the hits are then exact to 10 steps).
        if t < 200 or t % 10 == 0 or t == steps:
            with torch.no_grad():
                test = float(((h(xt) - yt) ** 2).mean())
            tr = loss.item()
            if not math.isfinite(tr):
                raise FloatingPointError(f"alpha={alpha}: the loss diverged at step {t}; "
                                         "lower --eta")
            for name, value, ref in (("train", tr, l0), ("test", test, lt0)):
                if hit[name] is None and value < threshold * ref:
                    hit[name] = t
                    at[name] = alignment()
            rec["step"].append(t)
            rec["train"].append(tr / l0)
            rec["test"].append(test / lt0)
        if t in marks:
            rec["align_step"].append(t)
            rec["align"].append(alignment() if t else at["init"])
        if hit["test"] is not None and t >= 2 * hit["test"] and t >= 100:
            break  # the curves go on to twice the test step, enough to show the plateau
        if t < steps:
            opt.zero_grad()
            (h.loss_scale * loss).backward()
            opt.step()
    if rec["align_step"][-1] != t:
        rec["align_step"].append(t)
        rec["align"].append(alignment())
    at["end"] = rec["align"][-1]
    return {"alpha": alpha, "hit": hit, "align": at, "curves": rec,
            "seconds": time.perf_counter() - start}


def print_table(rows: list[dict], steps: int) -> None:
    head = ("alpha", "train<thr", "test<thr", "delay", "ratio", "align init", "@train",
            "@test", "end", "train end", "test end", "s")
    print(" ".join(f"{c:>10}" for c in head))
    for r in rows:
        tr, te = r["hit"]["train"], r["hit"]["test"]
        delay = (te - tr) if tr is not None and te is not None else None
        cells = (f"{r['alpha']:g}", _step(tr, steps), _step(te, steps),
                 "-" if delay is None else str(delay),
                 f"{te / max(tr, 1):.1f}" if delay is not None else "-",
                 f"{r['align']['init']:.4f}", _num(r["align"].get("train")),
                 _num(r["align"].get("test")), f"{r['align']['end']:.4f}",
                 f"{r['curves']['train'][-1]:.2e}", f"{r['curves']['test'][-1]:.2e}",
                 f"{r['seconds']:.0f}")
        print(" ".join(f"{c:>10}" for c in cells))


def _step(t, steps: int) -> str:
    return f">{steps}" if t is None else str(t)


def _num(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def plot(rows: list[dict], out: Path, threshold: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, r in enumerate(rows):
        c = r["curves"]
        steps = [s + 1 for s in c["step"]]
        ax.plot(steps, c["train"], "--", color=f"C{i}")
        ax.plot(steps, c["test"], "-", color=f"C{i}", label=rf"$\alpha = {r['alpha']:g}$")
        ax2.plot([s + 1 for s in c["align_step"]], c["align"], "-o", ms=3, color=f"C{i}",
                 label=rf"$\alpha = {r['alpha']:g}$")
    ax.axhline(threshold, color="grey", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="step + 1", ylabel="loss / initial loss",
           title="train (dashed) and test (solid) loss")
    ax.legend()
    ax2.set(xscale="log", xlabel="step + 1", ylabel="centred kernel-target alignment",
            title="empirical NTK on test points")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "grokking.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alphas", default="0.0625,0.25,1,4")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--eps", type=float, default=0.02)
    parser.add_argument("--eta", type=float, default=10.0,
                        help="learning rate in units of the width N (the paper: 0.5 or 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--n-align", type=int, default=300)
    parser.add_argument("--out", default="bench/out/grokking")
    parser.add_argument("--quick", action="store_true",
                        help="alphas 0.0625, 0.25, 1 and 4000 steps")
    args = parser.parse_args()
    alphas = [float(a) for a in args.alphas.split(",")]
    if args.quick:
        alphas, args.steps = [0.0625, 0.25, 1.0], 4000

    torch.manual_seed(0)
    mm = matmul_seconds(torch.float32)
    print(f"yardstick: 4096 x 4096 float32 matmul {mm:.3f} s "
          f"({2 * 4096**3 / mm / 1e9:.0f} GFLOP/s), torch threads {torch.get_num_threads()}")
    print(f"setting: D={D} P={P} test={P_TEST} N={WIDTH} eps={args.eps} lr={args.eta:g}*N "
          f"on loss/alpha^2, seed {args.seed}, threshold {args.threshold:g} x initial loss")
    x, y, xt, yt = task(args.seed)
    net0 = TwoLayer(D, WIDTH, args.eps, torch.Generator().manual_seed(args.seed + 1))
    k0 = kernel_regression_test_loss(net0, x, y, xt, yt) / float((yt**2).mean())
    print(f"anchor: kernel regression with the NTK at init, test loss / initial = {k0:.3f}")
    rows = []
    for alpha in alphas:
        rows.append(train(alpha, eps=args.eps, eta=args.eta, steps=args.steps,
                          seed=args.seed, threshold=args.threshold, n_align=args.n_align))
        print_table(rows[-1:], args.steps)
    print()
    print_table(rows, args.steps)
    print(f"plot: {plot(rows, Path(args.out), args.threshold)}")


if __name__ == "__main__":
    main()
