"""A model's tensors for ``torch.func.functional_call``: which parameters count, cast to a dtype."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

__all__ = ["ParamSpec", "check_outputs", "compute_dtype", "functional_tensors", "select_params"]

# ``params=`` of the public functions: names of parameters or modules, or a predicate.
ParamSpec = str | Iterable[str] | Callable[[str, nn.Parameter], bool] | None


def select_params(model: nn.Module, params: ParamSpec) -> set[int]:
    """The ``id``s of the parameters that count.

    ``None``: every parameter with ``requires_grad=True``. A name or an iterable of names:
    each names a parameter (``"0.weight"``, any alias of a tied one) or a module, whose
    parameters all count (``"0"``; ``""`` is the whole model). A callable
    ``(name, parameter) -> bool``: the parameters it accepts (under any of their names).
    """
    named = list(model.named_parameters(remove_duplicate=False))
    if params is None:
        chosen = {id(p) for _, p in named if p.requires_grad}
        if not chosen:
            raise ValueError(
                f"model has no parameters with requires_grad=True, so its NTK is zero; got "
                f"{type(model).__name__} with {len(named)} parameter tensor(s), all frozen "
                f"(pass params= to choose parameters explicitly)"
            )
        return chosen
    if callable(params):
        chosen = {id(p) for name, p in named if params(name, p)}
        what = "the predicate accepted none of them"
    else:
        names = [params] if isinstance(params, str) else list(params)
        if not all(isinstance(n, str) for n in names):
            raise TypeError(f"params must be parameter or module names (str) or a predicate; "
                            f"got {params!r}")
        by_name = dict(named)
        modules = dict(model.named_modules(remove_duplicate=False))
        chosen = set()
        for n in names:
            if n in by_name:
                chosen.add(id(by_name[n]))
            elif n in modules:
                chosen.update(id(p) for p in modules[n].parameters())
            else:
                known = ", ".join(repr(k) for k in list(by_name)[:8])
                raise ValueError(f"params: {n!r} names no parameter or module of the model; "
                                 f"its parameters include {known}")
        what = "the names select no parameter tensors"
    if not chosen:
        raise ValueError(f"params selects no parameters ({what}); the NTK would be zero")
    return chosen


def compute_dtype(model: nn.Module, x: Tensor) -> torch.dtype:
    """The dtype of the computation: the inputs', or for integer inputs (indices, e.g. token
    ids) that of the model's first floating-point parameter (else torch's default)."""
    if x.is_floating_point():
        return x.dtype
    return next((p.dtype for p in model.parameters() if p.is_floating_point()),
                torch.get_default_dtype())


def functional_tensors(model: nn.Module, dtype: torch.dtype, *, selected: set[int],
                       requires_grad: bool) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(trainable, constants)``: name -> tensor dicts covering every parameter and buffer.

    ``trainable`` holds the ``selected`` parameters as fresh leaves (detached from the model,
    so nothing accumulates into ``.grad``), with ``requires_grad`` as asked; ``constants`` the
    other parameters and the buffers. Floating-point tensors are cast to ``dtype`` (no copy
    when they already have it). Tied parameters appear once, under their first name;
    ``functional_call`` ties the others to it.
    """

    def cast(t: Tensor) -> Tensor:
        t = t.detach()
        return t.to(dtype) if t.is_floating_point() else t

    trainable: dict[str, Tensor] = {}
    constants: dict[str, Tensor] = {}
    for name, p in model.named_parameters():
        if id(p) in selected:
            trainable[name] = cast(p).requires_grad_(requires_grad)
        else:
            constants[name] = cast(p)
    for name, b in model.named_buffers():
        constants[name] = cast(b)
    return trainable, constants


def check_outputs(out, n: int) -> Tensor:
    """The model's output for ``n`` examples as ``(n, K)``; anything else raises."""
    if not isinstance(out, Tensor):
        raise TypeError(
            f"model must return one tensor of shape (N, *out); got {type(out).__name__} "
            f"(wrap the model to select or concatenate its outputs)"
        )
    if out.ndim == 0 or out.shape[0] != n:
        raise ValueError(
            f"model must return outputs with the batch axis first, (N, *out): for a batch "
            f"of N = {n} examples it returned shape {tuple(out.shape)}"
        )
    if not out.is_floating_point():
        raise TypeError(f"model must return floating-point outputs; got {out.dtype}")
    return out.reshape(n, -1)
