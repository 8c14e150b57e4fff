"""Benchmark: ``ntkit.analysis`` learning-curve theory against experiment (issue 18).

On two tasks, with the NTK of ``Dense(512, W_std=sqrt 2, b_std=0.1) - ReLU`` twice then
``Dense(1)`` (float64):

- ``digits``: scikit-learn's 1797 digit images (centred, each scaled to norm 8) as the measure,
  target "is it a 0"; training sets drawn from the images, error averaged over all of them.
- ``sphere``: inputs uniform on the sphere in d = 16 (a pool of ``--pool`` points gives the
  eigensystem; training and test sets are fresh draws), target
  ``x0 + 0.8 x1 x2 + 0.5 He3(x3)/sqrt 6`` plus noise of variance 0.1.

Printed per task: the spectrum's power-law exponent (``power_law_exponent``, eigenvalues 10 to
1000); eigenlearning's predicted test MSE against ridgeless kernel regression (mean of
``--trials`` training sets) over ``n``; on the sphere, the random-feature risk curve against
ReLU random-feature ridge regression over ``k`` (``n = 200``, ridge 1e-3). The tracker's cost
per record relative to one empirical NTK of the probe set is the last section. Also printed:
the run's own 4096 x 4096 float64 matmul and the eigendecompositions' times. Plots go to
``--out``. Run with nothing else busy:

    python bench/analysis.py [--out bench/out/analysis] [--trials 20] [--pool 3000] [--quick]
    python bench/analysis.py --extras   # d = 4 eigenlearning, spectrum eigh vs Lanczos
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from _common import matmul_seconds
from _tracker_cost import tracker_cost_table
from ntkit import layers as L
from ntkit.analysis import (
    eigensystem,
    learning_curve,
    plot_learning_curve,
    power_law_exponent,
    rf_learning_curve,
    spectrum,
)

NET = L.serial(L.Dense(512, W_std=math.sqrt(2), b_std=0.1), L.ReLU(),
               L.Dense(512, W_std=math.sqrt(2), b_std=0.1), L.ReLU(), L.Dense(1))
D, NOISE = 16, 0.1


def sphere(m: int, g: torch.Generator, d: int = D) -> torch.Tensor:
    x = torch.randn(m, d, generator=g, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True) * math.sqrt(d)


def sphere_target(x: torch.Tensor) -> torch.Tensor:
    return x[:, 0] + 0.8 * x[:, 1] * x[:, 2] + 0.5 * (x[:, 3] ** 3 - 3 * x[:, 3]) / math.sqrt(6)


def krr_mse(k_all: torch.Tensor, n: int, y: torch.Tensor, f_test: torch.Tensor) -> float:
    c = torch.linalg.solve(k_all[:n], y)
    return float(((k_all[n:] @ c - f_test) ** 2).mean())


def digits_task(ns, trials: int, digit: int = 0) -> dict:
    from sklearn.datasets import load_digits

    pixels, labels = load_digits(return_X_y=True)
    x = torch.tensor(pixels, dtype=torch.float64)
    x = x - x.mean(0)
    x = x / x.norm(dim=1, keepdim=True) * 8.0
    f = torch.tensor(labels == digit, dtype=torch.float64)
    k = NET.kernel(x, get="ntk").ntk
    t = time.perf_counter()
    lam, v = eigensystem(k, f)
    seconds = time.perf_counter() - t
    predicted = learning_curve(lam, v, ns).test_mse.numpy()
    g = torch.Generator().manual_seed(1)
    measured = np.zeros((trials, len(ns)))
    for j, n in enumerate(ns):
        for r in range(trials):
            idx = torch.randperm(len(x), generator=g)[:n]
            measured[r, j] = krr_mse(torch.cat([k[idx][:, idx], k[:, idx]]), n, f[idx], f)
    return {"name": f"digits (P = 1797), target 'is it a {digit}'", "lam": lam,
            "eig_s": seconds, "ns": ns,
            "predicted": predicted, "measured": measured}


def sphere_task(ns, trials: int, pool: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x_pool = sphere(pool, g)
    k = NET.kernel(x_pool, get="ntk").ntk
    t = time.perf_counter()
    lam, v = eigensystem(k, sphere_target(x_pool))
    seconds = time.perf_counter() - t
    predicted = learning_curve(lam, v, ns, noise=NOISE).test_mse.numpy()
    x_test = sphere(1000, g)
    f_test = sphere_target(x_test)
    measured = np.zeros((trials, len(ns)))
    for j, n in enumerate(ns):
        for r in range(trials):
            x = sphere(n, g)
            y = sphere_target(x) + math.sqrt(NOISE) * torch.randn(n, generator=g,
                                                                   dtype=x.dtype)
            k_all = NET.kernel(torch.cat([x, x_test]), x, get="ntk").ntk
            measured[r, j] = krr_mse(k_all, n, y, f_test) + NOISE
    return ({"name": f"sphere d={D} (pool {pool})", "lam": lam, "eig_s": seconds, "ns": ns,
             "predicted": predicted, "measured": measured}, x_pool, k)


def rf_task(ks, n: int, ridge: float, trials: int, pool: int):
    """ReLU random features relu(w . x / sqrt d) on the sphere; the pool is the measure."""
    g = torch.Generator().manual_seed(2)
    x = sphere(pool, g)
    f = x[:, 0] + 0.8 * x[:, 1] * x[:, 2] + 0.5

    def features(k: int) -> L.Serial:
        return L.serial(L.Dense(k, W_std=1.0, b_std=0.0), L.ReLU())

    lam, v = eigensystem(features(1).kernel(x, get="nngp").nngp, f)
    predicted = rf_learning_curve(lam, v, n, ks, ridge=ridge, noise=NOISE).test_mse[0].numpy()
    measured = np.zeros((trials, len(ks)))
    for j, k in enumerate(ks):
        for r in range(trials):
            idx = torch.randperm(pool, generator=g)[:n]
            phi = features(k).module((D,), dtype=x.dtype, generator=g)(x).detach()
            phi = phi / math.sqrt(k)
            y = f[idx] + math.sqrt(NOISE) * torch.randn(n, generator=g, dtype=x.dtype)
            gram = phi[idx] @ phi[idx].T
            gram.diagonal().add_(ridge)
            fit = phi @ (phi[idx].T @ torch.linalg.solve(gram, y))
            measured[r, j] = float(((fit - f) ** 2).mean()) + NOISE
    return predicted, measured


def low_dimension(d: int, pool: int, trials: int, *, ridge: float, noise: float) -> None:
    """Eigenlearning in low input dimension (docs/learning_curves.md, "Low dimension"): the
    pool is the measure, training sets are drawn from it, the error is over the whole pool."""
    g = torch.Generator().manual_seed(0)
    x = sphere(pool, g, d)
    k = NET.kernel(x, get="ntk").ntk
    f = sphere_target(x)
    lam, v = eigensystem(k, f)
    ns = [50, 200, 800]
    predicted = learning_curve(lam, v, ns, ridge=ridge, noise=noise).test_mse.numpy()
    measured = np.zeros((trials, len(ns)))
    for j, n in enumerate(ns):
        for r in range(trials):
            idx = torch.randperm(pool, generator=g)[:n]
            y = f[idx] + math.sqrt(noise) * torch.randn(n, generator=g, dtype=x.dtype)
            a = k[idx][:, idx].clone()
            a.diagonal().add_(ridge)
            fit = k[:, idx] @ torch.linalg.solve(a, y)
            measured[r, j] = float(((fit - f) ** 2).mean()) + noise
    print(f"\nsphere d={d} (pool {pool} as the measure), ridge {ridge:g}, noise {noise:g}")
    print_curve("n", ns, predicted, measured)


def spectrum_routes(n: int, ks) -> None:
    """Time of all eigenpairs by eigh against the top k by Lanczos (the ``spectrum`` auto
    rule, Lanczos for ``N >= 1000`` and ``k <= N / 10``), and their largest difference."""
    g = torch.Generator().manual_seed(0)
    k_mat = NET.kernel(sphere(n, g), get="ntk").ntk
    t = time.perf_counter()
    full = spectrum(k_mat, method="eigh")
    t_eigh = time.perf_counter() - t
    print(f"\nspectrum of an N = {n} NTK: eigh (all eigenpairs) {t_eigh:.2f} s")
    for k in ks:
        t = time.perf_counter()
        top = spectrum(k_mat, k, method="lanczos", generator=torch.Generator().manual_seed(1))
        t_k = time.perf_counter() - t
        err = float(((top.eigenvalues - full.eigenvalues[:k]).abs()
                     / full.eigenvalues[:k]).max())
        print(f"  top {k:>4} by Lanczos {t_k:7.2f} s ({t_eigh / t_k:5.1f}x faster), "
              f"max relative difference {err:.1e}")


def print_curve(label: str, xs, predicted, measured) -> None:
    print(f"  {label:>6} {'predicted':>10} {'measured':>10} {'+- s.e.':>8} {'pred/meas':>9}")
    for x, p, m in zip(xs, predicted, measured.T, strict=True):
        se = m.std(ddof=1) / math.sqrt(len(m))
        print(f"  {x:>6} {p:>10.4f} {m.mean():>10.4f} {se:>8.4f} {p / m.mean():>9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/analysis")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--pool", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="pool 1500, 10 trials")
    parser.add_argument("--extras", action="store_true",
                        help="only the low-dimension eigenlearning runs (d = 4) and the "
                             "spectrum routes' timing")
    args = parser.parse_args()
    if args.quick:
        args.pool, args.trials = 1500, 10
    torch.manual_seed(0)
    matmul = matmul_seconds(torch.float64)
    print(f"yardstick: 4096 x 4096 float64 matmul {matmul:.3f} s, torch threads "
          f"{torch.get_num_threads()}")
    if args.extras:
        low_dimension(4, args.pool, args.trials, ridge=1e-3, noise=0.0)
        low_dimension(4, args.pool, args.trials, ridge=0.0, noise=NOISE)
        print("\ndigits, every one-vs-rest target: predicted / measured at n = 50, 200, 400 "
              "(40 training sets)")
        for digit in range(10):
            task = digits_task([50, 200, 400], 40, digit)
            ratios = task["predicted"] / task["measured"].mean(0)
            print(f"  {digit}: " + ", ".join(f"{r:.3f}" for r in ratios))
        spectrum_routes(2000, (10, 50, 200))
        return

    digits = digits_task([25, 50, 100, 200, 400, 800], args.trials)
    ns = [50, 100, 200, 400, 800] if args.pool >= 2000 else [50, 100, 200, 400]
    sph, _, _ = sphere_task(ns, args.trials, args.pool)
    for task in (digits, sph):
        alpha = power_law_exponent(task["lam"], start=10, stop=1000)
        print(f"\n{task['name']}: eigensystem {task['eig_s']:.2f} s, spectrum exponent "
              f"alpha = {alpha:.3f} (eigenvalues 10..1000)")
        print_curve("n", task["ns"], task["predicted"], task["measured"])

    ks = [25, 50, 100, 150, 200, 300, 400, 800, 1600]
    ridge, n_rf = 1e-3, 200
    rf_pred, rf_meas = rf_task(ks, n_rf, ridge, args.trials, min(args.pool, 2000))
    print(f"\nrandom-feature ridge regression, sphere d={D}, n={n_rf}, ridge={ridge}, "
          f"noise {NOISE}")
    print_curve("k", ks, rf_pred, rf_meas)

    # ---- KernelTracker cost per record (issue 18 goal: <= 1.2x one empirical NTK) ----
    print()
    print(tracker_cost_table(ns=(64,) if args.quick else (64, 256),
                             repeats=5 if args.quick else 9, yardstick=False))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, task in zip(axes[:2], (digits, sph), strict=True):
        plot_learning_curve(task["ns"], task["predicted"], task["measured"], ax=ax)
        ax.set_title(task["name"])
    plot_learning_curve(ks, rf_pred, rf_meas, ax=axes[2], label="RF risk estimate",
                        measured_label="ReLU RF regression")
    axes[2].set(xlabel="random features k", title=f"RF regression, n = {n_rf}")
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=120)
    print(f"\nplots: {out / 'learning_curves.png'}")


if __name__ == "__main__":
    main()
