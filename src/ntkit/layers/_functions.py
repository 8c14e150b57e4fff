"""Elementwise functions as spec data: torch functions stored by name, and compositions.

A spec never stores code: an ``Elementwise`` function is one of ``ELEMENTWISE_FUNCTIONS``
(by name) or a :class:`Chain` of nonlinearity layers (by their specs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ELEMENTWISE_FUNCTIONS", "Chain", "function_name"]

ELEMENTWISE_FUNCTIONS = {
    "tanh": torch.tanh, "erf": torch.erf, "sigmoid": torch.sigmoid, "sin": torch.sin,
    "cos": torch.cos, "exp": torch.exp, "relu": torch.relu, "abs": torch.abs,
    "atan": torch.atan, "silu": F.silu, "softplus": F.softplus, "gelu": F.gelu, "elu": F.elu,
    "selu": F.selu, "mish": F.mish, "softsign": F.softsign,
}
_NAMES = {id(fn): name for name, fn in ELEMENTWISE_FUNCTIONS.items()}


def function_name(fn) -> str | None:
    """The name of ``fn`` in ``ELEMENTWISE_FUNCTIONS``, or ``None``."""
    return _NAMES.get(id(fn))


class Chain:
    """``phi_n(...phi_1(x))`` for the finite twin and the quadrature of a composition;
    ``parts`` are nonlinearity layers (objects with ``phi``)."""

    def __init__(self, parts: tuple):
        self.parts = parts

    def __call__(self, x: Tensor) -> Tensor:
        for p in self.parts:
            x = p.phi(x)
        return x

    def __repr__(self) -> str:
        return " then ".join(repr(p) for p in self.parts)

    def __eq__(self, other) -> bool:
        return isinstance(other, Chain) and other.parts == self.parts

    def __hash__(self) -> int:
        return hash(self.parts)
