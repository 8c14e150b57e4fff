"""
# Deep-limit classifiers: 1-NN, majority vote, and the optimal singular kernel

Radhakrishnan, Belkin & Uhler ("Wide and deep neural networks achieve optimality for
classification", PNAS 2023) take infinitely wide networks (the NTK or NNGP predictor) to
infinite depth, with inputs on the sphere and no biases. Which classifier comes out depends
only on the activation's normalised dual `psi` (its Hermite weights): ReLU-like activations
(`psi'(1) = 1`) give the **majority vote**; `psi'(1) > 1` gives a **singular kernel**
`h(x . z) ~ |x - z|^-alpha` with `alpha = 2 log(1/psi'(xi*)) / log psi'(1)`, which is the
**1-nearest neighbour** rule when `psi'(xi*) = 0`; and with `alpha` equal to the data's
intrinsic dimension it is Devroye et al.'s Hilbert kernel estimate, which is consistent: the
network reaches the Bayes error as `n` grows. Their explicit optimal activations are simple
Hermite combinations, e.g. `(He_1 + He_3 / sqrt 6) / sqrt 2` for data on the 2-sphere.

**Their figures** compare test accuracy of the deep NNGP/NTK with these activations against
1-NN, majority vote, the Hilbert estimate and the Bayes classifier on Dirichlet data,
`n = 10000`. **Ours:** `ntkit.theory.deep_limit_class` predicts the class; the left panel
shows the fraction of test points where the depth-`L` kernel classifier (the activations'
own expectations iterated at unit variance, then `ntkit.solve`) agrees with the predicted
limit, for one activation of each class; the right panel the test error of the deep optimal
network against `n` on the positive orthant of the 2-sphere with 20 % label noise (Bayes
error 0.2), `n <= 1000`. Found on the way: the NTK reaches the singular-kernel limit much
more slowly than the NNGP (its `h'` term, one power of distance more singular, dominates
close pairs until depth ~ 1/distance^2), and an odd activation needs data with non-negative
cosines (as the paper's Dirichlet data have) or antipodal points act as near neighbours.
"""

import os

import matplotlib.pyplot as plt
import torch

from ntkit import layers as L
from ntkit.apps._repro_deep_limit import agreement_curve, bayes_curve, sphere_task
from ntkit.theory import HermiteSeries, deep_limit_class, optimal_activation

# NTKIT_EXAMPLES_SMALL=1 runs every example at a reduced size (the docs build test uses it).
SMALL = os.environ.get("NTKIT_EXAMPLES_SMALL") == "1"
N_TEST = 150 if SMALL else 400
NS = (40, 150) if SMALL else (100, 300, 1000)
SEEDS = 1 if SMALL else 2

he3 = HermiteSeries((0.0, 0.0, 0.0, 1.0))
CASES = [  # (label, activation, depths, kernel, training points)
    ("relu, NTK", L.ReLU(), (1, 10, 100, 1000) if SMALL else (1, 10, 100, 1000, 10000),
     "ntk", 40),
    ("He_3, NTK", L.Elementwise(he3, d_fn=he3.derivative(), deg=4), (1, 2, 3, 4, 5, 6),
     "ntk", 100),
    ("optimal (dim 2), NNGP", optimal_activation(2), (1, 2, 5, 10, 20, 40), "nngp", 100),
    ("optimal (dim 2), NTK", optimal_activation(2), (1, 2, 5, 10, 20, 40), "ntk", 100),
    ("erf, NNGP", L.Erf(), (1, 5, 20, 60, 120), "nngp", 100),
]

# %%
# ## Agreement with the predicted deep limit as depth grows

task = sphere_task(100 + N_TEST, dim=2, noise=0.2, imbalance=0.2,
                   generator=torch.Generator().manual_seed(0))
curves = {}
for label, act, depths, kernel, n_train in CASES:
    limit = deep_limit_class(act)
    kind, agree = agreement_curve(act, depths, task, n_train, kernel=kernel)
    curves[label] = (depths, agree, kind)
    alpha = "-" if limit.alpha is None else f"{limit.alpha:.3g}"
    print(f"deep limit of {label}: {kind} (alpha {alpha}), agreement {agree[-1]:.3f} "
          f"at depth {depths[-1]}")

# %%
# ## The optimal activation's deep classifier approaches the Bayes error

errs = bayes_curve(optimal_activation(2), NS, depth=30, dim=2, noise=0.2, n_test=N_TEST,
                   seeds=SEEDS, kernel="nngp")
for i, n in enumerate(NS):
    print(f"n = {n:>4}: deep optimal NNGP error {errs['deep'][i]:.3f}, 1-NN "
          f"{errs['1nn'][i]:.3f}, majority {errs['majority'][i]:.3f}, Bayes 0.200")

fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
for label, (depths, agree, kind) in curves.items():
    left.semilogx(depths, agree, "o-", label=f"{label} -> {kind}")
left.set(xlabel="depth L", ylabel="agreement with the predicted limit", ylim=(0.4, 1.02))
left.legend(fontsize=8)
for key, style in (("deep", "o-"), ("1nn", "s--"), ("majority", "^:")):
    right.semilogx(NS, errs[key], style, label=key)
right.axhline(0.2, color="k", lw=0.8, label="Bayes error")
right.set(xlabel="training points n", ylabel="test error", ylim=(0.1, 0.55))
right.legend(fontsize=8)
fig.tight_layout()
plt.show()
