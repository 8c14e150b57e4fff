"""A parametrization planned for an unmodified model: per-parameter multipliers, init scales and
learning-rate scales, installed without changing the model's source."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize as P

from ..layers._twin import AffineTwin
from ._abc import ABC, get_abc
from ._roles import ParamWidth, infer_widths, named_parameters

__all__ = ["Multiplier", "ParamPlan", "Plan", "plan"]

_OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass(frozen=True)
class ParamPlan:
    """What a plan does to one parameter (``n`` as in :class:`~._roles.ParamWidth`).

    - ``multiplier``: ``n^-a``, the forward pass uses ``multiplier * p``.
    - ``init_std``: ``n^-b``, the init std relative to the model's default init at the base
      width.
    - ``init_scale``: ``n^-b / default_ratio``, the factor applied to a draw of the model's
      default init at its own width.
    - ``lr_sgd``, ``lr_adam``: ``n^-c_sgd``, ``n^-c_adam``, factors on the base learning rate.
    """

    width: ParamWidth
    multiplier: float
    init_std: float
    init_scale: float
    lr_sgd: float
    lr_adam: float


class Multiplier(nn.Module):
    """The parametrization ``p -> multiplier * p`` that :meth:`Plan.apply_` registers."""

    def __init__(self, multiplier: float):
        super().__init__()
        self.multiplier = float(multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.multiplier

    def extra_repr(self) -> str:
        return f"multiplier={self.multiplier:.6g}"


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return model.get_submodule(path), attr


def _remove_multipliers(module: nn.Module, attr: str, *, bake: bool) -> None:
    """Drop the :class:`Multiplier` of ``module.attr`` (others stay), folding it into the
    parameter when ``bake``."""
    if not P.is_parametrized(module, attr):
        return
    plist = module.parametrizations[attr]
    if not any(isinstance(f, Multiplier) for f in plist):
        return
    keep = [f for f in plist if not isinstance(f, Multiplier)]
    if bake:
        with torch.no_grad():
            m = math.prod(f.multiplier for f in plist if isinstance(f, Multiplier))
            plist.original.mul_(m)
    P.remove_parametrizations(module, attr, leave_parametrized=False)
    for f in keep:
        P.register_parametrization(module, attr, f)


def _reset_modules(model: nn.Module, names: set[str]) -> set[str]:
    """Redraw the default init of every module that owns one of ``names`` directly, children
    before parents (``nn.MultiheadAttention`` zeroes its ``out_proj.bias`` after the
    ``nn.Linear`` drew it). Returns the names it could not redraw (no ``reset_parameters``)."""
    owners = {}
    for name in names:
        path = name.rpartition(".")[0]
        owners.setdefault(path, set()).add(name.rpartition(".")[2])
    left = set()
    for path, mod in reversed(list(model.named_modules())):
        if path not in owners:
            continue
        for attr in owners[path]:
            if P.is_parametrized(mod, attr):
                raise ValueError(f"cannot re-initialize {path + '.' + attr!r}: it carries a "
                                 "parametrization other than a plan's multiplier (apply the "
                                 "plan before other parametrizations, e.g. mup_attention_)")
        reset = getattr(mod, "reset_parameters", None) or getattr(mod, "_reset_parameters",
                                                                   None)
        if callable(reset):
            reset()
        else:
            left |= {f"{path}.{a}" if path else a for a in owners[path]}
    return left


class Plan:
    """A parametrization of one model: see :func:`plan`."""

    def __init__(self, parametrization: ABC, params: dict[str, ParamPlan],
                 tensors: dict[str, nn.Parameter]):
        self.parametrization = parametrization
        self.params = params
        self._tensors = tensors

    def __repr__(self) -> str:
        return f"Plan({self.parametrization.name!r}, {len(self.params)} parameters)"

    def table(self) -> str:
        """One line per parameter: role, fan-in and fan-out multipliers, forward multiplier,
        init std relative to the base width's default init, and learning-rate scales."""
        head = ("parameter", "role", "fan_in x", "fan_out x", "multiplier", "init std",
                "lr sgd", "lr adam")
        rows = [(name, q.width.role, f"{q.width.fan_in_mult:.4g}",
                 f"{q.width.fan_out_mult:.4g}", f"{q.multiplier:.4g}", f"{q.init_std:.4g}",
                 f"{q.lr_sgd:.4g}", f"{q.lr_adam:.4g}") for name, q in self.params.items()]
        widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
        lines = [f"{self.parametrization.name}: multipliers n^-a, init std n^-b (x the base "
                 "width's default), lr n^-c"]
        for r in (head, *rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        return "\n".join(lines)

    def _check_model(self, model: nn.Module) -> dict[str, nn.Parameter]:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        params = named_parameters(model)
        if set(params) != set(self.params):
            diff = sorted(set(params) ^ set(self.params))
            raise ValueError(f"model's parameters differ from the plan's: {diff[:5]}")
        for name, p in params.items():
            if p.shape != self._tensors[name].shape:
                raise ValueError(f"parameter {name!r} has shape {tuple(p.shape)}, the plan "
                                 f"was made for {tuple(self._tensors[name].shape)}")
        return params

    def apply_(self, model: nn.Module, *, generator: torch.Generator | None = None,
               reinit: bool = True) -> nn.Module:
        """Re-initialize ``model`` in place and install the forward multipliers.

        Each module that owns a parameter redraws its default init (its
        ``reset_parameters``, from ``generator`` when given, the global RNG otherwise), and
        each parameter is multiplied by ``init_scale``; a module without
        ``reset_parameters`` keeps its current values, rescaled the same way (as
        ``mup.set_base_shapes`` rescales, assuming the values are a default init).
        ``reinit=False`` rescales every parameter's current values instead.

        The multipliers ``n^-a != 1`` are ``torch.nn.utils.parametrize`` parametrizations
        (:class:`Multiplier`), not forward hooks: a multiplier belongs to one parameter (the
        readout's weight is scaled, its bias is not, as in ``mup.MuReadout``), it acts
        wherever the module reads the attribute (``nn.MultiheadAttention`` passes
        ``in_proj_weight`` to a functional), and the optimizer still sees the same
        ``nn.Parameter`` objects. :meth:`remove_` takes them off. Applying a plan again
        replaces its multipliers. From then on :meth:`param_groups` holds ``model``'s
        parameters (the plan may be made on one model and applied to a copy).

        **Returns:** ``model``.
        """
        params = self._check_model(model)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got "
                            f"{type(generator).__name__}")
        self.remove_(model)
        if reinit:
            devices = sorted({p.device.index or 0 for p in params.values()
                              if p.device.type == "cuda"})
            with torch.random.fork_rng(devices=devices, enabled=generator is not None):
                if generator is not None:
                    torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
                _reset_modules(model, set(params))
        with torch.no_grad():
            for name, p in params.items():
                s = self.params[name].init_scale
                if s != 1.0:
                    p.mul_(s)
        for name, q in self.params.items():
            if q.multiplier != 1.0:
                P.register_parametrization(*_owner(model, name), Multiplier(q.multiplier))
        self._tensors = params
        return model

    def remove_(self, model: nn.Module, *, bake: bool = False) -> nn.Module:
        """Take the plan's multipliers off ``model`` (other parametrizations stay). The
        parameters keep their values, so the model computes a different function unless
        ``bake=True``, which folds each multiplier into its parameter.

        **Returns:** ``model``.
        """
        self._check_model(model)
        for name in self.params:
            _remove_multipliers(*_owner(model, name), bake=bake)
        return model

    def param_groups(self, lr: float, *, optimizer: str = "adam",
                     weight_decay: float = 0.0) -> list[dict]:
        """``torch.optim`` parameter groups with each parameter's learning rate
        ``lr * n^-c``.

        Parameters with the same scale share a group. Each group's weight decay is
        ``weight_decay / scale``, as ``mup.MuAdam``/``MuAdamW``/``MuSGD`` do: ``lr *
        weight_decay`` (the decay per step of AdamW) stays width-independent.

        **Arguments:** ``lr`` the base-width learning rate ``> 0``; ``optimizer`` ``"adam"``,
        ``"adamw"`` (Adam's exponents) or ``"sgd"``; ``weight_decay`` ``>= 0``.

        **Returns:** a list of ``{"params": [...], "lr": float, "weight_decay": float}``.
        """
        for v, what, low in ((lr, "lr", 0.0), (weight_decay, "weight_decay", None)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or (v <= 0 if low is not None else v < 0):
                raise ValueError(f"{what} must be a finite number "
                                 f"{'> 0' if low is not None else '>= 0'}, got {v!r}")
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
        key = "lr_sgd" if optimizer == "sgd" else "lr_adam"
        groups: dict[float, dict] = {}
        for name, q in self.params.items():
            s = getattr(q, key)
            g = groups.setdefault(s, {"params": [], "lr": lr * s,
                                      "weight_decay": weight_decay / s})
            g["params"].append(self._tensors[name])
        return list(groups.values())


def plan(model: nn.Module, parametrization: str | ABC, *, base: nn.Module | None = None,
         delta: nn.Module | None = None, widths=None, readout: str | None = None) -> Plan:
    """Plan ``parametrization`` for ``model``, an unmodified ``nn.Module``.

    Roles and width multipliers come from comparing ``model`` with ``base`` (and ``delta``)
    or from ``widths`` (:func:`~._roles.infer_widths`); the exponents from the
    :class:`~._abc.ABC` table. Nothing is changed until :meth:`Plan.apply_`.

    **Arguments:**

    - ``model``: the model at its target width.
    - ``parametrization``: ``"sp"``, ``"ntk"``, ``"mup"``, ``"mf"`` or an :class:`ABC`.
    - ``base``, ``delta``, ``widths``, ``readout``: as in :func:`~._roles.infer_widths`.

    **Returns:** a :class:`Plan`; ``plan.params[name]`` is a :class:`ParamPlan`.

    Example:
        >>> def mlp(w):
        ...     return nn.Sequential(nn.Linear(4, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
        ...                          nn.Linear(w, 1))
        >>> p = plan(mlp(256), "mup", base=mlp(64))
        >>> [(name, q.width.role, q.multiplier) for name, q in p.params.items()][-2:]
        [('4.weight', 'output', 0.25), ('4.bias', 'fixed', 1.0)]
        >>> [g["lr"] for g in p.param_groups(1e-3, optimizer="adam")]
        [0.001, 0.00025]
        >>> model = p.apply_(mlp(256), generator=torch.Generator().manual_seed(0))
    """
    abc = get_abc(parametrization)
    _refuse_scaled_twins(model)
    widths_ = infer_widths(model, base=base, delta=delta, widths=widths, readout=readout)
    params = {}
    for name, w in widths_.items():
        e = abc.exponents(w.role)
        std = w.n ** -e.b
        params[name] = ParamPlan(w, w.n ** -e.a, std, std / w.default_ratio,
                                 w.n ** -e.c_sgd, w.n ** -e.c_adam)
    return Plan(abc, params, named_parameters(model))


def _refuse_scaled_twins(model: nn.Module) -> None:
    """A plan's scales are relative to a PyTorch-style default init (std ``fan_in^-1/2``, no
    forward multiplier). The finite twin of an ntkit ``Dense``/``Conv`` in the NTK
    parametrization draws ``N(0, 1)`` at every width and multiplies by ``W_std / sqrt(fan_in)``
    in its forward pass, so a plan would scale it twice; in the standard parametrization it is
    an ordinary layer."""
    for name, module in model.named_modules():
        if isinstance(module, AffineTwin) and (module.weight_scale != 1.0
                                               or module.bias_scale not in (0.0, 1.0)):
            raise ValueError(
                f"module {name or type(model).__name__!r} is the finite twin of an ntkit layer in "
                f"the NTK parametrization: its forward pass already scales its weights by "
                f"W_std / sqrt(fan_in), so a plan would scale them twice; build the twin with "
                f"parametrization='standard' (L.Dense(..., parametrization='standard')) to plan it")
