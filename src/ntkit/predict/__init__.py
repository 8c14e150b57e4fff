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
"""

from ._ensemble import gradient_descent_mse_ensemble as gradient_descent_mse_ensemble
from ._gp import Gaussian as Gaussian
from ._gp import gp_inference as gp_inference
from ._mse import MSEPredictor as MSEPredictor
from ._mse import gradient_descent_mse as gradient_descent_mse
from ._ode import gradient_descent as gradient_descent
from ._ode import max_learning_rate as max_learning_rate

__all__ = [
    "gradient_descent_mse", "gradient_descent_mse_ensemble", "gp_inference",
    "gradient_descent", "max_learning_rate", "Gaussian", "MSEPredictor",
]
