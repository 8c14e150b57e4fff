"""Closed-form training dynamics and inference on a given kernel (NTK or NNGP).

Conventions are neural-tangents' (``neural_tangents.predict``), so published numbers carry
over: the loss is ``|f(X) - Y|^2 / (2 * y_train.size)``, time ``t`` is counted in
gradient-descent steps of size ``learning_rate``, ``diag_reg`` is relative to the mean
diagonal of the training kernel unless ``diag_reg_absolute_scale=True``, and a kernel
``(N1, N2)`` stands for ``K ⊗ I_outputs``.

- :func:`gradient_descent_mse`: outputs of gradient descent on MSE at any time, given kernels.
- :func:`gradient_descent_mse_ensemble`: mean and covariance of the infinite ensemble of
  infinitely wide networks (NTK) or of the Bayesian posterior (NNGP), from a network spec.
- :func:`gp_inference`: GP posterior mean and covariance for given test kernels.
- :func:`gradient_descent`: any loss (e.g. cross-entropy), by integrating the function-space
  ODE; :func:`max_learning_rate`.
- :func:`student_t`, :func:`scale_mixture`: the NNGP with a prior on the last layer's variance
  (Student-t process for an inverse-gamma prior; Lee et al. 2022).
- :func:`self_distill`, :func:`optimal_alpha`: kernel ridge regression self-distilled with
  ground-truth guidance, in closed form (Borup & Andersen 2021).
"""

from ._distill import SelfDistillation as SelfDistillation
from ._distill import optimal_alpha as optimal_alpha
from ._distill import self_distill as self_distill
from ._ensemble import gradient_descent_mse_ensemble as gradient_descent_mse_ensemble
from ._gp import Gaussian as Gaussian
from ._gp import gp_inference as gp_inference
from ._mse import MSEPredictor as MSEPredictor
from ._mse import gradient_descent_mse as gradient_descent_mse
from ._ode import gradient_descent as gradient_descent
from ._ode import max_learning_rate as max_learning_rate
from ._student_t import ScaleMixture as ScaleMixture
from ._student_t import StudentT as StudentT
from ._student_t import scale_mixture as scale_mixture
from ._student_t import student_t as student_t

__all__ = [
    "gradient_descent_mse", "gradient_descent_mse_ensemble", "gp_inference",
    "gradient_descent", "max_learning_rate", "Gaussian", "MSEPredictor",
    "student_t", "scale_mixture", "StudentT", "ScaleMixture",
    "self_distill", "optimal_alpha", "SelfDistillation",
]
