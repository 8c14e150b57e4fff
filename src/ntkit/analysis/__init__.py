"""Kernel diagnostics: spectra, alignment and CKA, kernel movement during training, and the
learning-curve theory (eigenlearning, random-feature ridge risk) that predicts test error from a
kernel's spectrum.

Every function takes plain tensors (a kernel matrix, eigenvalues, features) or a
:class:`~ntkit.Kernel`'s fields and returns tensors or small records; nothing here holds
module-level state.
"""

from ._eigenlearning import EigenlearningPrediction as EigenlearningPrediction
from ._eigenlearning import Eigensystem as Eigensystem
from ._eigenlearning import LearningCurve as LearningCurve
from ._eigenlearning import eigenlearning as eigenlearning
from ._eigenlearning import eigensystem as eigensystem
from ._eigenlearning import learning_curve as learning_curve
from ._learning_plots import plot_learning_curve as plot_learning_curve
from ._rf_risk import RFRiskCurve as RFRiskCurve
from ._rf_risk import RFRiskPrediction as RFRiskPrediction
from ._rf_risk import optimal_ridge as optimal_ridge
from ._rf_risk import rf_learning_curve as rf_learning_curve
from ._rf_risk import rf_risk as rf_risk

__all__: list[str] = [
    "eigenlearning", "learning_curve", "eigensystem", "Eigensystem", "EigenlearningPrediction",
    "LearningCurve", "rf_risk", "rf_learning_curve", "optimal_ridge", "RFRiskPrediction",
    "RFRiskCurve", "plot_learning_curve",
]
