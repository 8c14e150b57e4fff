"""The empirical NNGP kernel: inner products of a model's outputs (or a layer's features)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._blocks import OUTPUTS
from ._checks import check_model, prepare_inputs
from ._model import check_outputs, compute_dtype
from ._probe import check_deterministic

__all__ = ["empirical_nngp"]


def empirical_nngp(model: nn.Module, x1: Tensor, x2: Tensor | None = None, *,
                   outputs: str = "trace", layer: str | None = None,
                   batch_size: int | None = None) -> Tensor:
    """One sample of the NNGP kernel: ``K_ab(x1_i, x2_j) = f_a(x1_i) f_b(x2_j)``.

    Averaged over random initialisations (and divided by ``K`` for ``"trace"``) this
    estimates the infinite-width NNGP kernel (Lee et al. 2018). ``layer`` names a submodule
    whose output, flattened per example, replaces the model's outputs (e.g. the
    penultimate features); the forward pass still runs the whole model.

    **Arguments:**

    - ``model``: maps ``(N, *features)`` to ``(N, *out)``; ``K = prod(out)``.
    - ``x1``: ``(N1, *features)``; ``x2``: ``(N2, *features)`` or ``None`` for ``x1``
      (floating point, or integer indices for a model that takes them, e.g. token ids).
    - ``outputs``: ``"trace"`` ``(N1, N2)`` summed over units, ``"full"``
      ``(N1, N2, K, K)`` or ``"diagonal"`` ``(N1, N2, K)``.
    - ``layer``: name of a submodule (``model.get_submodule``) whose output to use.
    - ``batch_size``: examples per forward pass (``None``: all at once).

    **Returns:** the kernel in the ``outputs`` layout, in the inputs' dtype (the model's
    for integer inputs), no grad.

    Example:
        >>> import torch
        >>> from ntkit.empirical import empirical_nngp
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(),
        ...                             torch.nn.Linear(8, 2)).double()
        >>> x = torch.randn(4, 3, dtype=torch.float64)
        >>> k = empirical_nngp(model, x)
        >>> bool(torch.allclose(k, model(x) @ model(x).T))
        True
        >>> empirical_nngp(model, x, layer="1", outputs="diagonal").shape
        torch.Size([4, 4, 8])
    """
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS}; got {outputs!r}")
    x1, x2, batch_size = prepare_inputs(model, x1, x2, batch_size)
    check_model(model, x1)
    target = None
    if layer is not None:
        try:
            target = model.get_submodule(layer)
        except AttributeError:
            raise ValueError(f"layer: {layer!r} names no submodule of the model") from None
    with torch.no_grad():
        probe = _to_model(model, x1[:2])
        check_deterministic(model, model, probe, model(probe))
    f1 = _outputs(model, target, x1, batch_size)
    f2 = f1 if x2 is None else _outputs(model, target, x2, batch_size)
    if outputs == "trace":
        return f1 @ f2.T
    if outputs == "diagonal":
        return f1[:, None, :] * f2[None, :, :]
    return f1[:, None, :, None] * f2[None, :, None, :]


def _to_model(model: nn.Module, x: Tensor) -> Tensor:
    """Floating-point inputs in the model's dtype; integer indices as they are."""
    if not x.is_floating_point():
        return x
    return x.to(next((p.dtype for p in model.parameters() if p.is_floating_point()), x.dtype))


def _outputs(model: nn.Module, target: nn.Module | None, x: Tensor,
             batch_size: int | None) -> Tensor:
    """``(N, K)``: the model's (or ``target``'s) outputs, in the computation's dtype."""
    dtype = compute_dtype(model, x)
    bs = batch_size or x.shape[0]
    parts = []
    with torch.no_grad():
        for i in range(0, x.shape[0], bs):
            xb = x[i:i + bs]
            seen: list[Tensor] = []
            handle = (target.register_forward_hook(lambda m, a, out, seen=seen: seen.append(out))
                      if target is not None else None)
            try:
                out = model(_to_model(model, xb))
            finally:
                if handle is not None:
                    handle.remove()
            if target is not None:
                if len(seen) != 1:
                    raise ValueError(f"layer must be called once per forward pass; it was "
                                     f"called {len(seen)} times")
                out = seen[0]
            parts.append(check_outputs(out, xb.shape[0]).to(dtype))
    return torch.cat(parts)
