"""
# Grokking as the transition from lazy to rich training

Kumar, Bordelon, Gershman & Pehlevan (ICLR 2024) make a two-layer network grok a quadratic
target without any regularisation: the output scale `alpha` alone decides whether training
starts lazy (the network first fits the training set with its initial tangent kernel, which
does not generalise, and learns the right features much later) or rich (features and fit
come together). `ntkit.parametrize.centered(model, alpha)` is that knob: it returns
`alpha * (f(x; w) - f(x; w0))`, to be trained on `loss * loss_scale` with
`loss_scale = 1 / alpha^2` (Chizat, Oyallon & Bach 2019). We train it for a few `alpha` and
watch the train and test losses and the centred alignment of the empirical NTK with the
target (`ntkit.analysis.centered_target_alignment`).
"""

import math
import os

import matplotlib.pyplot as plt
import torch
from torch import nn

import ntkit as nk
from ntkit.analysis import centered_target_alignment
from ntkit.parametrize import centered

# NTKIT_EXAMPLES_SMALL=1 runs every example at a reduced size (the docs build test uses it).
# Full size is the paper's Figure 1 setting (D = 100, width 500, P = 550, eps = 0.02) at a 10x
# larger learning rate than theirs; the small one keeps P / D = 5.5 with a larger eps, so the
# features are learnt within a few hundred steps.
SMALL = os.environ.get("NTKIT_EXAMPLES_SMALL") == "1"
D, WIDTH, P, EPS, ETA = (40, 100, 220, 0.1, 2.0) if SMALL else (100, 500, 550, 0.02, 10.0)
ALPHAS = (1 / 16, 1 / 4, 1.0) if SMALL else (1 / 16, 1 / 4, 1.0, 4.0)
STEPS = 1500 if SMALL else 20000
torch.manual_seed(0)

# %%
# ## The task and the network
#
# Inputs `x ~ N(0, I_D)`, target `y = (beta . x)^2 / 2` for a random unit `beta`. The network
# is `f(x) = (1/N) sum_i phi(w_i . x / sqrt(D))` with `phi(z) = z + eps z^2 / 2` and only the
# first layer trained, as in the paper. With `P` far below the `D^2 / 2` quadratic features,
# kernel regression with the initial NTK cannot learn `y`: only feature learning can.

g = torch.Generator().manual_seed(0)
x, x_test = torch.randn(P, D, generator=g), torch.randn(500, D, generator=g)
beta = torch.randn(D, generator=g)
beta = beta / beta.norm()
y, y_test = 0.5 * (x @ beta) ** 2, 0.5 * (x_test @ beta) ** 2


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(WIDTH, D, generator=torch.Generator()
                                               .manual_seed(1)))

    def forward(self, inputs):
        h = inputs @ self.weight.T / math.sqrt(D)
        return (h + 0.5 * EPS * h**2).mean(dim=1)


# %%
# ## Training each alpha
#
# Full-batch gradient descent at the learning rate `ETA * WIDTH` on `loss_scale * MSE`: the
# paper's `N / alpha^2` on the plain loss. The losses are divided by their value at init
# (`mean(y^2)`, the centred output starts at exactly zero).


def train(alpha: float) -> dict:
    h = centered(TwoLayer(), alpha)
    opt = torch.optim.SGD(h.parameters(), lr=ETA * WIDTH)
    marks = sorted({0, STEPS, *[int(round(STEPS ** (i / 12))) for i in range(1, 12)]})
    curves = {"step": [], "train": [], "test": [], "align": []}
    for t in range(STEPS + 1):
        loss = ((h(x) - y) ** 2).mean()
        if t in marks:
            with torch.no_grad():
                test = ((h(x_test) - y_test) ** 2).mean()
            curves["step"].append(t + 1)
            curves["train"].append(loss.item() / (y**2).mean().item())
            curves["test"].append(test.item() / (y_test**2).mean().item())
            k = nk.empirical_ntk(h, x_test[:100])
            curves["align"].append(centered_target_alignment(k, y_test[:100]))
        opt.zero_grad()
        (h.loss_scale * loss).backward()
        opt.step()
    return curves


runs = {alpha: train(alpha) for alpha in ALPHAS}
for alpha, c in runs.items():
    first = {name: next((s for s, v in zip(c["step"], c[name], strict=True) if v < 0.1), None)
             for name in ("train", "test")}
    print(f"alpha {alpha:>6g}: loss < 0.1 x initial at step ~{first['train']} (train), "
          f"~{first['test']} (test); alignment {c['align'][0]:.3f} -> {c['align'][-1]:.3f}")

# %%
# ## Lazy starts grok, rich starts do not
#
# Dashed: train loss, solid: test loss. The larger `alpha`, the longer the test loss stays
# up after the training loss has fallen, and the alignment of the tangent kernel with the
# target rises while the test loss falls: the network has left its initial kernel.

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for i, (alpha, c) in enumerate(runs.items()):
    left.plot(c["step"], c["train"], "--", color=f"C{i}")
    left.plot(c["step"], c["test"], "-", color=f"C{i}", label=f"alpha = {alpha:g}")
    right.plot(c["step"], c["align"], "o-", ms=3, color=f"C{i}", label=f"alpha = {alpha:g}")
left.set(xscale="log", yscale="log", xlabel="step + 1", ylabel="loss / initial loss",
         title="Train (dashed) and test (solid) loss")
right.set(xscale="log", xlabel="step + 1", ylabel="centred kernel-target alignment",
          title="Empirical NTK on 100 test points")
left.legend()
right.legend()
fig.tight_layout()
plt.show()
