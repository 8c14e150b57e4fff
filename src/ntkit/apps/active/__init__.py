"""Kernel batch active learning: :func:`select` chooses which pool points to label (random,
GP posterior variance, KECOR's coding rate, MaxDet, k-means++, LCMD), :func:`loop` retrains
and reselects and logs the learning curve, :func:`plot_curves` draws curves."""

from ._loop import LearningCurve as LearningCurve
from ._loop import loop as loop
from ._loop import plot_curves as plot_curves
from ._select import METHODS as METHODS
from ._select import select as select

__all__ = ["METHODS", "LearningCurve", "loop", "plot_curves", "select"]
