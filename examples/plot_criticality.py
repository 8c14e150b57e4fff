"""
# Criticality and the leading finite-width correction

Roberts, Yaida & Hanin (*The Principles of Deep Learning Theory*, 2022, ch. 4-5) expand a
deep MLP at initialization in 1/width. At infinite width each pre-activation is Gaussian with
variance `K^(l)`; at width `n` the leading non-Gaussianity is the four-point vertex `V^(l)`,
with fourth cumulant `E[z^4] - 3 E[z^2]^2 = 3 V^(l) / n`. At **criticality**
(`chi_parallel = chi_perp = 1`: ReLU at `C_W = 2`, tanh at `C_W = 1`, `C_b = 0`) the kernel
neither explodes nor collapses exponentially, and `V / K^2` grows **linearly in depth**
(ReLU: exactly `5 (l - 1)`; tanh: about `2 l / 3`), so the relevant expansion parameter is
depth/width. Off criticality the kernel relaxes to its fixed point `K*` exponentially, at
rate `chi_parallel(K*)` per layer.

**The book's claim** (its figures in ch. 4-5 are sketches; the quantitative statement is
the recursion): Monte Carlo of finite networks follows `3 V / n` for `l / n` small.
**Ours:** `ntkit.theory.kernel_recursion` against Monte Carlo of finite MLPs (the exact
single-input law, sampled layer by layer) at widths 64-512 and depths up to 20, 4000
networks each. The leading order holds while `5 l / n` is small; at width 64 and depth 20
it underestimates the cumulant by half, and the exact ReLU law `3 ((1 + 5/n)^(l-1) - 1)`
takes over — the expansion parameter really is depth/width.
"""

import os

import matplotlib.pyplot as plt
import torch

from ntkit.apps._repro_criticality import preactivation_moments
from ntkit.theory import criticality, kernel_recursion, susceptibilities

# NTKIT_EXAMPLES_SMALL=1 runs every example at a reduced size (the docs build test uses it).
SMALL = os.environ.get("NTKIT_EXAMPLES_SMALL") == "1"
WIDTHS = (64, 512) if SMALL else (64, 128, 256, 512)
DEPTH = 10 if SMALL else 20
NETWORKS = 1000 if SMALL else 4000

# %%
# ## Critical initializations
#
# `criticality` finds `(C_b, C_W)` from the activation's own Gaussian expectations.

for name in ("relu", "tanh", "erf", "gelu"):
    c = criticality(name)
    print(f"{name:>5}: C_b = {c.C_b:.5f}, C_W = {c.C_W:.5f}, K* = {c.K_star}, "
          f"class {c.universality}")

# %%
# ## The fourth cumulant against depth/width at criticality
#
# Each point is the Monte Carlo `n kappa_4 / (3 K^2)` of one layer; the line is the
# recursion's `V / K^2`, the same for every width at leading order.

ell = torch.arange(1, DEPTH + 1, dtype=torch.float64)
results = {}
for name, c_w in (("relu", 2.0), ("tanh", 1.0)):
    rec = kernel_recursion(name, DEPTH, C_W=c_w, K0=1.0)
    for width in WIDTHS:
        g = torch.Generator().manual_seed(width)
        mc = preactivation_moments(name, width=width, depth=DEPTH, C_W=c_w, K0=1.0,
                                   n_networks=NETWORKS, generator=g)
        results[name, width] = (rec, mc)
        scaled = width * mc.kappa4 / (3 * mc.K**2)
        err = width * mc.kappa4_se / (3 * mc.K**2)
        print(f"{name} width {width:>3} depth {DEPTH}: n kappa4 / 3K^2 = "
              f"{scaled[-1]:.2f} +- {err[-1]:.2f} (leading order {rec.V[-1] / rec.K[-1]**2:.2f})")

# %%
# ## Off criticality: exponential approach to the fixed point
#
# tanh at `C_W = 1.5, C_b = 0.1` from `K^(1) = 0.8`: `K - K*` shrinks by `chi_parallel(K*)`
# per layer once near `K*`.

off = kernel_recursion("tanh", 40, C_W=1.5, C_b=0.1, K0=0.8)
k_star = float(off.K[-1])
chi = susceptibilities("tanh", k_star, C_W=1.5)[0]
mc_off = preactivation_moments("tanh", width=512, depth=12, C_W=1.5, C_b=0.1, K0=0.8,
                               n_networks=NETWORKS, generator=torch.Generator().manual_seed(7))
print(f"off criticality: K* = {k_star:.4f}, predicted rate chi_parallel(K*) = {chi:.4f}, "
      f"recursion's ratio at layer 20 = {float((off.K[20] - k_star) / (off.K[19] - k_star)):.4f}")

fig, axes = plt.subplots(1, 3, figsize=(14, 4))
for ax, name in zip(axes[:2], ("relu", "tanh"), strict=True):
    for width in WIDTHS:
        rec, mc = results[name, width]
        scaled = width * mc.kappa4 / (3 * mc.K**2)
        err = width * mc.kappa4_se / (3 * mc.K**2)
        ax.errorbar(ell, scaled, yerr=err, fmt="o", ms=3, label=f"MC, width {width}")
    ax.plot(ell, rec.V / rec.K**2, "k-", label="leading order V/K^2")
    if name == "relu":
        for width in WIDTHS:
            exact = width * ((1 + 5 / width) ** (ell - 1) - 1) / 3
            ax.plot(ell, exact, ":", color="gray")
        ax.plot([], [], ":", color="gray", label="exact ReLU law")
    ax.set(xlabel="layer l", ylabel="n kappa_4 / (3 K^2)", title=f"{name} at criticality")
    ax.legend(fontsize=7)
ax = axes[2]
lay = torch.arange(1, 13)
ax.semilogy(lay, (mc_off.K - k_star).abs(), "o", label="MC, width 512")
ax.semilogy(torch.arange(1, 41), (off.K - k_star).abs(), "-", label="recursion")
ax.semilogy(lay, (off.K[5] - k_star) * chi ** (lay - 6.0), "--", label="rate chi_parallel(K*)")
ax.set(xlabel="layer l", ylabel="|K - K*|", title="tanh off criticality", ylim=(1e-5, 1))
ax.legend(fontsize=7)
fig.tight_layout()
plt.show()
