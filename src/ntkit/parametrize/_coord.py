"""The coordinate check (Yang et al. 2022, "Tensor Programs V", §D.1 / ``mup``'s
``get_coord_data``): train the same architecture at several widths for a few steps and watch
the size of every layer's output. Under a correct muP every curve is flat in width; a layer
whose activations grow with width (the readout of SP trained by Adam) is what blows up when a
model is scaled."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._plan import plan

__all__ = ["CoordCheck", "coord_check"]

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


@dataclass(frozen=True)
class CoordCheck:
    """What :func:`coord_check` recorded.

    - ``parametrization``: its name.
    - ``widths``: ``(W,)`` the widths, ascending; ``modules``: ``(M,)`` the recorded modules'
      names; ``steps``: the number of optimizer steps (``T``).
    - ``l1``: ``(W, S, T + 1, M)`` float64, the mean absolute value of each module's output
      on the batch of step ``t`` before the ``t``-th update (``t = 0`` at init), for each
      width and seed; NaN after a run whose loss stopped being finite.
    - ``loss``: ``(W, S, T + 1)`` the training loss of the same forward passes.
    """

    parametrization: str
    widths: tuple[int, ...]
    modules: tuple[str, ...]
    steps: int
    l1: Tensor
    loss: Tensor

    def slopes(self, step: int | None = None) -> dict[str, float]:
        """Least-squares slope of ``log l1`` (mean over seeds) against ``log width`` per
        module at ``step`` (default: the last, ``T``): ``l1 ~ width^slope``. 0 is
        width-independent; NaN where a value is 0 or not finite.

        **Returns:** ``{module name: slope}``.
        """
        t = self.steps if step is None else step
        if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t <= self.steps:
            raise ValueError(f"step must be an int in [0, {self.steps}], got {step!r}")
        if len(self.widths) < 2:
            raise ValueError("a slope needs at least two widths")
        return dict(zip(self.modules, log_log_slope(self.widths, self.l1[:, :, t].mean(1)),
                        strict=True))

    def to_frame(self):
        """A long ``pandas.DataFrame`` with columns ``width, seed, step, module, l1, loss``."""
        import pandas as pd

        w, s, t, m = self.l1.shape
        idx = torch.cartesian_prod(*(torch.arange(k) for k in (w, s, t, m))).T
        return pd.DataFrame({
            "width": [self.widths[i] for i in idx[0].tolist()],
            "seed": idx[1].numpy(), "step": idx[2].numpy(),
            "module": [self.modules[i] for i in idx[3].tolist()],
            "l1": self.l1.reshape(-1).numpy(),
            "loss": self.loss[:, :, :, None].expand(-1, -1, -1, m).reshape(-1).numpy(),
        })

    def plot(self, steps: Sequence[int] | None = None, *, title: str | None = None):
        """One panel per step (default all ``T + 1``): ``l1`` (mean over seeds) against width,
        log-log, one line per module, as in ``mup``'s coordinate-check plots.

        **Returns:** the ``matplotlib.figure.Figure``.
        """
        import matplotlib.pyplot as plt

        steps = list(range(self.steps + 1)) if steps is None else list(steps)
        fig, axes = plt.subplots(1, len(steps), figsize=(2.6 * len(steps) + 1, 3),
                                 sharey=True, squeeze=False)
        mean = self.l1.mean(1)
        for ax, t in zip(axes[0], steps, strict=True):
            for j, name in enumerate(self.modules):
                ax.plot(self.widths, mean[:, t, j].numpy(), marker=".", label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"step {t}")
            ax.set_xlabel("width")
        axes[0, 0].set_ylabel("mean |activation|")
        axes[0, -1].legend(fontsize="x-small", title="module", title_fontsize="x-small")
        fig.suptitle(title or f"coordinate check: {self.parametrization}")
        fig.tight_layout()
        return fig


def log_log_slope(widths: Sequence[int], values: Tensor) -> list[float]:
    """Slope of ``log values[:, j]`` against ``log widths`` by least squares, per column of
    the ``(W, M)`` tensor ``values``; NaN for a column with a value <= 0 or not finite."""
    x = torch.tensor([math.log(w) for w in widths], dtype=torch.float64)
    x = x - x.mean()
    out = []
    for col in values.to(torch.float64).T:
        if not bool(torch.isfinite(col).all()) or not bool((col > 0).all()):
            out.append(float("nan"))
            continue
        y = col.log()
        out.append(float((x * (y - y.mean())).sum() / (x * x).sum()))
    return out


def coord_check(
    make_model: Callable[[int], nn.Module],
    widths: Sequence[int],
    data: tuple[Tensor, Tensor],
    *,
    parametrization,
    steps: int,
    lr: float,
    optimizer: str = "adam",
    base_width: int | None = None,
    seeds: int = 1,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    batch_size: int | None = None,
    modules: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
) -> CoordCheck:
    """Train ``make_model(width)`` under ``parametrization`` for ``steps`` steps at each width
    and record the mean absolute value of every module's output at every step.

    For each width and seed: ``model = make_model(width)``, ``p = plan(model,
    parametrization, base=make_model(base_width))``, ``p.apply_(model, generator=...)``,
    then ``steps`` updates of ``torch.optim.Adam`` / ``AdamW`` / ``SGD`` on
    ``p.param_groups(lr, optimizer=...)``. Before each update and after the last, the forward
    pass on that step's batch is recorded by forward hooks: by default on every leaf module
    (one without submodules other than the ``parametrizations`` that :meth:`Plan.apply_`
    adds; in an MLP, each ``nn.Linear``'s pre-activations and each activation module's
    output), or on the modules named in ``modules``. For a module that returns a tuple the
    first tensor counts. A run whose loss stops being finite is stopped and the rest of its
    record is NaN. Seed ``s`` draws the same batches at every width.

    **Arguments:**

    - ``make_model``: ``width -> nn.Module``, the same architecture at every width.
    - ``widths``: positive ints (at least two for slopes).
    - ``data``: ``(x, y)``, ``x`` of shape ``(N, *features)``, ``y`` what ``loss_fn`` takes.
    - ``parametrization``: a name or :class:`~ntkit.parametrize.ABC`, passed to
      :func:`~ntkit.parametrize.plan` (which rejects unknown names).
    - ``steps``: optimizer steps ``>= 1``; ``lr``: the base-width learning rate ``> 0``.
    - ``optimizer``: ``"adam"`` (default), ``"adamw"`` or ``"sgd"``.
    - ``base_width``: width of the base model the plan scales from; default the smallest of
      ``widths``.
    - ``seeds``: independent initialisations per width.
    - ``loss_fn``: ``loss_fn(outputs, y)`` -> scalar; default cross-entropy for integer ``y``
      and ``mse_loss`` otherwise.
    - ``batch_size``: examples per step drawn without replacement, or ``None`` for the full
      batch at every step.
    - ``modules``: names (as in ``model.named_modules()``) to record instead of the leaves.
    - ``generator``: draws each seed's init and batch seeds, for repeatable runs.

    **Returns:** a :class:`CoordCheck`; ``.slopes()`` gives each module's exponent of width,
    ``.to_frame()`` the table, ``.plot()`` the figure.

    Example:
        >>> from torch import nn
        >>> def mlp(w):
        ...     return nn.Sequential(nn.Linear(4, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
        ...                          nn.Linear(w, 2))
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g)
        >>> cc = coord_check(mlp, [32, 64, 128], (x, y), parametrization="mup", steps=2,
        ...                  lr=1e-2, generator=g)
        >>> cc.l1.shape, cc.modules
        (torch.Size([3, 1, 3, 5]), ('0', '1', '2', '3', '4'))
        >>> sorted(cc.slopes())
        ['0', '1', '2', '3', '4']
    """
    widths = check_widths(widths)
    run = prepare_runs(widths, data, steps=steps, seeds=seeds, batch_size=batch_size,
                       base_width=base_width, optimizer=optimizer, loss_fn=loss_fn,
                       generator=generator)
    x, y, base, opt_cls, loss_fn, draws = (run.x, run.y, run.base, run.opt_cls, run.loss_fn,
                                           run.draws)

    names: tuple[str, ...] | None = None
    l1 = torch.full((len(widths), seeds, steps + 1, 0), float("nan"), dtype=torch.float64)
    losses = torch.full((len(widths), seeds, steps + 1), float("nan"), dtype=torch.float64)
    for i, width in enumerate(widths):
        for s, seed in enumerate(draws):
            model, opt = planned(make_model, width, base, parametrization, lr=lr,
                                 optimizer=optimizer, opt_cls=opt_cls, seed=seed)
            recorded = hooked_modules(model, modules)
            if names is None:
                names = tuple(recorded)
                l1 = torch.full((len(widths), seeds, steps + 1, len(names)), float("nan"),
                                dtype=torch.float64)
            elif tuple(recorded) != names:
                raise ValueError(f"make_model({width}) has other modules than "
                                 f"make_model({widths[0]}): {tuple(recorded)} vs {names}")
            current: dict[str, float] = {}
            handles = [m.register_forward_hook(_recorder(name, current))
                       for name, m in recorded.items()]
            try:
                for t, loss in train(model, opt, x, y, loss_fn, steps, batch_size, seed):
                    losses[i, s, t] = loss
                    l1[i, s, t] = torch.tensor([current.get(n, float("nan")) for n in names],
                                               dtype=torch.float64)
                    current.clear()
            finally:
                for h in handles:
                    h.remove()
    return CoordCheck(parametrization_name(parametrization), widths, names or (), steps, l1,
                      losses)


@dataclass(frozen=True)
class Runs:
    """What :func:`coord_check` and ``lr_sweep`` train with, once their arguments are checked:
    the data, the base width, the optimizer class, the loss and one seed per repeat."""

    x: Tensor
    y: Tensor
    base: int
    opt_cls: type
    loss_fn: Callable
    draws: list[int]


def prepare_runs(widths: tuple[int, ...], data, *, steps: int, seeds: int,
                 batch_size: int | None, base_width, optimizer: str, loss_fn,
                 generator: torch.Generator | None) -> Runs:
    """The arguments shared by :func:`coord_check` and ``lr_sweep``, checked (clear errors
    naming each) and resolved to a :class:`Runs`."""
    check_int(steps, "steps", 1)
    check_int(seeds, "seeds", 1)
    x, y = check_data(data, batch_size)
    return Runs(x, y, check_base_width(base_width, widths), check_optimizer(optimizer),
                default_loss(y) if loss_fn is None else loss_fn, seed_draws(seeds, generator))


def parametrization_name(parametrization) -> str:
    """``"mup"`` for ``"mup"``, an :class:`~._abc.ABC`'s ``name`` for an ABC."""
    return str(getattr(parametrization, "name", parametrization))


def _recorder(name: str, into: dict[str, float]):
    def hook(module, args, output):
        if isinstance(output, (tuple, list)):
            output = next((o for o in output if isinstance(o, Tensor)), None)
        if isinstance(output, Tensor):
            into[name] = float(output.detach().abs().float().mean())
    return hook


def hooked_modules(model: nn.Module, names: Sequence[str] | None) -> dict[str, nn.Module]:
    """The modules to record: those named, or every leaf (``parametrizations`` excluded)."""
    all_modules = dict(model.named_modules())
    if names is not None:
        if isinstance(names, str) or not names:
            raise ValueError("modules must be a non-empty list of module names")
        missing = [n for n in names if n not in all_modules]
        if missing:
            raise ValueError(f"modules {missing} are not in the model; it has "
                             f"{[n for n in all_modules if n][:10]}...")
        return {n: all_modules[n] for n in names}
    out = {}
    for name, m in all_modules.items():
        if "parametrizations" in name.split("."):
            continue
        if all(child == "parametrizations" for child, _ in m.named_children()):
            out[name] = m
    return out


def planned(make_model, width: int, base_width: int, parametrization, *, lr: float,
            optimizer: str, opt_cls, seed: int):
    """``make_model(width)`` re-initialised by its plan from seed ``seed``, and its optimizer."""
    model = make_model(width)
    if not isinstance(model, nn.Module):
        raise TypeError(f"make_model({width}) must return an nn.Module, got "
                        f"{type(model).__name__}")
    p = plan(model, parametrization, base=make_model(base_width))
    p.apply_(model, generator=torch.Generator().manual_seed(seed))
    return model, opt_cls(p.param_groups(lr, optimizer=optimizer))


def train(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, loss_fn,
          steps: int, batch_size: int | None, seed: int):
    """Yield ``(t, loss)`` for ``t = 0..steps``: the forward pass on step ``t``'s batch, then
    (for ``t < steps``) one update. Stops after a loss that is not finite."""
    g = torch.Generator().manual_seed(seed + 1)
    n = x.shape[0]
    for t in range(steps + 1):
        if batch_size is None:
            xb, yb = x, y
        else:
            idx = torch.randperm(n, generator=g)[:batch_size]
            xb, yb = x[idx], y[idx]
        loss = loss_fn(model(xb), yb)
        value = float(loss.detach())
        yield t, value
        if not math.isfinite(value):
            return
        if t < steps:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def default_loss(y: Tensor):
    from torch.nn.functional import cross_entropy, mse_loss

    return mse_loss if y.is_floating_point() else cross_entropy


def seed_draws(seeds: int, generator: torch.Generator | None) -> list[int]:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return [int(v) for v in torch.randint(2**62, (seeds,), generator=generator)]


def check_widths(widths) -> tuple[int, ...]:
    if isinstance(widths, (int, str)) or not isinstance(widths, Sequence) or not widths:
        raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths!r}")
    for w in widths:
        if not isinstance(w, int) or isinstance(w, bool) or w < 1:
            raise ValueError(f"widths must be positive ints, got {w!r} in {list(widths)}")
    if len(set(widths)) != len(widths):
        raise ValueError(f"widths must be distinct, got {list(widths)}")
    return tuple(sorted(widths))


def check_int(v, name: str, low: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")


def check_base_width(base_width, widths: tuple[int, ...]) -> int:
    if base_width is None:
        return widths[0]
    check_int(base_width, "base_width", 1)
    return base_width


def check_optimizer(optimizer: str):
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {tuple(_OPTIMIZERS)}, got {optimizer!r}")
    return _OPTIMIZERS[optimizer]


def check_data(data, batch_size: int | None) -> tuple[Tensor, Tensor]:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("data must be a pair (x, y) of tensors")
    x, y = data
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("data must be a pair (x, y) of tensors")
    if x.ndim < 1 or x.shape[0] == 0 or y.ndim < 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"data x and y must have the same number N >= 1 of rows, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    for t, what in ((x, "x"), (y, "y")):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"data {what} must be finite (it has NaN or inf)")
    if batch_size is not None:
        check_int(batch_size, "batch_size", 1)
        if batch_size > x.shape[0]:
            raise ValueError(f"batch_size must be <= N={x.shape[0]}, got {batch_size}")
    return x, y
