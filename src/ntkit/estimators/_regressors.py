"""The two regressors: on the NTK and on the NNGP of a fully-connected or given network."""

from __future__ import annotations

from numbers import Integral

from sklearn.utils._param_validation import Interval

from ._base import KernelRegressor

__all__ = ["NNGPRegressor", "NTKRegressor"]


class NTKRegressor(KernelRegressor):
    """Regressor on the infinite-width NTK of a network: an SVR or kernel ridge.

    The network is ``(Dense(W_std, b_std) - activation) x depth - Dense`` in the NTK
    parametrization (input kernel ``x . x' / d``), or any ``ntkit.layers`` network given as
    ``network``. Kernel ridge with ``alpha -> 0`` is the mean of the infinitely wide network
    trained to convergence by gradient flow on the squared loss (Jacot et al. 2018).

    Parameters
    ----------
    depth : int, default=1
        Number of hidden layers ``Dense - activation`` (``>= 0``); a readout Dense follows.
    fix : int, default=0
        Number of bottom Dense layers frozen, i.e. left out of the NTK's sum over parameters
        (``0 <= fix <= depth``; Arora et al. 2020).
    activation : str or ntkit.layers.Activation, default="relu"
        A name registered in ``ntkit.layers.ACTIVATIONS`` (``"relu"``, ``"leaky_relu"`` with
        negative slope 0.01 as in torch, ``"abs"``, ``"erf"``, ``"gelu"``, ``"sin"``,
        ``"cos"``, ``"gaussian"``, ``"identity"``, or one added by
        ``ntkit.layers.register_activation``), or an activation instance such as
        ``ntkit.layers.LeakyReLU(0.1)``.
    W_std : float, default=1.0
        Weight standard deviation of every Dense (``> 0``).
    b_std : float, default=0.0
        Bias standard deviation of every Dense (``>= 0``).
    network : ntkit.layers.Layer or None, default=None
        A network used instead of ``depth``, ``activation``, ``W_std`` and ``b_std`` (which
        are then ignored); ``fix`` must be 0. It must give one ``(N1, N2)`` kernel of flat
        inputs ``(N, n_features)``.
    solver : {"svm", "ridge", "nystrom_pcg"}, default="svm"
        ``"svm"``: ``sklearn.svm.SVR`` on the precomputed kernel. ``"ridge"``: closed-form
        kernel ridge regression, solved by ``ntkit.solve.kernel_ridge``.
        ``"nystrom_pcg"``: the same ridge estimator on ``n_landmarks`` uniformly drawn
        landmarks, solved by FALKON (``ntkit.solve.krr``), which streams kernel blocks and
        never forms the ``n x n`` kernel: for ``n`` past ~20 000.
    C : float, default=1.0
        The SVR's regularisation (``> 0``); unused by ridge.
    epsilon : float, default=0.1
        Width of the SVR's insensitive tube (``>= 0``); unused by ridge.
    alpha : float, default=1e-6
        Ridge added to the training kernel relative to its mean diagonal,
        ``K + alpha * mean(diag K) * I`` (``>= 0``, scale-free); unused by the SVR.
    dtype : {"float64", "float32"}, default="float64"
        Precision in which the kernel is computed; float64 is recommended.
    memory : str, joblib.Memory or None, default=None
        Where kernels are cached, as for ``sklearn.pipeline.Pipeline``: a ``joblib.Memory``
        or the path of its cache folder. With a memory, the kernels are computed once per
        pair of input arrays and architecture (activation, ``W_std``, ``b_std``, to depth
        ``max(depth, 5)``), so a grid search over ``C``, ``epsilon``, ``alpha``,
        ``depth <= 5`` and ``fix`` computes each kernel once per split. ``None``: nothing is
        cached.
    n_landmarks : int, default=1000
        Landmarks of ``solver="nystrom_pcg"`` (``>= 1``, capped at ``n_samples``); the
        ridge is ``alpha`` times the landmarks' mean kernel diagonal (an unbiased estimate
        of the training kernel's). Unused by the other solvers.
    random_state : int, torch.Generator or None, default=None
        Draws the landmarks of ``solver="nystrom_pcg"``; unused by the other solvers.

    Attributes
    ----------
    X_fit_ : ndarray of shape (n_samples, n_features)
        The training inputs, in ``dtype``.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``X`` had string column names.
    svm_ : sklearn.svm.SVR
        The fitted SVR (``solver="svm"``).
    dual_coef_ : ndarray of shape (n_samples, 1)
        Kernel ridge coefficients (``solver="ridge"``); predictions are
        ``K(X, X_fit_) @ dual_coef_``.
    krr_ : ntkit.solve.KRRModel
        The fitted Nyström model (``solver="nystrom_pcg"``).

    See Also
    --------
    NNGPRegressor : the same on the NNGP kernel.

    Examples
    --------
    >>> import numpy as np
    >>> from ntkit.estimators import NTKRegressor
    >>> X = np.linspace(-1, 1, 20)[:, None]
    >>> reg = NTKRegressor(depth=2, b_std=0.1, solver="ridge").fit(X, np.sin(3 * X[:, 0]))
    >>> reg.predict(X[:4]).shape, reg.dual_coef_.shape
    ((4,), (20, 1))
    """

    _kernel = "ntk"
    _parameter_constraints: dict = {
        **KernelRegressor._parameter_constraints,
        "fix": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, *, depth=1, fix=0, activation="relu", W_std=1.0, b_std=0.0,
                 network=None, solver="svm", C=1.0, epsilon=0.1, alpha=1e-6,
                 dtype="float64", memory=None, n_landmarks=1000, random_state=None):
        self.depth = depth
        self.fix = fix
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.network = network
        self.solver = solver
        self.C = C
        self.epsilon = epsilon
        self.alpha = alpha
        self.dtype = dtype
        self.memory = memory
        self.n_landmarks = n_landmarks
        self.random_state = random_state


class NNGPRegressor(KernelRegressor):
    """Regressor on the infinite-width NNGP of a network: an SVR or the GP posterior mean.

    The network is ``(Dense(W_std, b_std) - activation) x depth - Dense`` in the NTK
    parametrization (input kernel ``x . x' / d``), or any ``ntkit.layers`` network given as
    ``network``. Kernel ridge is the posterior mean of the GP prior of the infinitely wide
    network with noise variance ``alpha * mean(diag K)``.

    Parameters
    ----------
    depth : int, default=1
        Number of hidden layers ``Dense - activation`` (``>= 0``); a readout Dense follows.
    activation : str or ntkit.layers.Activation, default="relu"
        A name registered in ``ntkit.layers.ACTIVATIONS`` (``"relu"``, ``"leaky_relu"`` with
        negative slope 0.01 as in torch, ``"abs"``, ``"erf"``, ``"gelu"``, ``"sin"``,
        ``"cos"``, ``"gaussian"``, ``"identity"``, or one added by
        ``ntkit.layers.register_activation``), or an activation instance such as
        ``ntkit.layers.LeakyReLU(0.1)``.
    W_std : float, default=1.0
        Weight standard deviation of every Dense (``> 0``).
    b_std : float, default=0.0
        Bias standard deviation of every Dense (``>= 0``).
    network : ntkit.layers.Layer or None, default=None
        A network used instead of ``depth``, ``activation``, ``W_std`` and ``b_std`` (which
        are then ignored). It must give one ``(N1, N2)`` kernel of flat inputs
        ``(N, n_features)``.
    solver : {"svm", "ridge", "nystrom_pcg"}, default="svm"
        ``"svm"``: ``sklearn.svm.SVR`` on the precomputed kernel. ``"ridge"``: the GP
        posterior mean (kernel ridge regression), solved by ``ntkit.solve.kernel_ridge``.
        ``"nystrom_pcg"``: the same ridge estimator on ``n_landmarks`` uniformly drawn
        landmarks, solved by FALKON (``ntkit.solve.krr``), which streams kernel blocks and
        never forms the ``n x n`` kernel: for ``n`` past ~20 000.
    C : float, default=1.0
        The SVR's regularisation (``> 0``); unused by ridge.
    epsilon : float, default=0.1
        Width of the SVR's insensitive tube (``>= 0``); unused by ridge.
    alpha : float, default=1e-6
        Ridge added to the training kernel relative to its mean diagonal,
        ``K + alpha * mean(diag K) * I`` (``>= 0``, scale-free); unused by the SVR.
    dtype : {"float64", "float32"}, default="float64"
        Precision in which the kernel is computed; float64 is recommended.
    memory : str, joblib.Memory or None, default=None
        Where kernels are cached, as for ``sklearn.pipeline.Pipeline``: a ``joblib.Memory``
        or the path of its cache folder. With a memory, the kernels are computed once per
        pair of input arrays and architecture (activation, ``W_std``, ``b_std``, to depth
        ``max(depth, 5)``), so a grid search over ``C``, ``epsilon``, ``alpha`` and
        ``depth <= 5`` computes each kernel once per split. ``None``: nothing is cached.
    n_landmarks : int, default=1000
        Landmarks of ``solver="nystrom_pcg"`` (``>= 1``, capped at ``n_samples``); the
        ridge is ``alpha`` times the landmarks' mean kernel diagonal (an unbiased estimate
        of the training kernel's). Unused by the other solvers.
    random_state : int, torch.Generator or None, default=None
        Draws the landmarks of ``solver="nystrom_pcg"``; unused by the other solvers.

    Attributes
    ----------
    X_fit_ : ndarray of shape (n_samples, n_features)
        The training inputs, in ``dtype``.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``X`` had string column names.
    svm_ : sklearn.svm.SVR
        The fitted SVR (``solver="svm"``).
    dual_coef_ : ndarray of shape (n_samples, 1)
        GP posterior-mean coefficients (``solver="ridge"``); predictions are
        ``K(X, X_fit_) @ dual_coef_``.
    krr_ : ntkit.solve.KRRModel
        The fitted Nyström model (``solver="nystrom_pcg"``).

    See Also
    --------
    NTKRegressor : the same on the NTK.

    Examples
    --------
    >>> import numpy as np
    >>> from ntkit import layers as L
    >>> from ntkit.estimators import NNGPRegressor
    >>> net = L.serial(L.Dense(1, b_std=0.1), L.Erf(), L.Dense(1, b_std=0.1))
    >>> X = np.linspace(-1, 1, 20)[:, None]
    >>> reg = NNGPRegressor(network=net, solver="ridge").fit(X, X[:, 0] ** 2)
    >>> x_new = np.linspace(-0.9, 0.9, 7)[:, None]
    >>> bool(reg.score(x_new, x_new[:, 0] ** 2) > 0.99)
    True
    """

    _kernel = "nngp"

    def __init__(self, *, depth=1, activation="relu", W_std=1.0, b_std=0.0, network=None,
                 solver="svm", C=1.0, epsilon=0.1, alpha=1e-6, dtype="float64",
                 memory=None, n_landmarks=1000, random_state=None):
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.network = network
        self.solver = solver
        self.C = C
        self.epsilon = epsilon
        self.alpha = alpha
        self.dtype = dtype
        self.memory = memory
        self.n_landmarks = n_landmarks
        self.random_state = random_state
