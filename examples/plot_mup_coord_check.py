"""
# muP on an unmodified MLP: coordinate check and learning-rate transfer

Under the standard parametrization (SP) a wider network trained by Adam at the same
learning rate takes larger steps in function space: its readout blows up with width, and
the best learning rate shrinks as the model grows. The maximal-update parametrization (muP,
Yang & Hu 2021; Yang et al. 2022, "Tensor Programs V") rescales each layer's
initialisation, forward multiplier and learning rate with width so that every layer's
activations move by the same amount at every width, and a learning rate tuned on a small
model is the best for a large one. `ntkit.parametrize.plan` installs either on a plain
`nn.Module`; `coord_check` and `lr_sweep` test it.
"""

import os

import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits
from torch import nn

from ntkit.parametrize import coord_check, lr_sweep

# NTKIT_EXAMPLES_SMALL=1 runs every example at a reduced size (the docs build test uses it).
SMALL = os.environ.get("NTKIT_EXAMPLES_SMALL") == "1"
COORD_WIDTHS = [64, 128, 256, 512] if SMALL else [64, 128, 256, 512, 1024, 2048]
SWEEP_WIDTHS = [64, 256] if SMALL else [64, 256, 1024]
SWEEP_STEPS = 20 if SMALL else 60
SEEDS = 1 if SMALL else 3


def mlp(width: int, d_in: int = 16, classes: int = 10) -> nn.Module:
    """An ordinary PyTorch MLP with three hidden layers; nothing muP-specific in it."""
    return nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, classes))


# %%
# ## Coordinate check
#
# Five Adam steps at every width, from the same base width 64. Each line is one module of
# the MLP (`0`, `2`, `4`, `6` the linear layers, the others their ReLUs); the y axis is the
# mean absolute value of its output. Under SP the lines after the first step climb with
# width — most of all the readout `6` — while under muP they are flat.

g = torch.Generator().manual_seed(0)
data = torch.randn(64, 16, generator=g), torch.randint(0, 10, (64,), generator=g)
checks = {p: coord_check(mlp, COORD_WIDTHS, data, parametrization=p, steps=5, lr=3e-3,
                         seeds=SEEDS, generator=torch.Generator().manual_seed(1))
          for p in ("sp", "mup")}

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
for ax, (p, cc) in zip(axes, checks.items(), strict=True):
    mean = cc.l1.mean(1)   # (widths, steps + 1, modules), mean over seeds
    for j, name in enumerate(cc.modules):
        ax.plot(cc.widths, mean[:, -1, j].numpy(), marker=".", label=f"module {name}")
    ax.set(xscale="log", yscale="log", xlabel="width", title=f"{p}: after 5 Adam steps")
    print(f"{p}: slope in log width after 5 steps",
          {name: round(v, 2) for name, v in cc.slopes().items()})
axes[0].set_xscale("log", base=2)
axes[1].set_xscale("log", base=2)
axes[0].set_ylabel("mean |activation|")
axes[1].legend(fontsize="x-small")
fig.tight_layout()

# %%
# ## Learning-rate transfer
#
# An MLP with two hidden layers on scikit-learn's digits, trained by Adam on minibatches of
# 128 for a few epochs at a grid of learning rates. Under SP the curves of wider models
# move left (their best learning rate shrinks); under muP they line up.

digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float32)
x = (x - x.mean(0)) / (x.std(0) + 1e-3)
y = torch.tensor(digits.target)


def digits_mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))


lrs = [2.0**k for k in range(-11, -3)]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
for ax, p in zip(axes, ("sp", "mup"), strict=True):
    sweep = lr_sweep(digits_mlp, SWEEP_WIDTHS, lrs, (x, y), parametrization=p,
                     steps=SWEEP_STEPS, optimizer="adam", seeds=SEEDS, batch_size=128,
                     generator=torch.Generator().manual_seed(2))
    sweep.plot(ax, title=p)
    ax.set_yscale("log")
    print(f"{p}: best learning rate per width", sweep.optimal_lr)
fig.tight_layout()
plt.show()
