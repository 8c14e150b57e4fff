"""
# Closed-form training dynamics against trained networks

An infinitely wide network trained by gradient descent on the squared error is a linear
model in function space (Lee et al. 2019): its outputs at any training step follow in closed
form from the NTK. `ntkit.predict` gives them: `gradient_descent_mse` from kernels, and
`gradient_descent_mse_ensemble` for the mean and covariance over random initialisations,
from a network spec. Here we train finite twins of the same spec by full-batch gradient
descent and compare their test loss with the closed form.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from ntkit import layers as L
from ntkit.predict import gradient_descent_mse, gradient_descent_mse_ensemble, max_learning_rate

# NTKIT_EXAMPLES_SMALL=1 runs every example at a reduced size (the docs build test uses it).
SMALL = os.environ.get("NTKIT_EXAMPLES_SMALL") == "1"
WIDTHS = (64, 256) if SMALL else (64, 1024)
SEEDS = 2 if SMALL else 4
MAX_STEP = 30 if SMALL else 300


def spec(width: int) -> L.Serial:
    return L.serial(L.Dense(width, W_std=1.5, b_std=0.05), L.ReLU(),
                    L.Dense(1, W_std=1.5, b_std=0.05))


# %%
# ## A small regression task
#
# 32 training and 64 test points in 8 dimensions, float64.

g = torch.Generator().manual_seed(0)
x = torch.randn(96, 8, generator=g, dtype=torch.float64)
y = torch.sin(2 * x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3]
x_train, y_train, x_test, y_test = x[:32], y[:32], x[32:], y[32:]

# %%
# ## The closed form
#
# A quarter of the largest stable learning rate keeps the discrete steps close to the
# continuous flow. The expected test loss of a randomly initialised infinite network is
# `|mean - y|^2 + variance`, halved as in the training loss.

k_train = spec(1).kernel(x_train, get="ntk").ntk
lr = 0.25 * max_learning_rate(k_train, y_train.numel())
steps = sorted({0, *np.unique(np.geomspace(1, MAX_STEP, 12).astype(int)).tolist()})
t = torch.tensor(steps, dtype=torch.float64)
predict = gradient_descent_mse_ensemble(spec(1), x_train, y_train, learning_rate=lr)
mean, cov = predict(t, x_test, get="ntk", compute_cov=True)  # (T, m, 1), (T, m, m)
closed_form = (((mean - y_test) ** 2).mean((1, 2)) + cov.diagonal(dim1=1, dim2=2).mean(1)) / 2
print(f"learning rate {lr:.3g}; closed-form test loss {closed_form[0]:.3f} -> "
      f"{closed_form[-1]:.3f} after {steps[-1]} steps")

# %%
# ## Finite twins trained by gradient descent
#
# `SEEDS` twins per width, trained together with `torch.func` (one vmapped forward pass).
# We keep their outputs on the training and test inputs at every step of `steps`.

x_all = torch.cat([x_train, x_test])


def train(width: int) -> torch.Tensor:
    """Outputs `(len(steps), SEEDS, 96, 1)` of twins trained by full-batch gradient descent."""
    models = [spec(width).module((8,), dtype=x.dtype,
                                 generator=torch.Generator().manual_seed(width + s))
              for s in range(SEEDS)]
    params, buffers = stack_module_state(models)
    forward = vmap(lambda p, b, inputs: functional_call(models[0], (p, b), (inputs,)),
                   in_dims=(0, 0, None))
    outputs, done = [], 0
    for step in steps:
        for _ in range(step - done):
            loss = ((forward(params, buffers, x_train) - y_train) ** 2).sum() / (2 * 32)
            grads = torch.autograd.grad(loss, list(params.values()))
            with torch.no_grad():
                for p, grad in zip(params.values(), grads, strict=True):
                    p -= lr * grad
        done = step
        with torch.no_grad():
            outputs.append(forward(params, buffers, x_all))
    return torch.stack(outputs)


def test_loss(f_test: torch.Tensor) -> np.ndarray:
    return (((f_test - y_test) ** 2).mean((-2, -1)) / 2).numpy()


twins = {width: train(width) for width in WIDTHS}
for width, out in twins.items():
    loss = test_loss(out[:, :, 32:])
    print(f"width {width:>5}: test loss {loss[0].mean():.3f} -> {loss[-1].mean():.3f} "
          f"(mean over {SEEDS} twins)")

# %%
# ## Each twin against its own closed form
#
# A given twin starts from its own random outputs `f_0`; `gradient_descent_mse` gives the
# linearised network's outputs from the same start. The gap between the two shrinks as the
# width grows (like `width^(-1/2)`).

k_test_train = spec(1).kernel(x_test, x_train, get="ntk").ntk
linear = gradient_descent_mse(k_train, y_train, learning_rate=lr)
own_closed_form = {}
for width, out in twins.items():
    own_closed_form[width] = [linear(t, out[0, s, :32], out[0, s, 32:], k_test_train)[1]
                              for s in range(SEEDS)]  # test outputs (T, 64, 1) per twin
    gap = max(float((f - out[:, s, 32:]).abs().max())
              for s, f in enumerate(own_closed_form[width]))
    print(f"width {width:>5}: largest |twin - its closed form| on test inputs {gap:.3f}")

# %%
# ## Test loss over training
#
# Left: the expected loss of the infinite network and the twins' (thin lines: each twin;
# markers: their mean). Right: the first twin of each width and its own closed form.

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
x_axis = np.maximum(steps, 0.5)  # step 0 on the log axis
left.plot(x_axis, closed_form, "k-", lw=2, label="infinite width (closed form)")
for i, (width, out) in enumerate(twins.items()):
    loss = test_loss(out[:, :, 32:])
    left.plot(x_axis, loss, color=f"C{i}", lw=0.5, alpha=0.5)
    left.plot(x_axis, loss.mean(1), "o--", color=f"C{i}", ms=3, label=f"width {width}")
    right.plot(x_axis, test_loss(own_closed_form[width][0]), "-", color=f"C{i}",
               label=f"closed form from the width-{width} twin's start")
    right.plot(x_axis, test_loss(out[:, 0, 32:]), "o", color=f"C{i}", ms=4,
               label=f"width-{width} twin, trained")
left.set(title="Finite nets follow the infinite-width flow", ylabel="test loss |f - y|^2 / 2")
right.set(title="One twin and its linearisation")
for ax in (left, right):
    ax.set(xscale="log", yscale="log", xlabel="training step (step 0 drawn at 0.5)")
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
