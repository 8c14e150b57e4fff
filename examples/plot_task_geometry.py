"""
# Task structure and nonlinearity shape the learned geometry

**The paper.** Alleman, Lindsey & Fusi, "Task structure and nonlinearity jointly determine
learned representational geometry" (ICLR 2024), train one-hidden-layer networks on tasks whose
inputs and targets have controlled structure, and measure the kernel alignment of the hidden
layer with the target kernel and with the input kernel over training. Their claim (their
Figures 1 and 2, 20 networks per condition): **Tanh networks learn representations that
reflect the structure of the targets, ReLU networks keep more of the structure of the
inputs.** They trace it to the asymmetry of ReLU: a ReLU unit is silent on half of input
space, so units specialise to regions of the inputs, while Tanh units inherit the label
structure.

**Ours.** Five binary latent factors (all 32 combinations, 4 noisy samples each) embedded in
64 input dimensions by a random linear map; the targets are two of the five factors, so the
inputs carry three factors the task ignores. Width-256 one-hidden-layer Tanh and ReLU networks
start from the *same* weights (paired by seed) with a small readout, and are trained
full-batch by Adam on the squared error. We record linear CKA
(`ntkit.analysis.cka`) of the hidden activations with the targets `Y` ("target alignment")
and with the inputs `X` ("input alignment"); bands are 95% Student-t intervals over 10 seeds.
The computation is `ntkit.apps._repro_geometry.task_geometry`.

**Scale difference.** The paper varies the input-target alignment over a family of tasks,
uses widths of a few hundred, 20 networks and also deeper and convolutional networks; we run
one task of their structured kind, one hidden layer, 10 seeds. A second run with a readout of
standard size (`readout_std=1`, the network fits mostly through its readout, close to the lazy
regime) shows that the effect needs the hidden layer to learn.
"""

import os

import matplotlib.pyplot as plt

from ntkit.apps._repro_geometry import task_geometry

# NTKIT_EXAMPLES_SMALL=1 runs every example at a reduced size (the docs build test uses it).
SMALL = os.environ.get("NTKIT_EXAMPLES_SMALL") == "1"
SIZE = (dict(seeds=range(5), input_dim=32, width=64, repeats=2, steps=300, n_checkpoints=8,
             learning_rate=5e-3) if SMALL else
        dict(seeds=range(10), input_dim=64, width=256, repeats=4, steps=1000,
             n_checkpoints=12, learning_rate=2e-3))
TASK = dict(n_latent=5, n_relevant=2, noise=0.2)

# %%
# ## Training with a small readout (feature learning) and with a standard one
#
# Each seed draws one task and one set of initial weights, shared by Tanh and ReLU, so the
# differences below are paired.

rich = task_geometry(**TASK, **SIZE, readout_std=1e-3)
lazy = task_geometry(**TASK, **{**SIZE, "seeds": range(3) if SMALL else SIZE["seeds"]},
                     readout_std=1.0)

for label, record in (("rich", rich), ("lazy", lazy)):
    parts = []
    for measure in ("target_alignment", "input_alignment"):
        mean, low, high = record.difference(measure, "tanh", "relu")
        wins = int((record.__dict__[measure]["tanh"][:, -1]
                    > record.__dict__[measure]["relu"][:, -1]).sum())
        parts.append(f"{measure.replace('_', ' ')} {mean[-1]:+.3f} [{low[-1]:+.3f}, "
                     f"{high[-1]:+.3f}] (tanh higher in {wins}/{len(record.seeds)})")
    print(f"{label}: tanh - relu after {record.steps[-1]} steps over {len(record.seeds)} "
          f"seeds: " + ", ".join(parts))

# %%
# ## Alignment over training
#
# Left and middle: target and input alignment of the hidden layer (mean over seeds, 95%
# interval), small readout. Right: where each trained network ends, for both readouts
# (filled: small readout, open: standard readout).

fig, axes = plt.subplots(1, 3, figsize=(14, 4))
steps = [max(s, 0.5) for s in rich.steps]  # step 0 drawn at 0.5 on the log axis
for ax, measure, title in ((axes[0], "target_alignment", "alignment with the targets Y"),
                           (axes[1], "input_alignment", "alignment with the inputs X")):
    for i, activation in enumerate(rich.activations):
        mean, low, high = rich.interval(measure, activation)
        ax.plot(steps, mean, "o-", color=f"C{i}", ms=3, label=activation)
        ax.fill_between(steps, low, high, color=f"C{i}", alpha=0.25)
    ax.set(xscale="log", xlabel="Adam step (step 0 drawn at 0.5)", ylabel="linear CKA",
           title=title)
    ax.legend()
for i, activation in enumerate(rich.activations):
    for record, fill in ((rich, True), (lazy, False)):
        axes[2].scatter(record.input_alignment[activation][:, -1],
                        record.target_alignment[activation][:, -1], color=f"C{i}", s=25,
                        facecolors=f"C{i}" if fill else "none",
                        label=f"{activation}, {'small' if fill else 'standard'} readout")
axes[2].set(xlabel="input alignment (trained)", ylabel="target alignment (trained)",
            title="trained networks, one point per seed")
axes[2].legend(fontsize=8)
fig.tight_layout()
plt.show()
