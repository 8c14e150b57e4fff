"""The trainable weight and bias of the finite twins of ``Dense`` and ``Conv``.

In the NTK parametrization the parameters are standard normal and the forward pass scales
them (``weight_scale = W_std / sqrt(fan_in)``, ``bias_scale = b_std``); in the standard one the
draws carry the variances and the scales are 1. One place for both layers, so that the twins
and the kernels they converge to agree on the parametrization.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["AffineTwin", "draw_normal"]


def draw_normal(shape: tuple[int, ...], std: float, generator: torch.Generator | None,
                dtype: torch.dtype) -> Tensor:
    """``N(0, std^2)`` samples of ``shape``, drawn in float64 then cast for every dtype alike."""
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    return (x * std).to(dtype)


class AffineTwin(nn.Module):
    """``weight`` of ``weight_shape`` (outputs first) and ``bias`` (one per output, or
    ``None``), drawn in that order from ``generator``, with their scales.

    **Arguments:** ``weight_shape``; ``fan_in``, the inputs each output sums over;
    ``W_std``, ``b_std`` (``None``: no bias), ``parametrization`` (``"ntk"`` or
    ``"standard"``) as for :class:`~ntkit.layers.Dense`; ``generator``, ``dtype``.
    """

    def __init__(self, weight_shape: tuple[int, ...], fan_in: int, *, W_std: float,
                 b_std: float | None, parametrization: str, generator: torch.Generator | None,
                 dtype: torch.dtype | None):
        super().__init__()
        dtype = dtype or torch.get_default_dtype()
        ntk = parametrization == "ntk"
        self.weight_scale = W_std / math.sqrt(fan_in) if ntk else 1.0
        self.weight = nn.Parameter(draw_normal(weight_shape,
                                               1.0 if ntk else W_std / math.sqrt(fan_in),
                                               generator, dtype))
        # In the NTK parametrization a zero b_std makes the bias inert: leave it out.
        has_bias = b_std is not None and (not ntk or b_std > 0)
        self.bias_scale = (b_std if ntk else 1.0) if has_bias else 0.0
        self.bias = (nn.Parameter(draw_normal((weight_shape[0],), 1.0 if ntk else b_std,
                                              generator, dtype)) if has_bias else None)

    def scaled_parameters(self) -> tuple[Tensor, Tensor | None]:
        """``(weight_scale * weight, bias_scale * bias)`` as the forward pass uses them (the
        bias ``None`` when absent); a scale of 1 returns the parameter itself."""
        w = self.weight if self.weight_scale == 1.0 else self.weight * self.weight_scale
        b = None
        if self.bias is not None:
            b = self.bias if self.bias_scale == 1.0 else self.bias * self.bias_scale
        return w, b
