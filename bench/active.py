"""Benchmark of ``ntkit.apps.active``: selection cost at scale, and the benefit over random.

**Cost.** Selecting ``--batch`` (200) points from a pool of ``--pool`` (50 000) float32
feature vectors of dimension 512 (standard normal), 100 of them labeled: seconds and peak
memory above the process's resident size before the call (each in a fresh process, after
resetting its peak, Linux ``/proc/self/clear_refs``), for ntkit and for bmdal-reg 3.0.2's
``select_batch`` (base kernel ``"linear"`` on the same features; P-mode for ``maxdiag``, TP
for the others), when installed. Goal: <= 10 s and <= 1 GiB for ntkit.

**Benefit.** Test RMSE after the labelling budget for ``coding_rate`` and ``lcmd`` against
``random``, paired over ``--seeds`` seeds (a seed fixes the initial labeled set and the network
initialisations; the split is fixed per task), with the paired t-test and the number of seeds
where the method wins. Tasks: scikit-learn's diabetes; a teacher network (random ReLU MLP
8-64-64-1 plus noise sd 0.05); ``../shared/data/uci-dev/wine-quality-red`` as one-vs-rest
regression (target 1 for the most frequent class, 0 otherwise). The learner is an MLP
``d-64-64-1`` (ReLU, Adam, full batch); selection uses **last-layer features** of the
trained MLP (its 64 penultimate activations), the ``ll`` kernel of Holzmüller et al.
Learning curves are saved to ``--out`` (default ``bench/out/active/``).

    python bench/active.py [--pool 50000] [--seeds 10] [--skip-cost] [--skip-benefit]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import matmul_seconds, status_kb
from ntkit.apps.active import loop, plot_curves, select

UCI = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci-dev" / "wine-quality-red"


def _peak_reset() -> int | None:
    """Reset this process's peak resident size; its resident size in kB (None if not Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status_kb("VmRSS")
    except OSError:
        return None


def _problem(pool: int, p: int, m: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(pool, p, generator=g)
    labeled = torch.randperm(pool, generator=g)[:m].tolist()
    return x, labeled


PAIRS = {"maxvar": ("maxdiag", {}), "maxdet": ("maxdet", {"sel_with_train": True}),
         "coding_rate": ("maxdet", {"sel_with_train": True}), "kmeanspp": ("kmeanspp", {}),
         "lcmd": ("lcmd", {})}


def one(impl: str, method: str, pool: int, batch: int, p: int, m: int) -> None:
    """One timed selection in this (fresh) process: prints ``seconds peak_gib``."""
    x, labeled = _problem(pool, p, m)
    sigma2 = 0.01 * p  # 1e-2 x the mean diagonal of the linear kernel on N(0, I_p) features
    if impl == "ntkit":
        def fn():
            select(x, batch, method=method, labeled=labeled, sigma2=sigma2,
                   generator=torch.Generator().manual_seed(0))
    else:
        np.Inf = np.inf  # noqa: NPY201  (bmdal-reg 3.0.2 still reads np.Inf)
        from bmdal_reg.bmdal.algorithms import select_batch
        from bmdal_reg.bmdal.feature_data import TensorFeatureData

        rest = torch.tensor(sorted(set(range(pool)) - set(labeled)))
        data = {"train": TensorFeatureData(x[labeled]), "pool": TensorFeatureData(x[rest])}
        theirs, config = PAIRS[method]
        if method == "coding_rate":
            config = config | {"maxdet_sigma": sigma2**0.5}

        def fn():
            select_batch(batch, [None], data, None, "linear", [], theirs, verbosity=0, **config)
    base = _peak_reset()
    t = time.perf_counter()
    fn()
    t = time.perf_counter() - t
    peak = None if base is None else (status_kb("VmHWM") - base) / 2**20
    print(f"{t} {peak}")


def measure(impl: str, method: str, pool: int, batch: int, p: int, m: int):
    """(seconds, peak GiB above the resident size before the call), in a fresh process."""
    cmd = [sys.executable, __file__, "--one", impl, method, "--pool", str(pool), "--batch",
           str(batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    return float(out[-2]), None if out[-1] == "None" else float(out[-1])


def cost(pool: int, batch: int, p: int = 512, m: int = 100) -> None:
    print(f"yardstick: 4096 x 4096 float32 matmul {matmul_seconds():.3f} s, "
          f"torch threads {torch.get_num_threads()}")
    print(f"\nselection of {batch} from a pool of {pool} x {p} float32, {m} labeled")
    print(f"{'method':<12} {'ntkit s':>8} {'ntkit GiB':>9} {'bmdal s':>8} {'bmdal GiB':>9}")
    try:
        import bmdal_reg  # noqa: F401
        have_bmdal = True
    except ImportError:
        have_bmdal = False
    for method in PAIRS:
        t, mem = measure("ntkit", method, pool, batch, p, m)
        row = f"{method:<12} {t:8.2f} {_gib(mem):>9}"
        if have_bmdal:
            t, mem = measure("bmdal", method, pool, batch, p, m)
            row += f" {t:8.2f} {_gib(mem):>9}"
        print(row, flush=True)


def _gib(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def mlp(d: int, seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                               torch.nn.ReLU(), torch.nn.Linear(64, 1))


class Fitted:
    """A trained MLP as ``loop`` wants it: called on inputs it predicts; ``features`` gives
    its last-layer (penultimate) activations."""

    def __init__(self, net: torch.nn.Sequential):
        self.net = net.eval()

    @torch.no_grad()
    def __call__(self, x):
        return self.net(x)[:, 0]

    @torch.no_grad()
    def features(self, x):
        return self.net[:-1](x)


def factory(seed: int, steps: int):
    def fit(x, y):
        net = mlp(x.shape[1], seed)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
        for _ in range(steps):
            opt.zero_grad()
            loss = (net(x)[:, 0] - y).pow(2).mean()
            loss.backward()
            opt.step()
        return Fitted(net)
    return fit


def last_layer(model: Fitted, x):
    return model.features(x)


def tasks(seed: int = 0) -> dict:
    from sklearn.datasets import load_diabetes

    out = {}
    xd, yd = load_diabetes(return_X_y=True)
    out["diabetes"] = _standardised(xd, yd, n_test=142, seed=seed)
    g = torch.Generator().manual_seed(seed)
    teacher = mlp(8, 1234)
    xt = torch.randn(3000, 8, generator=g)
    with torch.no_grad():
        yt = teacher(xt)[:, 0] * 3 + 0.05 * torch.randn(3000, generator=g)
    out["teacher"] = _standardised(xt.numpy(), yt.numpy(), n_test=1000, seed=seed)
    if UCI.is_dir():
        from ntkit.datasets import load_uci

        ds = load_uci(UCI)
        target = (ds.y == np.bincount(ds.y).argmax()).astype(np.float64)
        out["wine-red 1-vs-rest"] = _standardised(ds.x, target, n_test=500, seed=seed)
    else:
        print(f"(skipping the UCI task: {UCI} not found)")
    return out


def _standardised(x, y, *, n_test: int, seed: int):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    x = torch.tensor(x, dtype=torch.float32)[perm]
    y = torch.tensor(y, dtype=torch.float32)[perm]
    x = (x - x.mean(0)) / x.std(0).clamp(min=1e-8)
    y = (y - y.mean()) / y.std()
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def benefit(seeds: int, rounds: int, batch: int, initial: int, steps: int, out: Path) -> None:
    from scipy.stats import ttest_rel

    methods = ("random", "coding_rate", "lcmd")
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_tasks = tasks()
    fig, axes = plt.subplots(1, len(all_tasks), figsize=(5 * len(all_tasks), 3.6))
    print(f"\nbenefit: {seeds} seeds, {initial} initial + {rounds} x {batch} labels, MLP "
          f"d-64-64-1 ({steps} Adam steps), selection on last-layer features")
    print(f"{'task':<20} {'method':<12} {'RMSE':>14} {'vs random':>10} {'p (paired t)':>12} "
          f"{'wins':>5}")
    for ax, (name, (px, py, tx, ty)) in zip(np.atleast_1d(axes), all_tasks.items(), strict=True):
        curves = {m: [] for m in methods}
        for s in range(seeds):
            for m in methods:
                g = torch.Generator().manual_seed(s)
                curves[m].append(loop(factory(s, steps), px, py, rounds=rounds, batch=batch,
                                      method=m, test=(tx, ty), initial=initial, generator=g,
                                      features=last_layer))
        final = {m: np.array([c.rmse[-1] for c in curves[m]]) for m in methods}
        for m in methods:
            f = final[m]
            row = f"{name:<20} {m:<12} {f.mean():7.4f}+-{f.std(ddof=1) / seeds**0.5:.4f}"
            if m != "random":
                diff = f - final["random"]
                p = ttest_rel(f, final["random"]).pvalue
                row += f" {diff.mean():+10.4f} {p:12.3g} {int((diff < 0).sum()):>3}/{seeds}"
            print(row, flush=True)
        plot_curves(curves, ax=ax, title=name)
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=120)
    print(f"\nlearning curves: {out / 'learning_curves.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--al-batch", type=int, default=20)
    ap.add_argument("--initial", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--skip-benefit", action="store_true")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "active")
    args = ap.parse_args()
    if args.one:
        return one(*args.one, args.pool, args.batch, 512, 100)
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    if not args.skip_cost:
        cost(args.pool, args.batch)
    if not args.skip_benefit:
        benefit(args.seeds, args.rounds, args.al_batch, args.initial, args.steps, args.out)


if __name__ == "__main__":
    main()
