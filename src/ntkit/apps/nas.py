"""Training-free architecture scores: rank candidate networks before training them.

Every score is oriented so that **higher predicts a better architecture**:

- ``"ntk_cond"``: ``-kappa``, minus the condition number ``lambda_max / lambda_min`` of the
  empirical NTK on the scored batch (TE-NAS: Chen, Gong & Wang, "Neural Architecture Search on
  ImageNet in Four GPU Hours", ICLR 2021, where a smaller ``kappa`` ranks higher).
- ``"ntk_trace"``: the trace of the empirical NTK (its trace norm).
- ``"ntk_fro"``: the Frobenius norm of the empirical NTK.
- ``"lga"``: Label-Gradient Alignment (Mok et al., "Demystifying the Neural Tangent Kernel from a
  Practical Perspective", CVPR 2022): the centred alignment of the empirical NTK with the label
  kernel ``Y Y^T`` (``Y`` one-hot for integer class labels), optionally after ``train_steps``.
  Centring removes any affine map of the label kernel, so ``Y Y^T`` and the ``+-1``
  same-class matrix give the same value.
- ``"naswot"``: Mellor et al., "Neural Architecture Search without Training" (ICML 2021):
  ``log det K_H`` with ``K_H[i, j] = N_A - d_H(c_i, c_j)``, where ``c_i`` is the binary code of
  example ``i`` (one bit per unit of every hooked activation: its input ``> 0``) and ``N_A`` the
  number of bits. For ReLU this is the paper's code; for other activations (GELU, Tanh, sine)
  it is the sign pattern of their pre-activations, our extension.
- ``"params"``: the number of trainable parameters.
- ``"flops"``: floating-point operations of one forward pass per example, as counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` (``2 m n k`` per matrix product, convolutions
  likewise; elementwise operations and bias additions are not counted).

The NTK metrics take the ``(N, N)`` empirical NTK of :func:`ntkit.empirical_ntk` summed over
output units (``outputs="trace"``), and the scalars of :mod:`ntkit.analysis`. TE-NAS itself
differentiates the sum of the logits, which adds the cross-output terms ``Theta_ab, a != b``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["METRICS", "NASWOT_ACTIVATIONS", "Score", "score"]

METRICS = ("ntk_cond", "ntk_trace", "ntk_fro", "lga", "naswot", "params", "flops")

#: Module types whose inputs give the NASWOT binary codes by default.
NASWOT_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Softplus, nn.Tanh, nn.Hardtanh, nn.Sigmoid,
)


@dataclass(frozen=True)
class Score:
    """One metric of one architecture over seeds.

    - ``metric``: its name.
    - ``mean``: the mean of ``per_seed`` (higher = predicted better).
    - ``std``: their standard deviation (population form, ``0`` for one seed).
    - ``per_seed``: one value per seed, each the mean over the minibatches.
    - ``seeds``: the seeds, or ``None`` for a module scored as given.
    - ``seconds``: wall time of the whole call.
    """

    metric: str
    mean: float
    std: float
    per_seed: tuple[float, ...]
    seeds: tuple[int, ...] | None
    seconds: float


def score(model: nn.Module | Callable[[int], nn.Module], x, y=None, *, metric: str,
          seeds: Iterable[int] | None = (0,), batch_size: int | None = None,
          train_steps: int = 0, lr: float = 0.1,
          dtype: torch.dtype = torch.float64,
          activations: tuple[type[nn.Module], ...] = NASWOT_ACTIVATIONS,
          name: str | None = None) -> Score:
    """Score an architecture without (or after very little) training.

    For each seed a fresh network is made: ``model(seed)`` for a factory, or for an
    ``nn.Module`` a deep copy whose parameters are redrawn by every submodule's
    ``reset_parameters()`` after ``torch.manual_seed(seed)`` (the global generator's state is
    restored afterwards; a module that owns parameters but has no ``reset_parameters`` raises
    ``TypeError``: pass a factory). ``seeds=None`` scores a copy of the module as given. The
    network is cast to ``dtype``, trained for ``train_steps`` steps of plain SGD (cross-entropy
    for integer labels, mean squared error otherwise) cycling through the minibatches, then put
    in eval mode and scored on every minibatch. ``BatchNorm`` layers use the statistics of the
    scored minibatch, frozen (one forward pass in train mode with cumulative averaging, then
    eval), so that examples stay independent as the empirical NTK requires.

    **Arguments:**

    - ``model``: an ``nn.Module``, or a factory ``seed -> nn.Module``.
    - ``x``: ``(N, *features)`` inputs, tensor or NumPy array, finite.
    - ``y``: ``(N,)`` integer class labels, or ``(N,)`` / ``(N, O)`` float targets; needed by
      ``"lga"`` and by ``train_steps > 0``.
    - ``metric``: one of :data:`METRICS` (see the module docstring for each sign convention).
    - ``seeds``: non-empty ints, or ``None`` (module only).
    - ``batch_size``: score consecutive minibatches of this many examples (a remainder smaller
      than ``batch_size`` is dropped, so every kernel has the same size) and average them;
      ``None``: one batch of all ``N``.
    - ``train_steps``, ``lr``: SGD steps before scoring and their learning rate.
    - ``dtype``: floating dtype of the network and inputs (float64 keeps large condition
      numbers meaningful).
    - ``activations``: module types hooked by ``"naswot"``.
    - ``name``: how errors name the architecture (default: the model's class name).

    **Returns:** a :class:`Score`.

    Example:
        >>> make = lambda seed: nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
        >>> score(make, x, metric="params").mean
        50.0
        >>> s = score(make, x, metric="ntk_cond", seeds=(0, 1))
        >>> len(s.per_seed), s.mean < -1
        (2, True)
    """
    start = time.perf_counter()
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}; got {metric!r}")
    label = name or (type(model).__name__ if isinstance(model, nn.Module)
                     else getattr(model, "__name__", type(model).__name__))
    x = _inputs(x, dtype)
    n = x.shape[0]
    y = _labels(y, n, dtype)
    if (metric == "lga" or train_steps) and y is None:
        raise ValueError(f"metric={metric!r} with train_steps={train_steps} needs labels y")
    if isinstance(train_steps, bool) or not isinstance(train_steps, int) or train_steps < 0:
        raise ValueError(f"train_steps must be an int >= 0; got {train_steps!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
    batches = _batches(n, batch_size)
    seed_list = _seeds(seeds, model)

    values = []
    for seed in seed_list:
        net = _instance(model, seed, label).to(dtype=dtype, device=x.device)
        _check_forward(net, x[batches[0]], label)
        if train_steps:
            _train(net, x, y, batches, train_steps, lr)
        per_batch = [_metric(net, x[b], None if y is None else y[b], metric, activations)
                     for b in batches]
        values.append(float(np.mean(per_batch)))
    arr = np.asarray(values)
    with np.errstate(invalid="ignore"):  # -inf scores (a singular kernel) give a NaN spread
        std = float(arr.std()) if len(arr) > 1 else 0.0
    return Score(metric, float(arr.mean()), std,
                 tuple(values), None if seeds is None else tuple(seed_list),
                 time.perf_counter() - start)


def _metric(net: nn.Module, xb: Tensor, yb: Tensor | None, metric: str,
            activations: tuple[type[nn.Module], ...]) -> float:
    """One metric of ``net`` on one minibatch (``net`` is left in eval mode)."""
    from .. import analysis, empirical_ntk

    if metric == "params":
        return float(sum(p.numel() for p in net.parameters() if p.requires_grad))
    _calibrate_batchnorm(net, xb)
    if metric == "flops":
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(xb)
        return counter.get_total_flops() / xb.shape[0]
    if metric == "naswot":
        return _naswot(net, xb, activations)
    K = empirical_ntk(net, xb).detach()
    if metric == "ntk_cond":
        return -analysis.condition_number(K)
    if metric == "ntk_trace":
        return analysis.trace_norm(K)
    if metric == "ntk_fro":
        return float(torch.linalg.matrix_norm(K))
    return analysis.centered_target_alignment(K, _label_matrix(yb))


def _naswot(net: nn.Module, xb: Tensor, activations: tuple[type[nn.Module], ...]) -> float:
    """``log det K_H`` of Mellor et al. (2021), eq. (2) of their paper:
    ``K_H = c c^T + (1 - c)(1 - c)^T`` equals ``N_A - d_H`` for 0/1 codes ``c``."""
    codes: list[Tensor] = []

    def hook(module, inputs, output):
        codes.append((inputs[0].detach() > 0).reshape(inputs[0].shape[0], -1).to(xb.dtype))

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, activations)]
    try:
        if not handles:
            raise ValueError("naswot: the model has no module of the hooked activation types "
                             f"{[t.__name__ for t in activations]}; pass activations=")
        with torch.no_grad():
            net(xb)
    finally:
        for h in handles:
            h.remove()
    c = torch.cat(codes, dim=1)
    K = c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = torch.linalg.slogdet(K)
    return float(logdet) if float(sign) > 0 else -math.inf


def _calibrate_batchnorm(net: nn.Module, xb: Tensor) -> None:
    """Set every BatchNorm's running statistics to those of ``xb`` and put ``net`` in eval."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch, that batch's statistics
        net.train()
        with torch.no_grad():
            net(xb)
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
    net.eval()


def _train(net: nn.Module, x: Tensor, y: Tensor, batches: list[slice], steps: int,
           lr: float) -> None:
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for step in range(steps):
        b = batches[step % len(batches)]
        out = net(x[b])
        if y.dtype == torch.long:
            loss = nn.functional.cross_entropy(out.reshape(out.shape[0], -1), y[b])
        else:
            loss = nn.functional.mse_loss(out.reshape(y[b].shape), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()


def _label_matrix(y: Tensor) -> Tensor:
    """One-hot ``(N, C)`` for integer labels, the float targets unchanged."""
    if y.dtype == torch.long:
        return nn.functional.one_hot(y).to(torch.float64)
    return y


def _instance(model, seed: int | None, label: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        net = model(seed)
        if not isinstance(net, nn.Module):
            raise TypeError(f"model factory for {label} must return an nn.Module; got "
                            f"{type(net).__name__}")
        return net
    net = copy.deepcopy(model)
    if seed is None:
        return net
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in net.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return net


def _check_forward(net: nn.Module, xb: Tensor, label: str) -> None:
    try:
        with torch.no_grad():
            net.eval()(xb)
    except Exception as err:
        raise ValueError(f"model {label} failed on inputs x of shape {tuple(xb.shape)} and "
                         f"dtype {xb.dtype}: {type(err).__name__}: {err}") from err


def _seeds(seeds, model) -> list[int | None]:
    if seeds is None:
        if not isinstance(model, nn.Module):
            raise ValueError("seeds=None scores a module as given; a factory needs seeds")
        return [None]
    out = list(seeds)
    if not out or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in out):
        raise ValueError(f"seeds must be a non-empty sequence of ints or None; got {seeds!r}")
    if isinstance(model, nn.Module):
        bare = [type(m).__name__ for m in model.modules()
                if any(True for _ in m.parameters(recurse=False))
                and not hasattr(m, "reset_parameters")]
        if bare:
            raise TypeError(f"cannot re-initialise the module per seed: {sorted(set(bare))} own "
                            "parameters but have no reset_parameters(); pass a factory "
                            "model(seed) -> nn.Module, or seeds=None")
    return [int(s) for s in out]


def _inputs(x, dtype: torch.dtype) -> Tensor:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")
    x = torch.as_tensor(x)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be (N, *features) with N >= 1; got shape {tuple(x.shape)}")
    x = x.to(dtype)
    if not torch.isfinite(x).all():
        raise ValueError("x has NaN or inf entries")
    return x


def _labels(y, n: int, dtype: torch.dtype) -> Tensor | None:
    if y is None:
        return None
    y = torch.as_tensor(y)
    if y.shape[0:1] != (n,) or y.ndim > 2:
        raise ValueError(f"y must be (N,) or (N, O) with N = {n} (the length of x); got shape "
                         f"{tuple(y.shape)}")
    if not y.dtype.is_floating_point:
        if y.ndim != 1 or (y < 0).any():
            raise ValueError("integer y must be (N,) class labels >= 0")
        return y.to(torch.long)
    if not torch.isfinite(y).all():
        raise ValueError("y has NaN or inf entries")
    return y.to(dtype)


def _batches(n: int, batch_size: int | None) -> list[slice]:
    if batch_size is None:
        return [slice(0, n)]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or \
            not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be None or an int in [1, N = {n}]; got "
                         f"{batch_size!r}")
    return [slice(i, i + batch_size) for i in range(0, n - batch_size + 1, batch_size)]
