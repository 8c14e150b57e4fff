"""Empirical (finite-width) kernels of any ``torch.nn.Module``, and its Taylor expansions.

``register_structured`` adds a module type, with a :class:`StructuredHandler` that states
its factorisation, to the layers that ``empirical_ntk(strategy="structured")`` computes by
per-layer Gram matrices instead of per-example Jacobians.

>>> import torch
>>> from ntkit.empirical import empirical_ntk
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
>>> empirical_ntk(model, torch.randn(4, 3)).shape
torch.Size([4, 4])
"""

from . import _attention_factors  # noqa: F401 - registers nn.MultiheadAttention
from ._factors import StructuredHandler as StructuredHandler
from ._factors import register_structured as register_structured
from ._linearize import linearize as linearize
from ._linearize import taylor as taylor
from ._nngp import empirical_nngp as empirical_nngp
from ._ntk import empirical_ntk as empirical_ntk

__all__ = ["StructuredHandler", "empirical_nngp", "empirical_ntk", "linearize",
           "register_structured", "taylor"]
