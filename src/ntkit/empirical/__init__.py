"""Empirical (finite-width) kernels of any ``torch.nn.Module``, and its Taylor expansions.

>>> import torch
>>> from ntkit.empirical import empirical_ntk
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
>>> empirical_ntk(model, torch.randn(4, 3)).shape
torch.Size([4, 4])
"""

from ._linearize import linearize as linearize
from ._linearize import taylor as taylor
from ._nngp import empirical_nngp as empirical_nngp
from ._ntk import empirical_ntk as empirical_ntk

__all__ = ["empirical_nngp", "empirical_ntk", "linearize", "taylor"]
