"""
# Finite networks converge to the infinite-width NTK

A network spec in `ntkit.layers` gives two things: the exact neural tangent kernel of the
network at infinite width (`net.kernel`), and finite networks with the same parametrization
(`net.module`). Here we build finite twins of growing width, measure the empirical NTK of
each with `ntkit.empirical_ntk`, and watch it approach the infinite-width NTK. Jacot et al.
(2018) predict fluctuations of order `width^(-1/2)`: a slope of -1/2 on a log-log plot.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
import torch

import ntkit as nk
from ntkit import layers as L
from ntkit.datasets import load_digits

# NTKIT_EXAMPLES_SMALL=1 runs every example at a reduced size (the docs build test uses it).
SMALL = os.environ.get("NTKIT_EXAMPLES_SMALL") == "1"
WIDTHS = (32, 128, 512) if SMALL else (64, 256, 1024, 4096)
SEEDS = 2 if SMALL else 4
N_INPUTS = 20 if SMALL else 100


def mlp(width: int) -> L.Serial:
    """Three hidden `Dense - ReLU` layers of `width` units, then one output."""
    hidden = [layer for _ in range(3)
              for layer in (L.Dense(width, W_std=1.5, b_std=0.05), L.ReLU())]
    return L.serial(*hidden, L.Dense(1))


# %%
# ## The infinite-width NTK
#
# The inputs are scikit-learn's 8x8 digits as 64-dimensional vectors, in float64. The
# infinite-width kernel does not depend on the width given to `Dense`, so any spec serves.

x = load_digits().x_test[:N_INPUTS]
theta_inf = mlp(1).kernel(x, get="ntk").ntk  # (N, N)
print(f"inputs {tuple(x.shape)}, infinite-width NTK {tuple(theta_inf.shape)}")

# %%
# ## Empirical NTKs of finite twins
#
# For each width, a few random initialisations; the relative Frobenius distance between
# each twin's empirical NTK and the infinite-width one.

distances = {}
for width in WIDTHS:
    distances[width] = []
    for seed in range(SEEDS):
        generator = torch.Generator().manual_seed(1000 * seed + width)
        model = mlp(width).module((x.shape[1],), generator=generator, dtype=x.dtype)
        theta = nk.empirical_ntk(model, x)  # (N, N), summed over the one output
        error = torch.linalg.norm(theta - theta_inf) / torch.linalg.norm(theta_inf)
        distances[width].append(float(error))
    print(f"width {width:>5}: relative distance {np.mean(distances[width]):.4f}")

means = np.array([np.mean(distances[w]) for w in WIDTHS])
slope, intercept = np.polyfit(np.log(WIDTHS), np.log(means), 1)
print(f"fitted slope {slope:.3f} (theory: -0.5)")

# %%
# ## The log-log plot

fig, ax = plt.subplots(figsize=(5, 4))
for width in WIDTHS:
    ax.scatter([width] * SEEDS, distances[width], color="0.7", s=12)
ax.plot(WIDTHS, means, "o", color="C0", label="mean over initialisations")
grid = np.geomspace(WIDTHS[0], WIDTHS[-1], 50)
ax.plot(grid, np.exp(intercept) * grid**slope, "-", color="C0", label=f"fit: slope {slope:.2f}")
ax.plot(grid, means[0] * np.sqrt(WIDTHS[0] / grid), "--", color="C1", label="width$^{-1/2}$")
ax.set(xscale="log", yscale="log", xlabel="width",
       ylabel=r"$\|\Theta_{emp} - \Theta_\infty\|_F / \|\Theta_\infty\|_F$",
       title="Empirical NTK -> infinite-width NTK")
ax.legend()
fig.tight_layout()
plt.show()
