"""A model's tensors for ``torch.func.functional_call``, cast to the inputs' dtype."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["functional_tensors", "check_outputs"]


def functional_tensors(model: nn.Module, dtype: torch.dtype, *,
                       requires_grad: bool) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(trainable, constants)``: name -> tensor dicts covering every parameter and buffer.

    ``trainable`` holds the parameters with ``requires_grad=True`` as fresh leaves (detached
    from the model, so nothing accumulates into ``.grad``), with ``requires_grad`` as asked;
    ``constants`` the frozen parameters and the buffers. Floating-point tensors are cast to
    ``dtype`` (no copy when they already have it). Tied parameters appear once, under their
    first name; ``functional_call`` ties the others to it.
    """

    def cast(t: Tensor) -> Tensor:
        t = t.detach()
        return t.to(dtype) if t.is_floating_point() else t

    trainable: dict[str, Tensor] = {}
    constants: dict[str, Tensor] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
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
