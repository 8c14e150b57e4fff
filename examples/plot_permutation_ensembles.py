"""
# Exact permutation learning by NTK ensembles: how many models?

**Paper.** Giapitzakis, Back de Luca & Fountoulakis, "Exact Learning of Permutations for
Nonzero Binary Inputs with Logarithmic Training Size and Quadratic Ensemble Complexity"
(2025). Two-layer networks in the NTK regime are trained by gradient descent on the `k`
standard basis vectors only, `e_i -> e_pi(i)`; the trained network is a Gaussian process whose
mean has the sign pattern of `pi(x)` on every nonzero binary input `x`, so the average of
enough independently trained networks, rounded by sign, is exactly `pi(x)`. **Claim:** the
number of models needed (the *ensemble complexity*, with probability `1 - delta`) is
`O(k log k)` for one test input and `O(k^2)` for all `2^k - 1` inputs at once. Their figures
train finite ensembles for small `k`.

**Ours.** No network is trained to get the curves: `ntkit.predict.gradient_descent_mse_ensemble`
gives the exact Gaussian of one trained infinitely wide network's outputs (`t=None`), and the
average of `M` of them is that Gaussian with its covariance divided by `M`. By symmetry one
input per weight `s` (number of ones) suffices, so the single-input number is exact for any
`k`; for all inputs we use the union bound over the `C(k, s)` inputs of each weight and check
it against an exact Monte Carlo over the joint Gaussian of all `2^k - 1 - k` unseen inputs at
small `k`. Finite networks (width 512, trained by full-batch gradient descent) check the
Gaussian itself. `delta = 0.1`, `k = 5 ... 30`, network `Dense(w) - ReLU - Dense(k)` without
biases (NTK parametrization, `W_std = 1`); a second curve with biases (`b_std = 0.5`) shows how
much the answer depends on the architecture.

**What we find** (printed below; the docs build runs a reduced `k` range). The models needed
grow with `k`, but without biases far more slowly than the paper's bounds: about `k^0.8` for the
hardest single input and `k^0.9` for all inputs (both closer to `k log k` than to `k^2`). The
hardest inputs are those with two ones, whose "off" outputs sit closest to zero; there are only
`C(k, 2)` of them, so the all-input number is within a factor ~2.5 of the single-input one and
the union bound is tight (Monte Carlo agrees within a few percent). The paper's `k^2` is an
upper bound that treats all `2^k` inputs at the worst margin. With biases the margins shrink
faster and the growth is super-quadratic (`k^2.6`), outside both bounds: the result is specific
to the architecture the paper analyses.

**Scale.** The paper trains finite ensembles at small `k`; our curves are exact in the
infinite-width limit for every `k` up to 30 and take seconds.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from ntkit.apps import permutation as P
from ntkit.predict import max_learning_rate

# NTKIT_EXAMPLES_SMALL=1 runs every example at a reduced size (the docs build test uses it).
SMALL = os.environ.get("NTKIT_EXAMPLES_SMALL") == "1"
KS = list(range(5, 13)) if SMALL else list(range(5, 31))
MC_KS = (4, 5, 6) if SMALL else (4, 5, 6, 7, 8, 9)
TWINS = 16 if SMALL else 128
DELTA = 0.1

# %%
# ## Ensemble complexity from the closed form
#
# `ensemble_complexity` needs one input per weight: milliseconds per `k`.

curves = {}
for label, b_std in (("no biases", 0.0), ("biases, b_std=0.5", 0.5)):
    rows = [P.ensemble_complexity(k, delta=DELTA, net=P.two_layer_net(k, b_std=b_std))
            for k in KS]
    curves[label] = (np.array([c.one for c in rows]), np.array([c.all_inputs for c in rows]))
one, every = curves["no biases"]
fit_one, fit_all = P.fit_growth(KS, one), P.fit_growth(KS, every)
print(f"permutation ensemble complexity: k={KS[0]}..{KS[-1]} one-input M {one[0]}->{one[-1]} "
      f"(exponent {fit_one['exponent']:.2f}; rms log-residual k log k {fit_one['rms_klogk']:.3f}"
      f", k^2 {fit_one['rms_k2']:.3f}); all-inputs M {every[0]}->{every[-1]} "
      f"(exponent {fit_all['exponent']:.2f}; k log k {fit_all['rms_klogk']:.3f}, "
      f"k^2 {fit_all['rms_k2']:.3f})")
for label, (o, a) in curves.items():
    fo, fa = P.fit_growth(KS, o), P.fit_growth(KS, a)
    print(f"  {label:>18}: one input k^{fo['exponent']:.2f}, all inputs k^{fa['exponent']:.2f}")

# %%
# ## The union bound against the exact joint probability
#
# For small `k` we draw the outputs at all unseen inputs jointly (exact Gaussian draws) and
# take the `1 - delta` quantile of the ensemble size each draw needs.

mc = [P.all_inputs_complexity_mc(k, delta=DELTA, draws=2000,
                                 generator=torch.Generator().manual_seed(k)) for k in MC_KS]
bound = [P.ensemble_complexity(k, delta=DELTA).all_inputs for k in MC_KS]
for k, m, b in zip(MC_KS, mc, bound, strict=True):
    print(f"k={k}: all inputs, exact (Monte Carlo) {m}, union bound {b}")

# %%
# ## The Gaussian against trained finite networks
#
# `TWINS` networks of width 512 trained by full-batch gradient descent to zero training loss
# on the `k = 4` task; their outputs at the 11 unseen inputs against the closed form.

k, perm = 4, torch.tensor([2, 0, 3, 1])
x_train, y_train = P.permutation_task(perm)
x_test = P.binary_inputs(k, min_ones=2)
closed = P.ensemble_outputs(perm, x_test)
net = P.two_layer_net(k, width=512)
lr = 0.5 * max_learning_rate(net.kernel(x_train, get="ntk").ntk, y_train.numel())
models = [net.module((k,), dtype=torch.float64, generator=torch.Generator().manual_seed(s))
          for s in range(TWINS)]
params, buffers = stack_module_state(models)
forward = vmap(lambda p, b, x: functional_call(models[0], (p, b), (x,)), in_dims=(0, 0, None))
for _ in range(200):
    loss = ((forward(params, buffers, x_train) - y_train) ** 2).sum() / (2 * y_train.numel())
    grads = torch.autograd.grad(loss, list(params.values()))
    with torch.no_grad():
        for p, grad in zip(params.values(), grads, strict=True):
            p -= lr * grad
with torch.no_grad():
    trained = forward(params, buffers, x_test)  # (TWINS, 11, k)
sd = closed.covariance.diagonal().sqrt()[:, None]
z = ((trained.mean(0) - closed.mean) / (sd / TWINS ** 0.5)).abs().max()
ratio = trained.var(0).mean(1) / closed.covariance.diagonal()
print(f"k=4, {TWINS} trained twins: largest |mean - closed form| {float(z):.2f} standard errors;"
      f" variance ratio {float(ratio.min()):.2f}..{float(ratio.max()):.2f}")

# %%
# ## Figures
#
# Left: models needed against `k`, with the best `c k log k` and `c k^2` through each curve.
# Right: trained networks' mean and standard deviation against the closed form.

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
ks = np.array(KS, dtype=float)
for i, (label, (o, a)) in enumerate(curves.items()):
    left.plot(ks, o, "o-", color=f"C{i}", ms=3, label=f"hardest single input ({label})")
    left.plot(ks, a, "s--", color=f"C{i}", ms=3, label=f"all inputs, union bound ({label})")
for shape, name, style in ((ks * np.log(ks), "k log k", ":"), (ks ** 2, "k^2", "-.")):
    c = np.exp(np.mean(np.log(every) - np.log(shape)))
    left.plot(ks, c * shape, "k" + style, lw=1, label=f"c {name} through all-inputs (no biases)")
left.plot(MC_KS, mc, "kx", ms=7, label="all inputs, exact Monte Carlo")
left.set(xscale="log", yscale="log", xlabel="k", ylabel=f"models for P(exact) >= {1 - DELTA}",
         title="Ensemble complexity (infinite width, exact Gaussian)")
left.legend(fontsize=7)
right.errorbar(closed.mean.flatten(), trained.mean(0).flatten(),
               yerr=(sd / TWINS ** 0.5).expand_as(closed.mean).flatten(), fmt="o", ms=3,
               label="mean of each output")
right.plot(sd.flatten(), trained.var(0).mean(1).sqrt(), "s", ms=4, label="sd per input")
lim = [float(closed.mean.min()) - 0.1, 1.05]
right.plot(lim, lim, "k-", lw=0.8)
right.set(xlabel="closed form", ylabel=f"{TWINS} trained networks (width 512)",
          title="k = 4: trained networks against the Gaussian")
right.legend(fontsize=8)
fig.tight_layout()
plt.show()
