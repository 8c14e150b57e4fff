"""One small forward pass that measures a model: outputs, parameters, FLOPs, activations;
and a second one that checks that the model is deterministic.

The numbers feed the memory model (block sizes) and the cost model of ``strategy="auto"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from ._model import check_outputs, compute_dtype

__all__ = ["Probe", "check_deterministic", "probe"]


@dataclass(frozen=True)
class Probe:
    """Per-example measurements of a model at the computation's dtype."""

    n_out: int  # K, output units
    n_params: int  # P, numbers in the parameters that count
    flops: float  # matmul/conv FLOPs of one forward pass (at least 2 P)
    activations: int  # numbers output by the leaf modules in one forward pass
    itemsize: int  # bytes per number
    dtype: torch.dtype  # of the computation (the inputs', or the model's for integer inputs)


def probe(model: nn.Module, params: dict[str, Tensor], constants: dict[str, Tensor],
          x: Tensor) -> Probe:
    """Measure ``model`` on (up to) two examples of ``x``; also checks the output shape and
    that a second forward pass gives the same outputs (:func:`check_deterministic`)."""
    x = x[:2]
    n = x.shape[0]
    count = [0]

    def hook(module: nn.Module, args: tuple, output) -> None:
        if isinstance(output, Tensor):
            count[0] += output.numel()

    def forward(xs: Tensor):
        return functional_call(model, (params, constants), (xs,))

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = forward(x)
    except (RuntimeError, TypeError, IndexError) as error:
        if x.is_floating_point():
            raise
        raise TypeError(
            f"x1 has the integer dtype {x.dtype}, which is for models that take indices (e.g. "
            f"token ids of an nn.Embedding), but the model failed on it ({error}); for "
            f"features convert them, e.g. x1.double()") from error
    finally:
        for h in handles:
            h.remove()
    n_out = check_outputs(out, n).shape[1]
    check_deterministic(model, forward, x, out)
    n_params = sum(p.numel() for p in params.values())
    flops = max(counter.get_total_flops() / n, 2.0 * n_params)
    dtype = compute_dtype(model, x)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return Probe(n_out, n_params, flops, max(count[0] // n, n_out), itemsize, dtype)


def _tensors(value) -> list[Tensor]:
    """The tensors in a module's arguments or output (nested tuples and lists)."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _same(a: list[Tensor], b: list[Tensor]) -> bool:
    """Bit for bit (the same computation twice), NaNs in the same places counting as equal."""
    return len(a) == len(b) and all(
        s.shape == t.shape and s.dtype == t.dtype
        and (torch.equal(s, t) if not s.is_floating_point()
             else torch.equal(s.isnan(), t.isnan()) and torch.equal(s.nan_to_num(0.0),
                                                                      t.nan_to_num(0.0)))
        for s, t in zip(a, b, strict=True))


def check_deterministic(model: nn.Module, forward: Callable[[Tensor], object], x: Tensor,
                        first) -> None:
    """Raise ``ValueError`` if ``forward(x)`` (under ``no_grad``) differs from ``first``, a
    previous output for the same ``x``: a random model (dropout in training mode, also
    ``F.dropout(..., training=True)`` inside a ``forward``) has no single NTK.

    The comparison is bit for bit: the same computation run twice. (On a GPU, kernels with
    float atomics, e.g. ``index_add_``, may round differently from run to run:
    ``torch.use_deterministic_algorithms(True)`` makes them repeatable.) When it fails, two
    more passes record every module's inputs and outputs, and the error names the innermost
    module whose outputs differ for equal inputs.
    """
    with torch.no_grad():
        if _same(_tensors(first), _tensors(forward(x))):
            return
        runs: list[dict[str, list[tuple[list[Tensor], list[Tensor]]]]] = [{}, {}]
        names = {id(m): name for name, m in model.named_modules(remove_duplicate=False)}
        for run in runs:
            def hook(m: nn.Module, args: tuple, output, run=run) -> None:
                run.setdefault(names[id(m)], []).append(
                    ([t.clone() for t in _tensors(args)], [t.clone() for t in _tensors(output)]))

            handles = [m.register_forward_hook(hook) for m in model.modules()]
            try:
                forward(x)
            finally:
                for h in handles:
                    h.remove()
    random = [name for name, calls in runs[0].items()
              if any(_same(a0, a1) and not _same(o0, o1)
                     for (a0, o0), (a1, o1) in zip(calls, runs[1].get(name, []), strict=False))]
    if not random:
        return  # the first pass's difference came from outside the modules' arithmetic
    name = max(random, key=lambda n: n.count(".") + (n != ""))
    module = model.get_submodule(name)
    where = f"module {name!r} ({type(module).__name__})" if name else type(module).__name__
    raise ValueError(
        f"model: {where} gives different outputs for the same inputs in two forward passes "
        f"(dropout in training mode, or another random operation), so the network has no "
        f"single NTK; the model must be deterministic: call model.eval() or remove the "
        f"randomness (e.g. F.dropout(..., training=self.training))"
    )
