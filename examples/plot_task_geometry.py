"""
# Task structure and nonlinearity shape the learned geometry

**The paper.** Alleman, Lindsey & Fusi, "Task structure and nonlinearity jointly determine
learned representational geometry" (ICLR 2024), train one-hidden-layer networks on tasks whose
inputs and targets have controlled structure, and measure the kernel alignment of the hidden
layer with the target kernel and with the input kernel over training (their Figure 1B for a
binary task, standard deviations over 20 networks, then a family of structured tasks). Their
claim: **Tanh networks learn representations that reflect the structure of the targets, ReLU
networks keep more of the structure of the inputs.** They trace it to the asymmetry of ReLU:
a ReLU unit is silent on half of input space, so units specialise to regions of the inputs,
while Tanh units inherit the label structure.

**Ours.** Five binary latent factors (all 32 combinations, 4 noisy samples each) embedded in
64 input dimensions by a random linear map; the targets are two of the five factors, so the
inputs carry three factors the task ignores. One-hidden-layer Tanh and ReLU networks start
from the *same* weights (paired by seed) with a small readout and are trained full-batch by
Adam on the squared error. We record linear CKA (`ntkit.analysis.cka`) of the hidden
activations with the targets `Y` ("target alignment") and with the inputs `X` ("input
alignment"); bands are 95% Student-t intervals over 10 seeds. The computation is
`ntkit.apps._repro_geometry.task_geometry`.

**Result.** At width 64 the claim holds on every seed: after 1000 steps Tanh minus ReLU is
+0.083 [0.072, 0.094] in target alignment (Tanh 0.98, ReLU 0.90) and -0.103 [-0.120, -0.086]
in input alignment (Tanh 0.72, ReLU 0.82), 10/10 seeds each way. Tanh starts *closer* to the
inputs (it is nearly linear near 0) and loses 0.24 of it in training against ReLU's 0.09.
The effect needs the hidden layer to learn: at width 256 (same optimiser, so the readout fits
faster and the hidden layer moves less) the target gap shrinks to +0.064 [0.051, 0.078] and the
input gap vanishes (+0.001 [-0.005, 0.008]; Tanh still loses more of it, 0.035 against
0.014); with a readout of standard size (near-lazy) neither gap is there (target -0.010
[-0.043, 0.024]; input +0.041 for Tanh, the order at initialisation).

**Scale difference.** The paper sweeps a family of tasks with varying input-target alignment,
uses 20 networks per condition and also deeper and convolutional networks; we run one task of
their structured kind, one hidden layer, 10 seeds (5 at the docs' reduced size, at width 64,
300 steps), and three training regimes.
"""

import os

import matplotlib.pyplot as plt

from ntkit.apps._repro_geometry import task_geometry

# NTKIT_EXAMPLES_SMALL=1 runs every example at a reduced size (the docs build test uses it).
SMALL = os.environ.get("NTKIT_EXAMPLES_SMALL") == "1"
TASK = dict(n_latent=5, n_relevant=2, noise=0.2)
SIZE = (dict(seeds=range(5), input_dim=32, repeats=2, steps=300, n_checkpoints=8,
             learning_rate=5e-3) if SMALL else
        dict(seeds=range(10), input_dim=64, repeats=4, steps=1000, n_checkpoints=12,
             learning_rate=2e-3))
OTHERS = dict(seeds=range(2)) if SMALL else {}  # the two comparison runs

# %%
# ## Three trainings of the same tasks
#
# Each seed draws one task and one set of initial weights, shared by Tanh and ReLU, so the
# differences below are paired. The main run (width 64, small readout) learns features; the
# two others are lazier: a wider hidden layer (under Adam every readout weight moves by about
# the learning rate per step, so the readout fits `width` times faster and the hidden layer
# has less to do), and a readout of standard size.

runs = {
    "width 64, small readout": task_geometry(**TASK, **SIZE, width=64, readout_std=1e-3),
    "width 256, small readout": task_geometry(**TASK, **{**SIZE, **OTHERS}, width=256,
                                              readout_std=1e-3),
    "width 64, standard readout": task_geometry(**TASK, **{**SIZE, **OTHERS}, width=64,
                                                readout_std=1.0),
}

for label, record in runs.items():
    parts = []
    for measure in ("target_alignment", "input_alignment"):
        mean, low, high = record.difference(measure, "tanh", "relu")
        values = getattr(record, measure)
        wins = int((values["tanh"][:, -1] > values["relu"][:, -1]).sum())
        parts.append(f"{measure.replace('_', ' ')} {mean[-1]:+.3f} [{low[-1]:+.3f}, "
                     f"{high[-1]:+.3f}] (tanh higher in {wins}/{len(record.seeds)})")
    print(f"{label}: tanh - relu after {record.steps[-1]} steps over {len(record.seeds)} "
          f"seeds: " + ", ".join(parts))
    # Tanh starts closer to the inputs (it is nearly linear near 0): what training removed.
    lost = {a: record.input_alignment[a][:, 0] - record.input_alignment[a][:, -1]
            for a in record.activations}
    print(f"{label}: input alignment lost in training: tanh {lost['tanh'].mean():.3f}, "
          f"relu {lost['relu'].mean():.3f} (tanh lost more in "
          f"{int((lost['tanh'] > lost['relu']).sum())}/{len(record.seeds)})")

# %%
# ## Alignment over training
#
# Left and middle: target and input alignment of the hidden layer in the main run (mean over
# seeds, 95% interval). Right: where each trained network ends, in all three runs.

main = runs["width 64, small readout"]
fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
steps = [max(s, 0.5) for s in main.steps]  # step 0 drawn at 0.5 on the log axis
for ax, measure, title in ((axes[0], "target_alignment", "alignment with the targets Y"),
                           (axes[1], "input_alignment", "alignment with the inputs X")):
    for i, activation in enumerate(main.activations):
        mean, low, high = main.interval(measure, activation)
        ax.plot(steps, mean, "o-", color=f"C{i}", ms=3, label=activation)
        ax.fill_between(steps, low, high, color=f"C{i}", alpha=0.25)
    ax.set(xscale="log", xlabel="Adam step (step 0 drawn at 0.5)", ylabel="linear CKA",
           title=f"{title} (width 64)")
    ax.legend()
for i, activation in enumerate(main.activations):
    for (label, record), marker in zip(runs.items(), "o^s", strict=True):
        filled = record is main
        axes[2].scatter(record.input_alignment[activation][:, -1],
                        record.target_alignment[activation][:, -1], marker=marker, s=25,
                        color=f"C{i}", facecolors=f"C{i}" if filled else "none",
                        label=f"{activation}, {label}")
axes[2].set(xlabel="input alignment (trained)", ylabel="target alignment (trained)",
            title="trained networks, one point per seed")
axes[2].legend(fontsize=7)
fig.tight_layout()
plt.show()
