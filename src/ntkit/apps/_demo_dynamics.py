"""``ntkit demo``, training dynamics: the closed form of an infinitely wide network against
finite twins trained by full-batch gradient descent, on a small regression task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from .. import layers as L
from ..predict import gradient_descent_mse, gradient_descent_mse_ensemble, max_learning_rate

__all__ = ["DynamicsResult", "run_dynamics"]


@dataclass
class DynamicsResult:
    """Test losses over training (closed form and twins), the finite-vs-infinite gaps, plot."""

    steps: list[int]
    closed_form_loss: list[float]
    twin_loss: dict[int, list[float]]
    gap: dict[int, float]
    plot: Path | None


def _task(n_train: int = 32, n_test: int = 64, d: int = 8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_test, d, generator=g, dtype=torch.float64)
    y = torch.sin(2 * x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3]
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _spec(width: int) -> L.Serial:
    return L.serial(L.Dense(width, W_std=1.5, b_std=0.05), L.ReLU(),
                    L.Dense(1, W_std=1.5, b_std=0.05))


def _train(width, seeds, x_train, y_train, x_test, lr, steps):
    """Outputs ``(len(steps), seeds, n + m, 1)`` of twins trained by full-batch descent."""
    models = [_spec(width).module((x_train.shape[1],), dtype=x_train.dtype,
                                  generator=torch.Generator().manual_seed(width + s))
              for s in range(seeds)]
    params, buffers = stack_module_state(models)
    fwd = vmap(lambda p, b, x: functional_call(models[0], (p, b), (x,)), in_dims=(0, 0, None))
    x_all = torch.cat([x_train, x_test])
    out, step = [], 0
    for target in steps:
        for _ in range(target - step):
            loss = ((fwd(params, buffers, x_train) - y_train) ** 2).sum() / (2 * y_train.numel())
            grads = torch.autograd.grad(loss, list(params.values()))
            with torch.no_grad():
                for p, g in zip(params.values(), grads, strict=True):
                    p -= lr * g
        step = target
        with torch.no_grad():
            out.append(fwd(params, buffers, x_all))
    return torch.stack(out)


def run_dynamics(*, out_dir: Path, widths=(64, 1024), seeds: int = 4, max_step: int = 300,
                 say=print) -> DynamicsResult:
    """Test loss vs training step: closed form (infinite width) and twins at ``widths``."""
    x_train, y_train, x_test, y_test = _task()
    n = len(x_train)
    net = _spec(1)
    k = net.kernel(x_train)
    k_test = net.kernel(x_test, x_train, get="ntk").ntk
    # A quarter of the largest stable rate: steps small enough for the continuous flow.
    lr = 0.25 * max_learning_rate(k.ntk, y_train.numel())
    steps = sorted({0, *np.unique(np.geomspace(1, max_step, 12).astype(int)).tolist()})
    t = torch.tensor(steps, dtype=torch.float64)
    # Expected test loss of a randomly initialised infinite network: |mean - y|^2 + variance.
    mean, cov = gradient_descent_mse_ensemble(net, x_train, y_train, learning_rate=lr)(
        t, x_test, get="ntk", compute_cov=True)
    closed = (((mean - y_test) ** 2).mean((1, 2)) + cov.diagonal(dim1=1, dim2=2).mean(1)) / 2
    predict = gradient_descent_mse(k.ntk, y_train, learning_rate=lr)
    twin_loss, gap, per_seed = {}, {}, {}
    for width in widths:
        out = _train(width, seeds, x_train, y_train, x_test, lr, steps)
        f_test = out[:, :, n:]
        per_seed[width] = ((f_test - y_test) ** 2).mean((2, 3)).numpy() / 2
        twin_loss[width] = per_seed[width].mean(1).tolist()
        # Each twin against the closed form started from its own initial outputs.
        gaps = []
        for s in range(seeds):
            a, b = predict(t, out[0, s, :n], out[0, s, n:], k_test)
            diff = torch.cat([a - out[:, s, :n], b - out[:, s, n:]], 1)
            gaps.append(float(diff.pow(2).mean((1, 2)).sqrt().max() / y_train.pow(2).mean()
                              .sqrt()))
        gap[width] = float(np.mean(gaps))
    say("")
    say(f"Training dynamics: Dense(w)-ReLU-Dense(1), {n} train / {len(x_test)} test points, "
        f"MSE, full-batch gradient descent at lr = {lr:.3g} (a quarter of the maximum)")
    say(f"{'step':>6}  {'closed form':>11}  " + "  ".join(f"{'w=' + str(w):>9}" for w in widths)
        + "   (test loss, twins: mean over " + f"{seeds} seeds)")
    for i, step in enumerate(steps):
        if i % 3 == 0 or i == len(steps) - 1:
            say(f"{step:>6}  {float(closed[i]):>11.4f}  "
                + "  ".join(f"{twin_loss[w][i]:>9.4f}" for w in widths))
    say("max over time of |f_twin - f_closed form| / |y| (train and test, from the twin's own "
        "initial outputs): " + ", ".join(f"width {w}: {gap[w]:.3f}" for w in widths))
    plot = _plot(steps, closed.tolist(), per_seed, twin_loss, out_dir)
    return DynamicsResult(steps, closed.tolist(), twin_loss, gap, plot)


def _plot(steps, closed, per_seed, twin_loss, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    x = np.maximum(steps, 0.5)  # show step 0 on the log axis
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(x, closed, "k-", lw=2, label="infinite width (closed form)")
    for i, (width, losses) in enumerate(twin_loss.items()):
        ax.plot(x, per_seed[width], color=f"C{i}", lw=0.5, alpha=0.5)
        ax.plot(x, losses, "o--", color=f"C{i}", ms=3, label=f"width {width} (gradient descent)")
    ax.set(xscale="log", yscale="log", xlabel="training step (step 0 drawn at 0.5)",
           ylabel="test loss |f - y|^2 / 2", title="Finite nets follow the infinite-width flow")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "training_dynamics.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
