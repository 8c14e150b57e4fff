"""
# Predicting a learning curve from the NTK before training

Eigenlearning (Simon et al., TMLR 2023) predicts the test error of kernel regression on `n`
samples from two things: the kernel's eigenvalues on the input distribution and the target's
coefficients in its eigenbasis. A wide network trained by gradient descent on the squared
error is kernel regression with its NTK (Jacot et al. 2018; Lee et al. 2019), so the same
numbers predict the network's test error — before any training. Here we compute the
prediction from the *analytic* (infinite-width) NTK of a spec on a pool of inputs, train the
spec's finite twins (NTK parametrization, full-batch gradient descent on MSE) at several `n`,
and compare.

Why the analytic NTK rather than the empirical NTK of one initial network: the prediction is
for the network family, not one draw; the analytic kernel is what every wide twin's kernel
concentrates around (the empirical one differs by `O(width^-1/2)`), and it costs one kernel
evaluation of the pool rather than a Jacobian contraction of every pool input. We train
`f(x) - f_init(x)` (the network minus a frozen copy of itself at initialization) so that the
trained network starts from zero outputs, as kernel regression does.
"""

import copy
import math
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

from ntkit import layers as L
from ntkit.analysis import KernelTracker, eigensystem, learning_curve, plot_learning_curve
from ntkit.predict import max_learning_rate

# NTKIT_EXAMPLES_SMALL=1 runs every example at a reduced size (the docs build test uses it).
SMALL = os.environ.get("NTKIT_EXAMPLES_SMALL") == "1"
NS = (16, 32, 64) if SMALL else (16, 32, 64, 128, 256)
SEEDS = 2 if SMALL else 5
WIDTH = 128 if SMALL else 1024
STEPS = 400 if SMALL else 4000
D, NOISE = 8, 0.05


def spec(width: int) -> L.Serial:
    return L.serial(L.Dense(width, W_std=math.sqrt(2), b_std=0.1), L.ReLU(),
                    L.Dense(width, W_std=math.sqrt(2), b_std=0.1), L.ReLU(), L.Dense(1))


def sphere(m: int, g: torch.Generator) -> torch.Tensor:
    x = torch.randn(m, D, generator=g, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True) * math.sqrt(D)


def target(x: torch.Tensor) -> torch.Tensor:
    return x[:, 0] + 0.8 * x[:, 1] * x[:, 2]


# %%
# ## The prediction, before training
#
# The pool of 1000 inputs stands for the input distribution (uniform on the sphere in 8
# dimensions): `eigensystem` turns its NTK matrix and the target on it into eigenvalues and
# target coefficients, and `learning_curve` solves the eigenlearning equations at each `n`.

g = torch.Generator().manual_seed(0)
pool = sphere(1000, g)
lam, v = eigensystem(spec(1).kernel(pool, get="ntk").ntk, target(pool))
curve = learning_curve(lam, v, NS, noise=NOISE)
print("predicted test MSE:", np.round(curve.test_mse.numpy(), 4))

# %%
# ## Training the finite twins
#
# Full-batch gradient descent on `|f - y|^2 / (2n)` at 0.9 times the largest stable learning rate
# of the analytic NTK, `SEEDS` training sets and initializations per `n`; the test MSE is
# measured on 1000 fresh inputs against noisy labels (as eigenlearning's test MSE is). A
# `KernelTracker` follows the empirical NTK of the first network at the largest `n` on its
# training inputs: how far the kernel the prediction relies on moves while the net trains.

x_test = sphere(1000, g)
f_test = target(x_test)
measured = np.zeros((SEEDS, len(NS)))
for j, n in enumerate(NS):
    for s in range(SEEDS):
        x = sphere(n, g)
        y = (target(x) + math.sqrt(NOISE) * torch.randn(n, generator=g, dtype=x.dtype))[:, None]
        lr = 0.9 * max_learning_rate(spec(1).kernel(x, get="ntk").ntk, n)
        net = spec(WIDTH).module((D,), dtype=x.dtype, generator=torch.Generator().manual_seed(s))
        init = copy.deepcopy(net).requires_grad_(False)
        params = list(net.parameters())
        tracker = None
        if j == len(NS) - 1 and s == 0:
            tracker = KernelTracker(net, x, y, every=STEPS // 20)
        for step in range(STEPS):
            if tracker is not None:
                tracker.step(step)
            loss = ((net(x) - init(x) - y) ** 2).sum() / (2 * n)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, grad in zip(params, grads, strict=True):
                    p -= lr * grad
        with torch.no_grad():
            fit = (net(x_test) - init(x_test))[:, 0]
        measured[s, j] = float(((fit - f_test) ** 2).mean()) + NOISE
        if tracker is not None:
            tracker.step(STEPS)
            history = tracker.history
    print(f"n = {n:>4}: predicted {float(curve.test_mse[j]):.4f}, measured "
          f"{measured[:, j].mean():.4f} (mean of {SEEDS})")

# %%
# ## Theory against trained networks
#
# Left: the line is the eigenlearning prediction from the initial analytic NTK; the points are
# the trained networks' test MSE (mean and standard error over the seeds). Gradient descent is
# stopped after a finite number of steps, which acts like a small ridge: the slowest
# eigendirections of the training kernel are not yet fitted. Right: the tracked network's
# kernel distance to its initial empirical NTK (Fort et al. 2020) stays small — the lazy regime
# in which the prediction from the initial kernel holds.

print(f"kernel distance to init after {STEPS} steps (n = {NS[-1]}, width {WIDTH}): "
      f"{history['distance'][-1]:.2e}")
fig, (ax, ax_k) = plt.subplots(1, 2, figsize=(11, 4))
plot_learning_curve(NS, curve, measured, ax=ax, label="eigenlearning (analytic NTK)",
                    measured_label=f"trained width-{WIDTH} nets")
ax.set_title("Learning curve predicted before training")
ax_k.plot(history["step"], history["distance"], "o-")
ax_k.set(xlabel="gradient-descent step", ylabel="kernel distance to init",
         title=f"Empirical NTK during training (n = {NS[-1]})")
fig.tight_layout()
plt.show()
