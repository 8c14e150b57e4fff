"""
# The empirical NTK of your own model

`ntkit.empirical_ntk` takes any `torch.nn.Module` whose examples are independent: here a
small residual CNN written the usual way, with no ntkit layer in it. Its strategies compute
the same kernel by different routes (per-example Jacobians, NTK-vector products, per-layer
factors); we check that they agree with each other and with an explicit Jacobian product,
and look at the kernel of digits sorted by class.
"""

import os
import time

import matplotlib.pyplot as plt
import torch
from torch import nn

import ntkit as nk
from ntkit.datasets import load_digits

# NTKIT_EXAMPLES_SMALL=1 runs every example at a reduced size (the docs build test uses it).
SMALL = os.environ.get("NTKIT_EXAMPLES_SMALL") == "1"
N = 16 if SMALL else 64


class ResidualCNN(nn.Module):
    """Conv - ReLU, a residual Conv - GroupNorm - ReLU block, then a linear readout."""

    def __init__(self, channels: int = 16, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(4, channels)
        self.head = nn.Linear(channels * 8 * 8, classes)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = h + torch.relu(self.norm(self.conv(h)))
        return self.head(h.flatten(1))


torch.manual_seed(0)
model = ResidualCNN().double()

# %%
# ## Inputs
#
# `N` digits as `(N, 1, 8, 8)` images, sorted by class so that the kernel shows blocks.

data = load_digits(scaling="image")
order = torch.argsort(data.y_test[:N], stable=True)
x = data.x_test[:N][order].reshape(-1, 1, 8, 8)
labels = data.y_test[:N][order]

# %%
# ## Every strategy, and an explicit Jacobian product
#
# The reference: per-example Jacobians of all parameters with `torch.func`, flattened and
# multiplied, `sum_p df(x_i)/dp . df(x_j)/dp` summed over the 10 outputs.

params = dict(model.named_parameters())


def outputs_of(p, inputs):
    return torch.func.functional_call(model, p, (inputs,))


jac = torch.func.jacrev(outputs_of)(params, x)  # name -> (N, 10, *param shape)
flat = torch.cat([j.reshape(N, 10, -1) for j in jac.values()], dim=2)  # (N, 10, P)
reference = torch.einsum("iap,jap->ij", flat, flat)

kernels = {}
for strategy in ("jacobian", "ntk_vp", "structured", "auto"):
    start = time.perf_counter()
    kernels[strategy] = nk.empirical_ntk(model, x, strategy=strategy)  # (N, N)
    seconds = time.perf_counter() - start
    error = torch.linalg.norm(kernels[strategy] - reference) / torch.linalg.norm(reference)
    print(f"{strategy:>10}: relative difference to the Jacobian product {error:.1e} "
          f"({seconds:.2f} s)")

# %%
# `outputs="full"` keeps every pair of output units, `(N, N, 10, 10)`; its trace over the
# output pair is the kernel above.

full = nk.empirical_ntk(model, x, outputs="full")
print(f"full kernel {tuple(full.shape)}; its trace matches: "
      f"{torch.allclose(full.diagonal(dim1=2, dim2=3).sum(-1), kernels['auto'])}")

# %%
# ## The kernel, sorted by class

fig, ax = plt.subplots(figsize=(4.5, 4))
image = ax.imshow(kernels["auto"].numpy(), cmap="viridis")
edges = [i - 0.5 for i in range(1, N) if labels[i] != labels[i - 1]]
for edge in edges:
    ax.axhline(edge, color="w", lw=0.5)
    ax.axvline(edge, color="w", lw=0.5)
ax.set(title="Empirical NTK of a residual CNN", xlabel="digit (sorted by class)",
       ylabel="digit (sorted by class)")
fig.colorbar(image, ax=ax, shrink=0.8)
fig.tight_layout()
plt.show()
