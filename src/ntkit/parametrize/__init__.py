"""Parametrizations of any ``torch.nn.Module``: standard (SP), NTK (NTP), maximal-update (muP)
and mean-field (MF) as abc-exponent tables, plans that install them on an unmodified model, the
coordinate check and learning-rate sweeps that test them, the top Hessian eigenvalue
(sharpness), and the lazy/rich output scale.
"""

from ._abc import ABC as ABC
from ._abc import MF as MF
from ._abc import MUP as MUP
from ._abc import NTP as NTP
from ._abc import SP as SP
from ._abc import Exponents as Exponents
from ._abc import get_abc as get_abc
from ._attention import mup_attention_ as mup_attention_
from ._attention import mup_attention_scale as mup_attention_scale
from ._attention import mup_scaled_dot_product_attention as mup_scaled_dot_product_attention
from ._attention import remove_mup_attention_ as remove_mup_attention_
from ._centered import Centered as Centered
from ._centered import centered as centered
from ._coord import CoordCheck as CoordCheck
from ._coord import coord_check as coord_check
from ._plan import Multiplier as Multiplier
from ._plan import ParamPlan as ParamPlan
from ._plan import Plan as Plan
from ._plan import plan as plan
from ._roles import ParamWidth as ParamWidth
from ._roles import infer_widths as infer_widths
from ._sharpness import Sharpness as Sharpness
from ._sharpness import sharpness as sharpness
from ._sweep import LRSweep as LRSweep
from ._sweep import lr_sweep as lr_sweep

__all__: list[str] = [
    "ABC", "MF", "MUP", "NTP", "SP", "Exponents", "Multiplier", "ParamPlan", "ParamWidth",
    "Plan", "get_abc", "infer_widths", "mup_attention_", "mup_attention_scale",
    "mup_scaled_dot_product_attention", "plan", "remove_mup_attention_",
    "Centered", "centered",
    "CoordCheck", "LRSweep", "Sharpness", "coord_check", "lr_sweep", "sharpness",
]
