"""Benchmark: fit + predict of ``ntkit.predict.gradient_descent_mse`` against SciPy and sklearn.

For each ``N`` (float64): a training kernel ``K`` (``N x N``, the NTK of
``Dense(512, W_std=1.5, b_std=0.05) - ReLU - Dense(1)`` on ``N x 64`` standard normal inputs,
ridge ``1e-4 x`` its mean diagonal) and a test kernel ``(1000, N)``, 10 output columns. Timed,
each from scratch (factorisation included), median of ``--repeats``:

- ``ntkit t=None``: ``gradient_descent_mse(K, Y, diag_reg=1e-4)(None, 0, 0, K_td)`` (Cholesky);
- ``scipy cho``: ``scipy.linalg.cho_factor`` / ``cho_solve`` and ``K_td @ alpha``, the anchor;
- ``sklearn KRR``: ``KernelRidge(kernel="precomputed").fit(K, Y).predict(K_td)``;
- ``ntkit t=1 (krylov)`` and ``ntkit t=1 (eigh)``: one finite time (``learning_rate`` half the
  largest stable one, so ``eta t lambda_max / y.size = 1``) by each route of
  ``gradient_descent_mse(..., method=...)``;
- ``ntkit t=10x``: 10 times from 1 to 1e4 in one call, ``method="auto"`` (the cost model picks
  eigh: the largest time needs too many Lanczos steps).

Printed beside the seconds: the ratio to SciPy, the ratio to ``ntkit t=None`` (the Krylov route
should cost at most 2x), the Lanczos steps, and the largest relative difference of the Krylov
test outputs from the eigh ones (should be <= 1e-8). Also printed: the run's own 4096 x 4096
float64 matmul, as a yardstick of the machine. Run with nothing else busy:

    python bench/predict.py [--n 2000,4000,8000] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.linalg
import torch
from sklearn.kernel_ridge import KernelRidge

from _common import matmul_seconds, median_time
from ntkit import layers as L
from ntkit.predict import gradient_descent_mse, max_learning_rate

RIDGE = 1e-4


def problem(n: int, m: int = 1000, outputs: int = 10):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n + m, 64, generator=g, dtype=torch.float64)
    net = L.serial(L.Dense(512, W_std=1.5, b_std=0.05), L.ReLU(), L.Dense(1))
    k_all = net.kernel(x, get="ntk").ntk
    y = torch.randn(n, outputs, generator=g, dtype=torch.float64)
    return k_all[:n, :n].contiguous(), k_all[n:, :n].contiguous(), y


def run(ns, repeats: int) -> list[tuple]:
    rows = []
    matmul = matmul_seconds(torch.float64)
    print(f"yardstick: 4096 x 4096 float64 matmul {matmul:.3f} s "
          f"({2 * 4096**3 / matmul / 1e9:.0f} GFLOP/s), torch threads {torch.get_num_threads()}")
    for n in ns:
        new = time_one(n, repeats)
        print_rows(new)
        rows += new
    return rows


def time_one(n: int, repeats: int) -> list[tuple]:
    rows = []
    k, kt, y = problem(n)
    reg = RIDGE * float(k.diagonal().mean())
    kn, ktn, yn = k.numpy(), kt.numpy(), y.numpy()
    lr = 0.5 * max_learning_rate(k, y.numel())
    times10 = torch.logspace(0, 4, 10, dtype=torch.float64)

    def scipy_cho():
        c = scipy.linalg.cho_factor(kn + reg * np.eye(n), lower=True, check_finite=False)
        return ktn @ scipy.linalg.cho_solve(c, yn, check_finite=False)

    def sklearn_krr():
        return KernelRidge(alpha=reg, kernel="precomputed").fit(kn, yn).predict(ktn)

    def ours_inf():
        return gradient_descent_mse(k, y, diag_reg=RIDGE)(None, 0.0, 0.0, kt)[1]

    def ours_t(t, method="auto"):
        predict = gradient_descent_mse(k, y, learning_rate=lr, diag_reg=RIDGE, method=method)
        return predict(t, 0.0, 0.0, kt)[1]

    # Same answer before timing: the three t=None paths agree (condition ~1e4-1e6), and the
    # Krylov route agrees with the eigendecomposition.
    want = scipy_cho()
    assert np.allclose(ours_inf().numpy(), want, rtol=1e-6, atol=1e-8)
    assert np.allclose(sklearn_krr(), want, rtol=1e-6, atol=1e-8)
    krylov = gradient_descent_mse(k, y, learning_rate=lr, diag_reg=RIDGE, method="krylov")
    exact = ours_t(1.0, "eigh")
    diff = float(((krylov(1.0, 0.0, 0.0, kt)[1] - exact).norm(dim=0) / exact.norm(dim=0)).max())
    steps = krylov.krylov_steps
    auto = gradient_descent_mse(k, y, learning_rate=lr, diag_reg=RIDGE)
    auto(times10, 0.0, 0.0, kt)
    timings = {
        "scipy cho": median_time(scipy_cho, repeats),
        "sklearn KRR": median_time(sklearn_krr, repeats),
        "ntkit t=None": median_time(ours_inf, repeats),
        "ntkit t=1 (krylov)": median_time(lambda: ours_t(1.0, "krylov"), repeats),
        "ntkit t=1 (eigh)": median_time(lambda: ours_t(1.0, "eigh"), repeats),
        "ntkit t=10x": median_time(lambda: ours_t(times10), repeats),
    }
    base, none = timings["scipy cho"], timings["ntkit t=None"]
    for method, sec in timings.items():
        note = ""
        if method.endswith("(krylov)"):
            note = f"{steps} steps, max rel diff to eigh {diff:.1e}"
        elif method == "ntkit t=10x":
            note = f"route {auto.route}"
        rows.append((n, method, sec, sec / base, sec / none, note))
    return rows


def print_rows(rows) -> None:
    for n, method, sec, ratio, to_none, note in rows:
        print(f"{n:>6}  {method:<20} {sec:10.3f}  {ratio:8.2f}  {to_none:8.2f}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="2000,4000,8000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="N = 500, 1000; 2 repeats")
    args = parser.parse_args()
    ns = [500, 1000] if args.quick else [int(v) for v in args.n.split(",")]
    repeats = 2 if args.quick else args.repeats
    print(f"{'N':>6}  {'method':<20} {'seconds':>10}  {'/ scipy':>8}  {'/ t=None':>8}  "
          f"(median of {repeats})")
    run(ns, repeats)


if __name__ == "__main__":
    main()
