"""The reproduction of Ortiz-Jiménez, Favero & Frossard (NeurIPS 2023) on scikit-learn's digits.

Their setting, scaled down: a pre-trained model (CLIP there; here a small CNN pre-trained on
upright 8x8 digits), fine-tuned on several tasks with its classification head frozen, both
plainly ("non-linear") and in its tangent space ("tangent", :func:`ntkit.linearize`). Each
fine-tuning task is the same ten-way digit classification on a transformed input domain
(rotations by 90, 180 or 270 degrees, a mirror image, the negative image), so that the tasks
have separate input supports, as their datasets do, and share the frozen head. Then:

- task addition: ``theta_0 + alpha sum_t tau_t``, ``alpha`` on a grid of ``[0, 1]`` chosen on
  a validation split for the best mean normalised accuracy (accuracy over the single-task
  fine-tuned model's), as the paper;
- task negation: ``theta_0 - alpha tau_t``, ``alpha`` in ``[0, 1]`` chosen on validation for
  the lowest target accuracy at a control accuracy (upright digits) of at least 95 % of the
  pre-trained model's, as the paper;
- the disentanglement error ``xi(a1, a2)`` of every pair of tasks on ``[-3, 3]^2``.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..datasets import load_digits
from ..empirical import linearize
from .tangent import TaskVector, disentanglement_error, finetune

__all__ = ["MODES", "TRANSFORMS", "TangentResult", "tangent_task_arithmetic"]

MODES = ("non-linear", "tangent")

#: Input domains of the fine-tuning tasks: maps of ``(N, 1, 8, 8)`` images.
TRANSFORMS = {
    "rot90": lambda x: torch.rot90(x, 1, (2, 3)),
    "rot180": lambda x: torch.rot90(x, 2, (2, 3)),
    "rot270": lambda x: torch.rot90(x, 3, (2, 3)),
    "mirror": lambda x: x.flip(3),
    "negative": lambda x: -x,
}


@dataclass(frozen=True)
class TangentResult:
    """Outcomes per seed; ``[mode]`` indexes by ``"non-linear"`` / ``"tangent"``, test accuracies
    are fractions.

    - ``tasks``, ``seeds``, ``alphas``: the task names, the seeds, the grid of ``xi``.
    - ``pretrained``: ``(S, T)`` the pre-trained model's accuracy on each task;
      ``control``: ``(S,)`` on upright digits.
    - ``single[mode]``: ``(S, T)`` each fine-tuned model on its own task.
    - ``addition_absolute[mode]``, ``addition_normalized[mode]``: ``(S,)`` the mean over tasks
      of the edited model's accuracy, absolute and over ``single``; ``addition_alpha[mode]``
      ``(S,)`` the chosen coefficients.
    - ``negation_target[mode]``, ``negation_control[mode]``: ``(S,)`` the means over tasks of
      the target and control accuracies after negation.
    - ``xi[mode]``: ``(S, P, A, A)`` the disentanglement error of each of the ``P`` pairs.
    """

    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    alphas: tuple[float, ...]
    pretrained: np.ndarray
    control: np.ndarray
    single: dict[str, np.ndarray]
    addition_absolute: dict[str, np.ndarray]
    addition_normalized: dict[str, np.ndarray]
    addition_alpha: dict[str, np.ndarray]
    negation_target: dict[str, np.ndarray]
    negation_control: dict[str, np.ndarray]
    xi: dict[str, np.ndarray]


def _cnn(width: int, generator: torch.Generator) -> nn.Module:
    """Two 3x3 convolutions, an average pool and a dense layer (the backbone), then a linear
    ten-way head."""
    backbone = nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(2 * width * 16, 4 * width), nn.ReLU())
    model = nn.Sequential(OrderedDict(backbone=backbone, head=nn.Linear(4 * width, 10)))
    with torch.no_grad():
        # torch's default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from
        # ``generator``.
        for layer in model.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                bound = layer.weight[0].numel() ** -0.5
                for p in (layer.weight, layer.bias):
                    p.uniform_(-bound, bound, generator=generator)
    return model


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return float((model(x).argmax(-1) == y).double().mean())


def tangent_task_arithmetic(*, seeds: Sequence[int] = (0, 1, 2, 3, 4),
                            tasks: Sequence[str] = ("rot90", "rot180", "rot270", "mirror"),
                            width: int = 16, pretrain_steps: int = 600,
                            finetune_steps: int = 200, lr: float = 3e-3,
                            tangent_lr: float = 3e-3, batch_size: int = 128,
                            n_alphas: int = 13, n_xi: int = 200,
                            pairs: int | None = None) -> TangentResult:
    """Run the reproduction at the given size (see the module docstring).

    ``n_alphas`` points on ``[-3, 3]`` per axis of ``xi``, evaluated on ``n_xi`` test inputs
    per task and on the first ``pairs`` pairs of tasks (default: all).
    """
    unknown = [t for t in tasks if t not in TRANSFORMS]
    if unknown or len(tasks) < 2:
        raise ValueError(f"tasks must name at least two of {sorted(TRANSFORMS)}; got {tasks!r}")
    task_pairs = list(itertools.combinations(range(len(tasks)), 2))[:pairs]
    grid = np.linspace(-3.0, 3.0, n_alphas)
    add_grid, neg_grid = np.linspace(0.0, 1.0, 21), np.linspace(0.0, 1.0, 11)
    S, T = len(seeds), len(tasks)
    pretrained, control = np.zeros((S, T)), np.zeros(S)
    single = {m: np.zeros((S, T)) for m in MODES}
    add_abs, add_norm, add_alpha, neg_target, neg_control = (
        {m: np.zeros(S) for m in MODES} for _ in range(5))
    xi = {m: np.zeros((S, len(task_pairs), n_alphas, n_alphas)) for m in MODES}

    for s, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(seed)
        split = load_digits(n_train=900, seed=seed, dtype=torch.float32, scaling="image")
        images = {"train": split.x_train.reshape(-1, 1, 8, 8),
                  "val": split.x_test[:300].reshape(-1, 1, 8, 8),
                  "test": split.x_test[300:].reshape(-1, 1, 8, 8)}
        labels = {"train": split.y_train, "val": split.y_test[:300], "test": split.y_test[300:]}
        data = {t: {k: TRANSFORMS[t](v) for k, v in images.items()} for t in tasks}

        model = finetune(_cnn(width, g), images["train"], labels["train"], steps=pretrain_steps,
                         lr=3e-3, batch_size=batch_size, generator=g).model
        model.requires_grad_(True)
        control[s] = _accuracy(model, images["test"], labels["test"])
        control_val = _accuracy(model, images["val"], labels["val"])
        pretrained[s] = [_accuracy(model, data[t]["test"], labels["test"]) for t in tasks]

        for mode in MODES:
            tangent = mode == "tangent"
            base = linearize(model, params="backbone") if tangent else model
            taus: list[TaskVector] = []
            single_val = []
            for i, t in enumerate(tasks):
                out = finetune(model, data[t]["train"], labels["train"], tangent=tangent,
                               params="backbone", steps=finetune_steps,
                               lr=tangent_lr if tangent else lr, batch_size=batch_size,
                               generator=g)
                taus.append(out.task_vector)
                single[mode][s, i] = _accuracy(out.model, data[t]["test"], labels["test"])
                single_val.append(_accuracy(out.model, data[t]["val"], labels["val"]))

            # Task addition: alpha for the best mean normalised validation accuracy.
            total = sum(taus)
            normalized = []
            for a in add_grid:
                edited = total.apply_to(base, alpha=a)
                normalized.append(np.mean([
                    _accuracy(edited, data[t]["val"], labels["val"]) / single_val[i]
                    for i, t in enumerate(tasks)]))
            best = add_grid[int(np.argmax(normalized))]
            edited = total.apply_to(base, alpha=best)
            acc = np.array([_accuracy(edited, data[t]["test"], labels["test"]) for t in tasks])
            add_alpha[mode][s] = best
            add_abs[mode][s] = acc.mean()
            add_norm[mode][s] = (acc / single[mode][s]).mean()

            # Task negation: the lowest target accuracy with the control kept at >= 95 %.
            targets, controls = [], []
            for i, t in enumerate(tasks):
                scores = {}
                for a in neg_grid:
                    edited = taus[i].apply_to(base, alpha=-a)
                    scores[a] = (_accuracy(edited, data[t]["val"], labels["val"]),
                                 _accuracy(edited, images["val"], labels["val"]))
                allowed = [a for a in neg_grid if scores[a][1] >= 0.95 * control_val]
                a = min(allowed, key=lambda a: scores[a][0])
                edited = taus[i].apply_to(base, alpha=-a)
                targets.append(_accuracy(edited, data[t]["test"], labels["test"]))
                controls.append(_accuracy(edited, images["test"], labels["test"]))
            neg_target[mode][s], neg_control[mode][s] = np.mean(targets), np.mean(controls)

            for p, (i, j) in enumerate(task_pairs):
                xi[mode][s, p] = disentanglement_error(
                    base, taus[i], taus[j], data[tasks[i]]["test"][:n_xi],
                    data[tasks[j]]["test"][:n_xi], alphas1=grid, alphas2=grid).numpy()

    return TangentResult(tuple(tasks), tuple(seeds), tuple(grid.tolist()), pretrained,
                         control, single, add_abs, add_norm, add_alpha, neg_target,
                         neg_control, xi)
