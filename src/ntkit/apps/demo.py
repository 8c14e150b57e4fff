"""``ntkit demo``: infinite-width kernels of an MLP on digits, and finite twins converging to them.

1. The NNGP and NTK of a 3-hidden-layer ReLU MLP on scikit-learn's digits, and the test
   accuracy of kernel regression with each (one-hot targets, a fixed small ridge).
2. A Myrtle-5 convolutional network's NNGP and NTK on the same digits as 8x8 images, beside
   the MLP's, on a subset (its kernel keeps every pair of the 64 positions: ~4000 entries per
   pair of images).
3. Finite twins of the same spec at growing widths: the relative Frobenius distance between
   their empirical NTK and the infinite-width NTK, as a table and a log-log plot with the fitted
   slope (Jacot et al. 2018 predict fluctuations ~ width^(-1/2)).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import layers as L
from ..datasets import load_digits
from ..empirical import empirical_ntk
from ..solve import centred_one_hot, kernel_ridge
from ._demo_dynamics import DynamicsResult, run_dynamics

__all__ = ["DemoResult", "mlp", "cnn", "kernel_regression_accuracy", "cnn_comparison",
           "run_demo"]

# Ridge added to the training kernel, relative to its mean diagonal: small enough not to bias
# the interpolant visibly, large enough for a stable Cholesky factorisation. Fixed, not tuned.
RIDGE = 1e-4


def mlp(width: int = 512, depth: int = 3) -> L.Serial:
    """``Dense(width, W_std=1.5, b_std=0.05) - ReLU`` ``depth`` times, then ``Dense(1)``."""
    hidden = [l for _ in range(depth) for l in (L.Dense(width, W_std=1.5, b_std=0.05), L.ReLU())]
    return L.serial(*hidden, L.Dense(1))


def cnn() -> L.Serial:
    """The Myrtle-5 network (``ntkit.layers.myrtle(5)``) for ``(N, 1, 8, 8)`` digits."""
    return L.myrtle(5)


def cnn_comparison(*, n_train: int, n_test: int) -> tuple[dict[str, float], float]:
    """Test accuracies ``{"MLP NNGP", "MLP NTK", "CNN NNGP", "CNN NTK"}`` of kernel
    regression on ``n_train`` digits (a stratified split) and the first ``n_test`` of the
    others, and the CNN kernels' seconds.

    Both networks see the same inputs: each image's raw intensities centred and scaled
    (``load_digits(scaling="image")``), which keeps the spatial structure a convolution uses.
    The CNN kernel is computed in float32 (its cost is per entry; float32 is about twice as
    fast) and solved in float64; the MLP's in float64 as above.
    """
    data = load_digits(n_train=n_train, scaling="image")
    xtr, ytr = data.x_train, data.y_train
    xte, yte = data.x_test[:n_test], data.y_test[:n_test]
    acc: dict[str, float] = {}
    k_tr, k_te = mlp().kernel(xtr), mlp().kernel(xte, xtr)
    for name in ("nngp", "ntk"):
        acc[f"MLP {name.upper()}"] = kernel_regression_accuracy(
            getattr(k_tr, name), getattr(k_te, name), ytr, yte)
    t0 = time.perf_counter()
    img_tr = xtr.reshape(-1, 1, 8, 8).float()
    img_te = xte.reshape(-1, 1, 8, 8).float()
    c_tr, c_te = cnn().kernel(img_tr), cnn().kernel(img_te, img_tr)
    seconds = time.perf_counter() - t0
    for name in ("nngp", "ntk"):
        acc[f"CNN {name.upper()}"] = kernel_regression_accuracy(
            getattr(c_tr, name).double(), getattr(c_te, name).double(), ytr, yte)
    return acc, seconds


def kernel_regression_accuracy(k_train_train: Tensor, k_test_train: Tensor, y_train: Tensor,
                               y_test: Tensor, *, ridge: float = RIDGE) -> float:
    """Test accuracy of kernel regression on centred one-hot targets (argmax of the mean).

    ``k_train_train``: ``(n, n)``; ``k_test_train``: ``(m, n)``; labels ``(n,)``, ``(m,)``.
    """
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    targets = centred_one_hot(y_train, n_classes)
    mean = k_test_train @ kernel_ridge(k_train_train, targets, alpha=ridge)
    return float((mean.argmax(1) == y_test).double().mean())


@dataclass
class DemoResult:
    """What the demo measured (also printed)."""

    accuracy: dict[str, float]
    cnn_accuracy: dict[str, float]
    widths: list[int]
    distances: dict[int, list[float]]
    slope: float
    plot: Path | None
    seconds: float
    lines: list[str] = field(default_factory=list)
    dynamics: DynamicsResult | None = None


def run_demo(*, out_dir: str | Path = "demo_output", widths=(64, 256, 1024, 4096),
             seeds: int = 8, n_ntk: int = 100, cnn_train: int = 100, cnn_test: int = 300,
             progress: bool = True, echo=print) -> DemoResult:
    """Run the demo, print its tables, and save the convergence plot under ``out_dir``.

    **Arguments:** ``widths`` of the finite twins; ``seeds`` random initialisations per width;
    ``n_ntk`` test inputs on which the empirical and infinite NTKs are compared;
    ``cnn_train``, ``cnn_test`` digits for the CNN-vs-MLP comparison.
    """
    start = time.perf_counter()
    data = load_digits()
    net = mlp()
    steps = 3 + len(widths) * seeds
    # disable=None: a bar on a terminal, none in logs and pipes.
    bar = tqdm(total=steps, disable=None if progress else True, desc="ntkit demo", leave=False)
    lines: list[str] = []

    def say(line: str = "") -> None:
        lines.append(line)
        (bar.write if progress else echo)(line)

    say(f"Network: {net!r}")
    say(f"Data: digits, {len(data.x_train)} train / {len(data.x_test)} test, 64 features, "
        f"float64")
    x_all = torch.cat([data.x_train, data.x_test])
    t0 = time.perf_counter()
    k = net.kernel(x_all)
    kernel_seconds = time.perf_counter() - t0
    bar.update(1)
    n = len(data.x_train)
    accuracy = {
        name: kernel_regression_accuracy(m[:n, :n], m[n:, :n], data.y_train, data.y_test)
        for name, m in (("NNGP", k.nngp), ("NTK", k.ntk))
    }
    bar.update(1)
    say(f"NNGP+NTK of {len(x_all)} x {len(x_all)} in {kernel_seconds:.2f} s")
    say("")
    say("kernel  test accuracy (kernel regression, ridge "
        f"{RIDGE:g} x mean diagonal)")
    for name, acc in accuracy.items():
        say(f"{name:<6}  {100 * acc:6.2f} %")

    cnn_acc, cnn_seconds = cnn_comparison(n_train=cnn_train, n_test=cnn_test)
    bar.update(1)
    say("")
    say(f"CNN vs MLP on {cnn_train} train / {cnn_test} test digits (8x8 images): "
        f"{cnn()!r}")
    say(f"CNN kernels ({cnn_train}x{cnn_train} + {cnn_test}x{cnn_train}, float32) in "
        f"{cnn_seconds:.1f} s")
    say("kernel  MLP        CNN (Myrtle-5)")
    for name in ("NNGP", "NTK"):
        say(f"{name:<6}  {100 * cnn_acc['MLP ' + name]:6.2f} %   "
            f"{100 * cnn_acc['CNN ' + name]:6.2f} %")

    xs = data.x_test[:n_ntk]
    theta = net.kernel(xs, get="ntk").ntk
    distances: dict[int, list[float]] = {}
    n_params: dict[int, int] = {}
    for width in widths:
        twin_spec = mlp(width)
        distances[width] = []
        for seed in range(seeds):
            gen = torch.Generator().manual_seed(1000 * seed + width)
            model = twin_spec.module((xs.shape[1],), generator=gen, dtype=xs.dtype)
            n_params[width] = sum(p.numel() for p in model.parameters())
            emp = empirical_ntk(model, xs)
            dist = torch.linalg.norm(emp - theta) / torch.linalg.norm(theta)
            distances[width].append(float(dist))
            del model
            bar.update(1)
    bar.close()
    means = np.array([np.mean(distances[w]) for w in widths])
    slope, intercept = np.polyfit(np.log(widths), np.log(means), 1)

    say("")
    say(f"Empirical NTK of finite twins vs infinite-width NTK on {len(xs)} test inputs "
        f"({seeds} initialisations per width)")
    say(f"{'width':>6}  {'parameters':>11}  {'relative distance':>17}  {'std':>7}")
    for width, mean in zip(widths, means, strict=True):
        say(f"{width:>6}  {n_params[width]:>11,}  {mean:>17.4f}  {np.std(distances[width]):>7.4f}")
    say(f"fitted slope of log(distance) vs log(width): {slope:.3f} (theory: -0.5)")

    plot = _plot(widths, means, distances, slope, intercept, Path(out_dir))
    if plot is not None:
        say(f"plot saved to {plot}")
    dynamics = run_dynamics(out_dir=Path(out_dir), say=say)
    say(f"plot saved to {dynamics.plot}")
    seconds = time.perf_counter() - start
    say(f"done in {seconds:.1f} s")
    return DemoResult(accuracy, cnn_acc, list(widths), distances, float(slope), plot, seconds,
                      lines, dynamics)


def _plot(widths, means, distances, slope, intercept, out_dir: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4))
    for w in widths:
        ax.scatter([w] * len(distances[w]), distances[w], color="0.7", s=12)
    ax.plot(widths, means, "o", color="C0", label="mean over initialisations")
    grid = np.geomspace(min(widths), max(widths), 50)
    ax.plot(grid, np.exp(intercept) * grid**slope, "-", color="C0",
            label=f"fit: slope {slope:.2f}")
    ax.plot(grid, means[0] * math.sqrt(widths[0]) / np.sqrt(grid), "--", color="C1",
            label="width$^{-1/2}$")
    ax.set(xscale="log", yscale="log", xlabel="width",
           ylabel=r"$\|\Theta_{emp} - \Theta_\infty\|_F / \|\Theta_\infty\|_F$",
           title="Empirical NTK -> infinite-width NTK")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "ntk_convergence.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
