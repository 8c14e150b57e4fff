"""One small forward pass that measures a model: outputs, parameters, FLOPs, activations.

The numbers feed the memory model (block sizes) and the cost model of ``strategy="auto"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from ._model import check_outputs

__all__ = ["Probe", "probe"]


@dataclass(frozen=True)
class Probe:
    """Per-example measurements of a model at the inputs' dtype."""

    n_out: int  # K, output units
    n_params: int  # P, numbers in the parameters that count
    flops: float  # matmul/conv FLOPs of one forward pass (at least 2 P)
    activations: int  # numbers output by the leaf modules in one forward pass
    itemsize: int  # bytes per number


def probe(model: nn.Module, params: dict[str, Tensor], constants: dict[str, Tensor],
          x: Tensor) -> Probe:
    """Measure ``model`` on (up to) two examples of ``x``; also checks the output shape."""
    x = x[:2]
    n = x.shape[0]
    count = [0]

    def hook(module: nn.Module, args: tuple, output) -> None:
        if isinstance(output, Tensor):
            count[0] += output.numel()

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = functional_call(model, (params, constants), (x,))
    finally:
        for h in handles:
            h.remove()
    n_out = check_outputs(out, n).shape[1]
    n_params = sum(p.numel() for p in params.values())
    flops = max(counter.get_total_flops() / n, 2.0 * n_params)
    return Probe(n_out, n_params, flops, max(count[0] // n, n_out), x.element_size())
