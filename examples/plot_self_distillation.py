"""
# Self-distillation needs ground-truth guidance

**Paper.** Borup & Andersen, "Even your Teacher Needs Guidance: Ground-Truth Targets Dampen
Regularization Imposed by Self-Distillation" (NeurIPS 2021). Kernel ridge regression is
refitted, step after step, to `alpha * y + (1 - alpha) * f_prev(X)`. Without the targets
(`alpha = 0`, Mobahi et al. 2020) every step shrinks the fit further and it collapses to the
zero function; with them the steps converge to one kernel ridge fit with the ridge amplified
by `1 / alpha`, and the best `alpha` fits better than `alpha = 0`.

**Their figure.** Test error against the distillation step for several `alpha` on a noisy
sinusoid (11 points, an RBF kernel) and with ResNets on CIFAR-10: `alpha = 0` first improves,
then degrades; `alpha > 0` levels off; the optimal `alpha` does best.

**Ours.** `ntkit.predict.self_distill` gives every step in closed form from one
eigendecomposition (the fit is a spectral filter), and `ntkit.predict.optimal_alpha` the
weight of each step that minimises the squared error on a noisy held-out split (a parabola in
`alpha` given the previous step, so a closed form; the schedule is greedy). The kernel is the
NNGP of a two-hidden-layer ReLU network (`ntkit.layers`), the task `sin(2 pi x)` plus noise
of standard deviation 0.5 on 30 points in `[-1, 1]`, the ridge `1e-4` times the mean diagonal
(a teacher that overfits), 10 seeds, 100 steps; the error is measured against the noise-free
function on a grid. **Scale:** a kernel toy as in the paper's first experiment, not its
ResNets.
"""

import os

import matplotlib.pyplot as plt
import numpy as np

from ntkit.apps._repro_self_distillation import self_distillation_curves

# NTKIT_EXAMPLES_SMALL=1 runs every example at a reduced size (the docs build test uses it).
SMALL = os.environ.get("NTKIT_EXAMPLES_SMALL") == "1"
SEEDS = 5 if SMALL else 10
STEPS = 50 if SMALL else 100

# %%
# ## Test error of every step
#
# One eigendecomposition per seed gives all steps and the infinite-step limit.

curves = self_distillation_curves(seeds=SEEDS, steps=STEPS, ridge=1e-4)
mean = curves.test_mse.mean(0)  # (alphas + 1, steps + 1)
for i, a in enumerate(curves.alphas):
    print(f"alpha = {a:.2f}: test MSE {mean[i, 0]:.3f} (teacher) -> best "
          f"{mean[i].min():.3f} -> {mean[i, -1]:.3f} (step {STEPS}); limit "
          f"{curves.limit_mse[:, i].mean():.3f}")
wins = int((curves.test_mse[:, -1, -1] < curves.test_mse[:, 0, -1]).sum())
print(f"step {STEPS}: optimal alpha test MSE {mean[-1, -1]:.3f} vs alpha = 0 "
      f"{mean[0, -1]:.3f} (better in {wins}/{SEEDS} seeds; the zero function scores "
      f"{curves.signal:.3f})")

# %%
# ## The figure
#
# Left: mean test error over seeds against the step (step 0 is the teacher, drawn at 0.5 on
# the log axis); dotted lines are the infinite-step limits. Right: the optimal weights chosen
# on the held-out split.

steps = np.maximum(np.arange(STEPS + 1), 0.5)
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for i, a in enumerate(curves.alphas):
    left.plot(steps, mean[i], color=f"C{i}", label=f"alpha = {a:g}")
    if a > 0:
        left.axhline(curves.limit_mse[:, i].mean(), color=f"C{i}", ls=":", lw=1)
left.plot(steps, mean[-1], "k--", lw=2, label="optimal alpha (held-out, per step)")
left.axhline(curves.signal, color="grey", lw=0.8)
left.text(1, curves.signal * 0.93, "zero function", color="grey", fontsize=8)
left.set(xscale="log", yscale="log", xlabel="distillation step", ylabel="test MSE",
         title="Ground-truth targets stop the collapse")
left.legend(fontsize=8)
right.plot(np.arange(1, STEPS + 1), curves.optimal.T, color="k", lw=0.5, alpha=0.5)
right.plot(np.arange(1, STEPS + 1), curves.optimal.mean(0), "k-", lw=2)
right.set(xscale="log", xlabel="distillation step", ylabel="optimal alpha", ylim=(0, 1),
          title=f"Greedy optimal alpha ({SEEDS} seeds, mean bold)")
fig.tight_layout()
plt.show()
