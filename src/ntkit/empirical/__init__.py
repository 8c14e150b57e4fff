"""Empirical (finite-width) neural tangent kernels of any ``torch.nn.Module``.

>>> import torch
>>> from ntkit.empirical import empirical_ntk
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
>>> empirical_ntk(model, torch.randn(4, 3)).shape
torch.Size([4, 4])
"""

from ._ntk import empirical_ntk as empirical_ntk

__all__ = ["empirical_ntk"]
