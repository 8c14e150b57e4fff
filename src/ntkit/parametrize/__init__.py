"""Parametrizations of any ``torch.nn.Module``: standard (SP), NTK (NTP), maximal-update (muP)
and mean-field (MF) as abc-exponent tables, plans that install them on an unmodified model, the
coordinate check and learning-rate sweeps that test them, the top Hessian eigenvalue
(sharpness), and the lazy/rich output scale.
"""

from ._sharpness import Sharpness as Sharpness
from ._sharpness import sharpness as sharpness

__all__ = ["Sharpness", "sharpness"]
