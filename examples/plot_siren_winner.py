"""
# SIREN, WINNER and the spectral bottleneck

**Papers.** Sitzmann et al., "Implicit Neural Representations with Periodic Activation
Functions" (NeurIPS 2020): SIREN, `sin(omega_0 (W x + b))` layers with uniform weights
(`ntkit.layers.siren`, whose infinite-width NNGP/NTK its finite twin matches). Chandravamsi et
al., "Spectral Bottleneck in Deep Neural Networks: Noise is All You Need" (arXiv:2509.09719,
2025): a SIREN fitted to a signal with little low-frequency energy stalls (the "spectral
bottleneck"); WINNER adds Gaussian noise to the first two weight matrices, of scales
`s_0 = s0_max (1 - exp(-a xi / C))` and `s_1 = b xi / C` set by the target's spectral
centroid `xi` (`ntkit.layers.winner_init_`). **Their claim:** the noise moves the empirical
NTK's eigenbasis toward the target's frequencies, removes the bottleneck and fits faster and
better (PSNR vs iterations on audio clips, eNTK eigenvectors and activation spectra at init).

**Ours.** A broadband 1-D signal (flat spectrum from 0.3 to 0.9 of Nyquist, none below) and
scikit-learn's `china.jpg` in grey, fitted by SIREN and by SIREN + WINNER from the same draw
(Adam, learning rate 1e-4, full batch, `omega_0 = 30`), per seed: PSNR against steps; and at
init the eNTK's spectrum (`ntkit.empirical_ntk`, `ntkit.analysis.spectrum`) with the share of
the target's energy in its top eigenvectors. `s0_max` is rescaled from the paper's 3500
(audio with tens of thousands of samples) to 150 for our grid, whose Nyquist is
`pi N / 2` rad per unit; `a = 7`, `b = 3` are the paper's. Beside the eNTKs, the
infinite-width NTK of the same SIREN spec (`spec.kernel`; exact for SIREN's uniform first layer
on 1-D and 2-D coordinates alike, a product of sincs over the coordinates), and the same
with Gaussian first-layer weights of equal variance.

**What we find** (full size, 3 seeds, 69 s on 2 cores): on the broadband signal the
eigenbasis claim holds (the share of the target's energy in the eNTK's top 32 eigenvectors at
init is 0.002 for SIREN and 0.144 for WINNER) and WINNER escapes the bottleneck at once
(PSNR 43.5 vs 15.7 dB at step 150); with enough steps plain SIREN catches up at this small
size (55.5 vs 54.5 dB at step 600), so the paper's lasting gap, measured on long audio, is not
reproduced here. On the image (centroid 0.32, mostly low frequencies) WINNER puts *less* of
the target in the top eigenvectors (0.16 vs 0.42), starts slower (17.2 vs 21.1 dB at step
75) and ends higher (52.1 vs 39.9 dB at step 300). The infinite-width NTK of the SIREN puts
0.64 of the image in its top 32 eigenvectors, more than the width-64 eNTK (0.42: at this
width the eNTK is still far from its limit); with Gaussian first-layer weights of the same
variances the limit would put 0.90 there. The uniform first layer spreads its power evenly
over frequencies up to `omega_0 / d` per axis (its kernel is a product of sincs, whose
spectrum is flat up to that cut-off) where the Gaussian one concentrates it at low
frequencies, which hold most of this image. On the broadband signal both limits, like
SIREN's eNTK, hold 0.002 of the target there.

**Scale:** a 1-D signal of 512 samples and a 32 x 32 image with three hidden layers of 64
units, against audio of ~10^5 samples and 256-unit networks in the paper.
"""

import os

import matplotlib.pyplot as plt
import numpy as np

from ntkit.apps._repro_siren import broadband_signal, grey_image, siren_vs_winner

# NTKIT_EXAMPLES_SMALL=1 runs every example at a reduced size (the docs build test uses it).
SMALL = os.environ.get("NTKIT_EXAMPLES_SMALL") == "1"
N = 128 if SMALL else 512
SIDE = 16 if SMALL else 32
WIDTH = 32 if SMALL else 64
SEEDS = 2 if SMALL else 3
STEPS = 60 if SMALL else 600

# %%
# ## The two fits
signal = broadband_signal(N)
image = grey_image(SIDE)
runs = {
    "broadband 1-D": siren_vs_winner(signal, dims=1, widths=(WIDTH,) * 3, steps=STEPS,
                                     seeds=SEEDS, s0_max=150.0, ntk_points=min(N, 256),
                                     top_k=32 if not SMALL else 16),
    "china.jpg": siren_vs_winner(image, dims=2, widths=(WIDTH,) * 3, steps=STEPS // 2,
                                 seeds=SEEDS, s0_max=150.0, ntk_points=min(SIDE**2, 256),
                                 top_k=32 if not SMALL else 16),
}
run_dims = {"broadband 1-D": 1, "china.jpg": 2}
for name, run in runs.items():
    p = run.psnr.mean(0)
    mid = len(run.steps) // 4
    print(f"{name}: centroid {run.centroid:.3f}, noise s0 = {run.noise[0]:.1f}, "
          f"s1 = {run.noise[1]:.2f}")
    print(f"siren-winner {name}: top-{run.top_k} eNTK energy SIREN {run.energy[:, 0].mean():.3f}"
          f" WINNER {run.energy[:, 1].mean():.3f}; PSNR at step {run.steps[mid]} SIREN "
          f"{p[0, mid]:.1f} WINNER {p[1, mid]:.1f} dB; at step {run.steps[-1]} SIREN "
          f"{p[0, -1]:.1f} WINNER {p[1, -1]:.1f} dB")
    print(f"siren-winner {name}: infinite-width NTK of the same SIREN, top-{run.top_k} energy "
          f"{run.limit_energy[0]:.3f} (uniform first layer, d = {run_dims[name]}) vs "
          f"{run.limit_energy[1]:.3f} (Gaussian first layer of the same variances)")

# %%
# ## The figure
#
# Top: PSNR against Adam steps (mean and per-seed range). Bottom: the eNTK's spectrum at
# init, seed 0, and the spectrum of the infinite-width NTK of the same SIREN (`spec.kernel`,
# exact for the uniform first layer on 1-D and 2-D coordinates alike).
fig, axes = plt.subplots(2, 2, figsize=(10, 7))
for col, (name, run) in enumerate(runs.items()):
    ax = axes[0, col]
    for arm, label in enumerate(("SIREN", "WINNER")):
        ax.plot(run.steps, run.psnr[:, arm].mean(0), label=label)
        ax.fill_between(run.steps, run.psnr[:, arm].min(0), run.psnr[:, arm].max(0),
                        alpha=0.2)
    ax.set(title=name, xlabel="Adam step", ylabel="PSNR (dB)")
    ax.legend()
    ax = axes[1, col]
    for arm, label in enumerate(("SIREN", "WINNER")):
        ev = run.eigenvalues[arm]
        ax.loglog(np.arange(1, len(ev) + 1), np.maximum(ev, 1e-12) / ev[0], label=label)
    ev = run.limit_eigenvalues[0]
    ax.loglog(np.arange(1, len(ev) + 1), np.maximum(ev, 1e-12) / ev[0], "k--",
              label="infinite width")
    ax.set(xlabel="eigenvalue index", ylabel="NTK eigenvalue / largest")
    ax.legend()
fig.tight_layout()
plt.show()
