"""Kernel movement during training: the empirical NTK of a fixed probe set, recorded by a
callback that the user calls from their own training loop."""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import as_inputs, positive_int
from ..empirical import empirical_ntk
from ._similarity import centered_target_alignment, kernel_distance
from ._spectrum import _eigenvalues, effective_rank

__all__ = ["KernelTracker"]

FIELDS = ("step", "distance", "velocity", "alignment", "effective_rank", "top_eigenvalue")
"""The columns of :attr:`KernelTracker.history`, in order."""

_STRATEGIES = ("auto", "jacobian", "ntk_vp", "structured")
_OUTPUTS = ("trace", "full")
_LABELS = {"distance": "distance to initial eNTK", "velocity": "kernel velocity (per step)",
           "alignment": "centred target alignment", "effective_rank": "effective rank",
           "top_eigenvalue": "top eigenvalue"}


class KernelTracker:
    """Records how the empirical NTK of ``model`` on a fixed probe set moves during training.

    Call :meth:`step` once per training step (e.g. after ``optimizer.step()``). On the first
    call, and then on every step that is a multiple of ``every``, it computes ONE empirical
    NTK ``K_t`` of the probe set (:func:`ntkit.empirical_ntk`) and records:

    - ``distance``: :func:`~ntkit.analysis.kernel_distance` ``(K_0, K_t)``, the kernel
      distance ``1 - <K_0, K_t>_F / (|K_0|_F |K_t|_F)`` of Fort et al. (2020, "Deep learning
      versus kernel learning") to the first record ``K_0``; exactly 0 on the first.
    - ``velocity``: ``kernel_distance(K_prev, K_t) / (t - t_prev)`` between consecutive
      records (Fort et al.'s kernel velocity, per training step; theirs is per epoch); NaN on
      the first.
    - ``alignment``: :func:`~ntkit.analysis.centered_target_alignment` of ``K_t`` with the
      targets, the centred alignment with ``y y^T`` (Cortes, Mohri & Rostamizadeh 2012);
      NaN without ``y_probe``.
    - ``effective_rank`` (:func:`~ntkit.analysis.effective_rank`, entropy form of Roy &
      Vetterli 2007) and ``top_eigenvalue`` of ``K_t``, both from one eigendecomposition
      (eigenvalues only, checked as in :func:`~ntkit.analysis.spectrum`).

    The cost of a record is one empirical NTK of the probe set plus one eigendecomposition
    and a few ``O(N^2)`` sums of the ``(N, N)`` kernel (``(N O, N O)`` for
    ``outputs="full"``); the steps in between cost nothing. The NTK is computed in
    ``model.eval()`` (so that dropout and batch norm do not make it random or batch
    dependent) under ``torch.no_grad()``; every module's training flag is restored after, and
    the parameters, their ``.grad`` fields and any autograd graph of the user's are left as
    they were. Only the first and the latest kernel are kept (two ``(N, N)`` tensors), unless
    ``keep_kernels=True``.

    **Arguments:**

    - ``model``: the ``nn.Module`` being trained, mapping ``(N, *features)`` to ``(N, *out)``.
    - ``x_probe``: ``(N, *features)`` inputs (finite; or integer indices for a model that
      takes them), fixed for the whole run; on the model's device. The kernels are computed
      in its dtype: float64 probe inputs give float64 kernels of a float32 model, which
      resolve the small distances (``~1e-4`` and below) of wide networks that float32
      rounding (``~1e-7`` relative per entry) would blur.
    - ``y_probe``: ``(N,)`` or ``(N, O)`` targets of the probe inputs, or ``None``.
    - ``every``: record on steps that are multiples of this (``>= 1``), and on the first call.
    - ``strategy``, ``outputs``, ``batch_size``: passed to :func:`ntkit.empirical_ntk`;
      ``outputs`` is ``"trace"`` (an ``(N, N)`` kernel) or ``"full"`` (``(N, N, K, K)``,
      read by the analysis functions as ``(N K, N K)``; ``y_probe`` then needs ``O = K``).
    - ``keep_kernels``: keep every recorded kernel in :attr:`kernels`.

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> from ntkit.analysis import KernelTracker
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(16, 3, generator=g, dtype=torch.float64)
        >>> y = x[:, :1].sin()
        >>> model = L.serial(L.Dense(64), L.ReLU(), L.Dense(1)).module(
        ...     (3,), generator=g, dtype=torch.float64)
        >>> tracker = KernelTracker(model, x[:8], y[:8], every=5)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.5)
        >>> for t in range(11):
        ...     _ = tracker.step(t)  # the kernel at the parameters reached after t updates
        ...     opt.zero_grad()
        ...     ((model(x) - y) ** 2).mean().backward()
        ...     opt.step()
        >>> tracker.history["step"].tolist()
        [0, 5, 10]
        >>> d = tracker.history["distance"]
        >>> bool(d[0] == 0.0 and 0.0 < d[1] < d[2] < 0.1)
        True
    """

    def __init__(self, model: nn.Module, x_probe, y_probe=None, *, every: int = 1,
                 strategy: str = "auto", outputs: str = "trace", batch_size: int | None = None,
                 keep_kernels: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {_STRATEGIES}; got {strategy!r}")
        if outputs not in _OUTPUTS:
            raise ValueError(
                f"outputs must be one of {_OUTPUTS} (a kernel matrix whose spectrum and "
                f"alignment are defined); got {outputs!r}"
            )
        self.model = model
        self.x_probe = _probe_inputs(x_probe)
        self.y_probe = None if y_probe is None else _targets(y_probe, len(self.x_probe))
        self.every = positive_int(every, "every")
        self.strategy = strategy
        self.outputs = outputs
        self.batch_size = None if batch_size is None else positive_int(batch_size, "batch_size")
        self.keep_kernels = bool(keep_kernels)
        self._records: dict[str, list] = {name: [] for name in FIELDS}
        self._kept: list[Tensor] = []
        self._initial: Tensor | None = None
        self._previous: Tensor | None = None
        self._last_step: int | None = None

    def step(self, step: int) -> dict[str, float] | None:
        """Record the kernel at training step ``step`` if it is due.

        **Arguments:** ``step``: an integer ``>= 0`` larger than the previous call's.

        **Returns:** the record (``{field: value}`` over :data:`FIELDS`) when one was made,
        else ``None``.
        """
        step = _step(step, self._last_step)
        first = self._last_step is None
        self._last_step = step
        if not first and step % self.every:
            return None
        kernel = self._kernel()
        with torch.no_grad():
            record = self._measure(step, kernel)
        for name in FIELDS:
            self._records[name].append(record[name])
        if first:
            self._initial = kernel
        self._previous = kernel
        if self.keep_kernels:
            self._kept.append(kernel)
        return record

    @property
    def history(self) -> dict[str, np.ndarray]:
        """The records so far: ``{field: (R,) NumPy array}`` over :data:`FIELDS`, one entry
        per record (``step`` int64, the others float64; NaN where undefined)."""
        return {name: np.asarray(values, dtype=np.int64 if name == "step" else np.float64)
                for name, values in self._records.items()}

    @property
    def kernels(self) -> list[Tensor]:
        """Every recorded kernel, in order (``keep_kernels=True`` only)."""
        if not self.keep_kernels:
            raise ValueError("kernels: this tracker keeps only the first and latest kernels; "
                             "construct it with keep_kernels=True to keep them all")
        return list(self._kept)

    def __len__(self) -> int:
        return len(self._records["step"])

    def to_frame(self):
        """:attr:`history` as a ``pandas.DataFrame`` with one row per record and the columns
        :data:`FIELDS`."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("KernelTracker.to_frame() needs pandas (pip install pandas); "
                              "tracker.history holds the same columns as NumPy arrays") from e
        return pd.DataFrame(self.history, columns=list(FIELDS))

    def plot(self, *, axes=None):
        """Draw the five recorded curves against the step, one panel each.

        **Arguments:** ``axes``: five matplotlib ``Axes`` to draw on (in the order distance,
        velocity, alignment, effective rank, top eigenvalue), or ``None`` for a new figure.

        **Returns:** the ``matplotlib.figure.Figure`` of the first panel.
        """
        import matplotlib.pyplot as plt

        names = FIELDS[1:]
        if axes is None:
            fig, grid = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8),
                                     layout="constrained")
            axes = list(grid)
        else:
            axes = list(np.ravel(np.asarray(axes, dtype=object)))
            if len(axes) != len(names):
                raise ValueError(f"axes must hold {len(names)} matplotlib Axes ({names}); "
                                 f"got {len(axes)}")
            fig = axes[0].figure
        h = self.history
        for ax, name in zip(axes, names, strict=True):
            values = h[name]
            if len(values) and np.isnan(values).all():
                ax.text(0.5, 0.5, "no y_probe" if name == "alignment" else "one record",
                        ha="center", va="center", transform=ax.transAxes)
            ax.plot(h["step"], values, marker="o", markersize=3)
            ax.set_xlabel("step")
            ax.set_title(_LABELS[name], fontsize="medium")
        return fig

    def _kernel(self) -> Tensor:
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            with torch.no_grad():
                return empirical_ntk(self.model, self.x_probe, strategy=self.strategy,
                                     outputs=self.outputs, batch_size=self.batch_size)
        finally:
            for m, training in modes:
                m.training = training

    def _measure(self, step: int, kernel: Tensor) -> dict[str, float]:
        # Eigenvalues only (no eigenvectors: half the cost of the full eigh), checked PSD as in
        # spectrum(); the scalar diagnostics accept them in place of the kernel.
        evals = _eigenvalues(kernel)
        record = {
            "step": step,
            "distance": 0.0 if self._initial is None else float(
                kernel_distance(self._initial, kernel)),
            "velocity": math.nan if self._previous is None else float(
                kernel_distance(self._previous, kernel)) / (step - self._records["step"][-1]),
            "alignment": math.nan if self.y_probe is None else float(
                centered_target_alignment(kernel, self.y_probe)),
            "effective_rank": float(effective_rank(evals)),
            "top_eigenvalue": float(evals.max()),
        }
        return record


def _probe_inputs(x) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if isinstance(x, Tensor) and not x.is_floating_point() and x.dtype not in (
            torch.bool, torch.complex64, torch.complex128):
        if x.ndim < 1 or x.shape[0] == 0 or x[0].numel() == 0:
            raise ValueError(f"x_probe must have shape (N, ...) with N >= 1 examples; got "
                             f"shape {tuple(x.shape)}")
        return x.detach()
    return as_inputs(x, "x_probe").detach()


def _targets(y, n: int) -> Tensor:
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if not isinstance(y, Tensor) or not (y.is_floating_point() or y.dtype in (
            torch.int32, torch.int64)):
        raise TypeError(f"y_probe must be a real tensor or numpy array; got "
                        f"{getattr(y, 'dtype', type(y).__name__)}")
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise ValueError(f"y_probe must have shape ({n},) or ({n}, O), one row per row of "
                         f"x_probe; got shape {tuple(y.shape)}")
    y = y.detach().double() if not y.is_floating_point() else y.detach()
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y_probe contains NaN or infinite values")
    return y


def _step(step, last: int | None) -> int:
    if isinstance(step, bool):
        raise TypeError("step must be an integer; got a bool")
    try:
        step = operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an integer; got {type(step).__name__}") from None
    if step < 0:
        raise ValueError(f"step must be >= 0; got {step}")
    if last is not None and step <= last:
        raise ValueError(f"step must increase from call to call; got {step} after {last} "
                         f"(start a new KernelTracker for a new run)")
    return step
