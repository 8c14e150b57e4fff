"""Task arithmetic, and task arithmetic in the tangent space.

A *task vector* is the difference ``tau = theta_ft - theta_0`` between the weights of a model
fine-tuned on a task and those of the pre-trained model (Ilharco et al., "Editing Models with
Task Arithmetic", ICLR 2023). Adding task vectors to ``theta_0`` builds a multi-task model;
subtracting one makes the model forget its task.

Ortiz-Jiménez, Favero & Frossard ("Task Arithmetic in the Tangent Space: Improved Editing of
Pre-Trained Models", NeurIPS 2023) explain when this works by *weight disentanglement*: each
task vector changes the function only on its own task's inputs. They measure it with the
disentanglement error of two tasks, with ``dist`` the prediction disagreement
``1[argmax y != argmax y']`` for classifiers,

``xi(a1, a2) = sum_{t=1,2} E_{x ~ mu_t} dist(f(x; theta_0 + a_t tau_t),
f(x; theta_0 + a1 tau1 + a2 tau2))``,

and show that fine-tuning the *linearised* model ``f(x; theta_0) + J(x; theta_0)(theta -
theta_0)`` (:func:`ntkit.linearize`) gives task vectors that are more disentangled, so task
addition and negation work better. :func:`finetune` does either kind of fine-tuning and
returns the task vector; :meth:`TaskVector.apply_to` edits a plain or a linearised model;
:func:`disentanglement_error` computes ``xi`` on a grid of coefficients.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..empirical import linearize
from ..empirical._linearize import _Expansion
from ..empirical._model import ParamSpec, select_params

__all__ = ["FineTuned", "TaskVector", "disentanglement_error", "finetune"]


def _editable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters a task vector refers to, by name: a linearised model's are those of the
    model it expands (without the ``module.`` prefix), so that plain and tangent models share
    names."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    inner = model.module if isinstance(model, _Expansion) else model
    return dict(inner.named_parameters())


def _scalar(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) and not (
            isinstance(value, Tensor) and value.numel() == 1):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    return value


class TaskVector(Mapping[str, Tensor]):
    """A task vector: parameter name -> the change of that parameter tensor.

    Task vectors form a vector space: ``tau1 + tau2``, ``tau1 - tau2``, ``-tau``,
    ``alpha * tau`` and ``sum([tau1, tau2, ...])`` give new task vectors (sums need the same
    names and shapes). Build one with :meth:`from_models` or :func:`finetune`; use it with
    :meth:`apply_to`.

    **Arguments:**

    - ``deltas``: a non-empty mapping from parameter names (as in
      ``model.named_parameters()``) to finite tensors; they are detached and copied.

    Example:
        >>> import torch
        >>> from ntkit.apps.tangent import TaskVector
        >>> tau = TaskVector({"weight": torch.tensor([1.0, 2.0])})
        >>> (2 * tau - tau)["weight"]
        tensor([1., 2.])
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.zero_()
        >>> TaskVector({"weight": torch.ones(1, 2)}).apply_to(model, alpha=0.5).weight
        Parameter containing:
        tensor([[0.5000, 0.5000]], requires_grad=True)
    """

    def __init__(self, deltas: Mapping[str, Tensor]):
        if not isinstance(deltas, Mapping):
            raise TypeError(f"deltas must be a mapping from parameter names to tensors; "
                            f"got {type(deltas).__name__}")
        if not deltas:
            raise ValueError("deltas is empty; a task vector needs at least one parameter")
        self._deltas: dict[str, Tensor] = {}
        for name, delta in deltas.items():
            if not isinstance(name, str):
                raise TypeError(f"deltas: names must be str; got {name!r}")
            if not isinstance(delta, Tensor) or not delta.is_floating_point():
                raise TypeError(f"deltas[{name!r}] must be a floating-point tensor; got "
                                f"{type(delta).__name__}")
            if not bool(torch.isfinite(delta).all()):
                raise ValueError(f"deltas[{name!r}] has NaN or infinite entries")
            self._deltas[name] = delta.detach().clone()

    @classmethod
    def from_models(cls, pretrained: nn.Module, finetuned: nn.Module) -> TaskVector:
        """``theta_finetuned - theta_pretrained``, parameter by parameter.

        Either model may be linearised (:func:`ntkit.linearize`); a linearised one counts
        with the parameters ``p`` of the model it expands, so the task vector of a tangent
        fine-tuning is ``p - p0``. Both must have the same parameter names and shapes.
        """
        old, new = _editable(pretrained), _editable(finetuned)
        if old.keys() != new.keys():
            only_old, only_new = sorted(old.keys() - new.keys()), sorted(new.keys() - old.keys())
            raise ValueError(f"pretrained and finetuned have different parameter names: only in "
                             f"pretrained {only_old[:5]}, only in finetuned {only_new[:5]}")
        for name in old:
            if old[name].shape != new[name].shape:
                raise ValueError(f"parameter {name!r} has shape {tuple(old[name].shape)} in "
                                 f"pretrained and {tuple(new[name].shape)} in finetuned")
        with torch.no_grad():
            return cls({name: new[name] - old[name] for name in old})

    def __getitem__(self, name: str) -> Tensor:
        return self._deltas[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._deltas)

    def __len__(self) -> int:
        return len(self._deltas)

    # Identity, not Mapping's entry-wise comparison (tensors have no single truth value).
    def __eq__(self, other) -> bool:
        return self is other

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"TaskVector({len(self)} tensors, {self.numel()} entries, norm={self.norm():.4g})"

    def numel(self) -> int:
        """The number of entries over all tensors."""
        return sum(d.numel() for d in self._deltas.values())

    def norm(self) -> float:
        """The Euclidean norm over all entries."""
        return math.sqrt(sum(float((d.double() ** 2).sum()) for d in self._deltas.values()))

    def _check_same(self, other: TaskVector) -> None:
        if self.keys() != other.keys():
            raise ValueError(f"task vectors with different parameter names: only in the first "
                             f"{sorted(self.keys() - other.keys())[:5]}, only in the second "
                             f"{sorted(other.keys() - self.keys())[:5]}")
        for name, d in self._deltas.items():
            if d.shape != other[name].shape:
                raise ValueError(f"parameter {name!r} has shape {tuple(d.shape)} in one task "
                                 f"vector and {tuple(other[name].shape)} in the other")

    def __add__(self, other) -> TaskVector:
        if not isinstance(other, TaskVector):
            return NotImplemented
        self._check_same(other)
        return TaskVector({n: d + other[n].to(d) for n, d in self._deltas.items()})

    def __radd__(self, other) -> TaskVector:
        # ``sum(task_vectors)`` starts from the integer 0.
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def __neg__(self) -> TaskVector:
        return TaskVector({n: -d for n, d in self._deltas.items()})

    def __sub__(self, other) -> TaskVector:
        if not isinstance(other, TaskVector):
            return NotImplemented
        return self + (-other)

    def __mul__(self, alpha) -> TaskVector:
        if isinstance(alpha, TaskVector):
            return NotImplemented
        alpha = _scalar(alpha, "alpha")
        return TaskVector({n: alpha * d for n, d in self._deltas.items()})

    __rmul__ = __mul__

    def apply_to(self, model: nn.Module, *, alpha: float = 1.0,
                 inplace: bool = False) -> nn.Module:
        """The model with ``alpha * tau`` added to its parameters.

        On a linearised model (:func:`ntkit.linearize` of the pre-trained model, whose
        parameters start at ``p0``) this gives the tangent-space edit
        ``f(x; p0) + alpha J(x; p0) tau``.

        **Arguments:**

        - ``model``: an ``nn.Module`` (plain or linearised) whose parameters include every
          name of the task vector, with the same shapes.
        - ``alpha``: the finite scaling coefficient.
        - ``inplace``: ``False`` (default) edits and returns a deep copy, leaving ``model``
          unchanged; ``True`` adds to ``model``'s own parameters and returns ``model``.

        **Returns:** the edited ``nn.Module``.
        """
        alpha = _scalar(alpha, "alpha")
        params = _editable(model)
        missing = sorted(self.keys() - params.keys())
        if missing:
            raise ValueError(f"model has no parameters named {missing[:5]} (of the task "
                             f"vector's {len(self)}); its parameters include "
                             f"{list(params)[:5]}")
        for name, d in self._deltas.items():
            if params[name].shape != d.shape:
                raise ValueError(f"parameter {name!r} has shape {tuple(params[name].shape)} in "
                                 f"model and {tuple(d.shape)} in the task vector")
        if isinstance(model, _Expansion):
            frozen = [n for n in self if n not in model._names and bool(self[n].any())]
            if frozen:
                raise ValueError(f"the task vector changes {frozen[:5]}, which the linearised "
                                 f"model holds constant (not in its params=)")
        if not inplace:
            model = copy.deepcopy(model)
            params = _editable(model)
        with torch.no_grad():
            for name, d in self._deltas.items():
                params[name].add_(d.to(params[name]), alpha=alpha)
        return model


@dataclass(frozen=True)
class FineTuned:
    """The outcome of :func:`finetune`.

    - ``model``: the fine-tuned copy (a linearised model for ``tangent=True``).
    - ``task_vector``: its parameters minus the pre-trained ones.
    - ``losses``: the training loss of each step, ``(steps,)``.
    """

    model: nn.Module
    task_vector: TaskVector
    losses: tuple[float, ...]


def finetune(model: nn.Module, x: Tensor, y: Tensor, *, tangent: bool = False,
             params: ParamSpec = None, steps: int = 100, lr: float = 1e-3,
             weight_decay: float = 0.0, batch_size: int | None = None,
             generator: torch.Generator | None = None) -> FineTuned:
    """Fine-tune a copy of ``model`` on one task, plainly or in its tangent space.

    AdamW with a cosine-annealed learning rate (the optimiser of Ortiz-Jiménez et al.), on the
    cross-entropy for integer labels and the halved squared error for real targets.

    **Arguments:**

    - ``model``: the pre-trained ``nn.Module``; it is not changed.
    - ``x``: inputs ``(N, *features)``, ``N >= 1``, finite.
    - ``y``: ``(N,)`` integer class labels, or real targets ``(N, *out)`` shaped like the
      model's outputs.
    - ``tangent``: ``False`` trains the model itself; ``True`` trains
      ``ntkit.linearize(model, params=params)``, the linearised model, whose task vector is
      ``p - p0``.
    - ``params``: which parameters are trained (and linearised), as in
      :func:`ntkit.empirical_ntk`; the others stay at their pre-trained values (e.g. a frozen
      classification head, as in the paper).
    - ``steps``, ``lr``, ``weight_decay``: optimiser steps (``>= 1``), peak learning rate
      (``> 0``), AdamW weight decay (``>= 0``).
    - ``batch_size``: minibatch size (default: the whole set); batches are drawn without
      replacement by ``generator``.

    **Returns:** a :class:`FineTuned` with the model, its :class:`TaskVector` and the losses.

    Example:
        >>> import torch
        >>> from ntkit.apps.tangent import finetune
        >>> g = torch.Generator().manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(),
        ...                             torch.nn.Linear(16, 2))
        >>> x, y = torch.randn(32, 3, generator=g), torch.randint(0, 2, (32,), generator=g)
        >>> out = finetune(model, x, y, tangent=True, steps=50, lr=1e-2, params="0")
        >>> out.losses[-1] < out.losses[0], sorted(out.task_vector)
        (True, ['0.bias', '0.weight', '2.bias', '2.weight'])
        >>> float(out.task_vector["2.weight"].abs().max())   # the head was frozen
        0.0
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("x and y must be tensors")
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"x must hold at least one example; got shape {tuple(x.shape)}")
    if len(y) != len(x):
        raise ValueError(f"y must have one entry per example of x ({len(x)}); got {len(y)}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("x has NaN or infinite entries")
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("y has NaN or infinite entries")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    if not _scalar(lr, "lr") > 0:
        raise ValueError(f"lr must be positive; got {lr}")
    if not _scalar(weight_decay, "weight_decay") >= 0:
        raise ValueError(f"weight_decay must be non-negative; got {weight_decay}")
    n = len(x)
    batch_size = n if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    batch_size = min(batch_size, n)

    if tangent:
        trained = linearize(model, params=params)
    else:
        trained = copy.deepcopy(model)
        selected = select_params(model, params)
        chosen = {name for name, p in model.named_parameters() if id(p) in selected}
        for name, p in trained.named_parameters():
            p.requires_grad_(name in chosen)
    weights = [p for p in trained.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(weights, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    classify = not y.is_floating_point()
    order = torch.empty(0, dtype=torch.long)
    losses = []
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.randperm(n, generator=generator)
        batch, order = order[:batch_size], order[batch_size:]
        out = trained(x[batch])
        if classify:
            loss = nn.functional.cross_entropy(out, y[batch])
        else:
            loss = 0.5 * ((out - y[batch]) ** 2).sum() / len(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    trained.requires_grad_(False)
    return FineTuned(trained, TaskVector.from_models(model, trained), tuple(losses))


def _predictions(out: Tensor) -> Tensor:
    # Classifiers: the arg-max class; one output: its sign.
    if out.ndim == 1 or out.shape[-1] == 1:
        return (out.reshape(len(out)) > 0).long()
    return out.reshape(len(out), -1).argmax(-1)


def _check_alphas(alphas, name: str) -> list[float]:
    if isinstance(alphas, Tensor) or type(alphas).__name__ == "ndarray":
        alphas = alphas.reshape(-1).tolist()
    if not isinstance(alphas, Sequence) or len(alphas) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of numbers; got {alphas!r}")
    return [_scalar(a, name) for a in alphas]


@torch.no_grad()
def disentanglement_error(model: nn.Module, tau1: TaskVector, tau2: TaskVector, x1: Tensor,
                          x2: Tensor, *, alphas1: Sequence[float],
                          alphas2: Sequence[float]) -> Tensor:
    """The weight disentanglement error ``xi(a1, a2)`` of two task vectors (Ortiz-Jiménez et
    al. 2023) on a grid of coefficients.

    ``xi(a1, a2) = P_{x ~ x1}[pred(x; theta_0 + a1 tau1) != pred(x; theta_0 + a1 tau1 + a2
    tau2)] + P_{x ~ x2}[pred(x; theta_0 + a2 tau2) != pred(x; theta_0 + a1 tau1 + a2 tau2)]``:
    how often adding the other task's vector changes a task's predictions on that task's own
    inputs. ``0`` is perfect disentanglement; the largest value is ``2``. ``pred`` is the
    arg-max over the last output axis (the sign for one output).

    **Arguments:**

    - ``model``: the pre-trained model ``theta_0``, plain or linearised (the tangent model,
      whose outputs are affine in the coefficients, so three passes give the whole grid).
      The two tasks share its output space (e.g. one frozen head).
    - ``tau1``, ``tau2``: the two :class:`TaskVector` s.
    - ``x1``, ``x2``: inputs of task 1 ``(N1, *features)`` and task 2 ``(N2, *features)``,
      each non-empty (samples of ``mu_1`` and ``mu_2``).
    - ``alphas1``, ``alphas2``: the coefficients ``a1`` (``A1`` of them) and ``a2`` (``A2``).

    **Returns:** ``xi`` as a float64 tensor ``(A1, A2)``.

    Example:
        >>> import torch
        >>> from ntkit.apps.tangent import TaskVector, disentanglement_error
        >>> model = torch.nn.Linear(2, 2, bias=False)
        >>> tau1 = TaskVector({"weight": torch.tensor([[1.0, 0.0], [0.0, 0.0]])})
        >>> tau2 = TaskVector({"weight": torch.tensor([[0.0, 0.0], [0.0, 1.0]])})
        >>> x1, x2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> disentanglement_error(model, tau1, tau2, x1, x2, alphas1=[1.0], alphas2=[-1.0, 1.0])
        tensor([[0., 0.]], dtype=torch.float64)
    """
    if not isinstance(tau1, TaskVector) or not isinstance(tau2, TaskVector):
        raise TypeError("tau1 and tau2 must be TaskVector s")
    for name, x in (("x1", x1), ("x2", x2)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a tensor; got {type(x).__name__}")
        if x.ndim < 1 or len(x) == 0:
            raise ValueError(f"{name} must hold at least one input; got shape {tuple(x.shape)}")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} has NaN or infinite entries")
    a1, a2 = _check_alphas(alphas1, "alphas1"), _check_alphas(alphas2, "alphas2")
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(f"x1 and x2 must have the same feature shape; got "
                         f"{tuple(x1.shape[1:])} and {tuple(x2.shape[1:])}")
    x = torch.cat([x1, x2])
    n1 = len(x1)

    def outputs(c1: float, c2: float) -> Tensor:
        edited = tau1.apply_to(model, alpha=c1)
        return tau2.apply_to(edited, alpha=c2, inplace=True)(x)

    linear = isinstance(model, _Expansion) and model.order == 1
    if linear:
        base, d1, d2 = outputs(0.0, 0.0), outputs(1.0, 0.0), outputs(0.0, 1.0)
        d1, d2 = d1 - base, d2 - base

        def at(c1: float, c2: float) -> Tensor:
            return base + c1 * d1 + c2 * d2
    else:
        at = outputs
    alone1 = [_predictions(at(c1, 0.0)[:n1]) for c1 in a1]
    alone2 = [_predictions(at(0.0, c2)[n1:]) for c2 in a2]
    xi = torch.empty(len(a1), len(a2), dtype=torch.float64)
    for i, c1 in enumerate(a1):
        for j, c2 in enumerate(a2):
            both = _predictions(at(c1, c2))
            xi[i, j] = ((both[:n1] != alone1[i]).double().mean()
                        + (both[n1:] != alone2[j]).double().mean())
    return xi
