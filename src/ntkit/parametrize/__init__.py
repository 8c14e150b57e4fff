"""Parametrizations of any ``torch.nn.Module``: standard (SP), NTK (NTP), maximal-update (muP)
and mean-field (MF) as abc-exponent tables, plans that install them on an unmodified model, the
coordinate check and learning-rate sweeps that test them, the top Hessian eigenvalue
(sharpness), and the lazy/rich output scale.
"""

from ._centered import Centered as Centered
from ._centered import centered as centered

__all__: list[str] = ["Centered", "centered"]
