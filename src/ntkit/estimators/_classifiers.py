"""The two classifiers: on the NTK and on the NNGP of a fully-connected or given network."""

from __future__ import annotations

from numbers import Integral

from sklearn.utils._param_validation import Interval

from ._base import KernelClassifier

__all__ = ["NNGPClassifier", "NTKClassifier"]


class NTKClassifier(KernelClassifier):
    """Classifier on the infinite-width NTK of a network: a C-SVM or kernel ridge.

    The network is ``(Dense(W_std, b_std) - activation) x depth - Dense`` in the NTK
    parametrization (input kernel ``x . x' / d``), or any ``ntkit.layers`` network given as
    ``network``. The kernel of new inputs at predict time is ``K(X, X_fit_)``.

    Parameters
    ----------
    depth : int, default=1
        Number of hidden layers ``Dense - activation`` (``>= 0``); a readout Dense follows.
    fix : int, default=0
        Number of bottom Dense layers frozen, i.e. left out of the NTK's sum over parameters
        (``0 <= fix <= depth``; Arora et al. 2020). ``fix = depth`` trains only the readout,
        whose NTK is the NNGP.
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
        ``"svm"``: ``sklearn.svm.SVC`` on the precomputed kernel (the protocol of Arora et
        al. 2020). ``"ridge"``: closed-form kernel ridge regression (the GP posterior mean)
        on centred one-hot targets, predicting the argmax, solved by
        ``ntkit.solve.kernel_ridge``.
        ``"nystrom_pcg"``: the same ridge estimator on ``n_landmarks`` uniformly drawn
        landmarks, solved by FALKON (``ntkit.solve.krr``), which streams kernel blocks and
        never forms the ``n x n`` kernel: for ``n`` past ~20 000.
    C : float, default=1.0
        The SVM's regularisation (``> 0``); unused by ridge.
    alpha : float, default=1e-6
        Ridge added to the training kernel relative to its mean diagonal,
        ``K + alpha * mean(diag K) * I`` (``>= 0``, scale-free); unused by the SVM.
    dtype : {"float64", "float32"}, default="float64"
        Precision in which the kernel is computed; float64 is recommended.
    memory : str, joblib.Memory or None, default=None
        Where kernels are cached, as for ``sklearn.pipeline.Pipeline``: a ``joblib.Memory``
        or the path of its cache folder. With a memory, the kernels are computed once per
        pair of input arrays and architecture (activation, ``W_std``, ``b_std``, to depth
        ``max(depth, 5)``), so a grid search over ``C``, ``alpha``, ``depth <= 5`` and ``fix``
        computes each kernel once per split. ``None``: nothing is cached.
    n_landmarks : int, default=1000
        Landmarks of ``solver="nystrom_pcg"`` (``>= 1``, capped at ``n_samples``); the
        ridge is ``alpha`` times the landmarks' mean kernel diagonal (an unbiased estimate
        of the training kernel's). Unused by the other solvers.
    random_state : int, torch.Generator or None, default=None
        Draws the landmarks of ``solver="nystrom_pcg"``; unused by the other solvers.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    X_fit_ : ndarray of shape (n_samples, n_features)
        The training inputs, in ``dtype``.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``X`` had string column names.
    svm_ : sklearn.svm.SVC
        The fitted SVM (``solver="svm"``).
    dual_coef_ : ndarray of shape (n_samples, n_classes)
        Kernel ridge coefficients on centred one-hot targets (``solver="ridge"``).
    krr_ : ntkit.solve.KRRModel
        The fitted Nyström model (``solver="nystrom_pcg"``).

    See Also
    --------
    NNGPClassifier : the same on the NNGP kernel.
    ntkit.family.fc_kernel_family : every depth and ``fix`` from one recursion.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from ntkit.estimators import NTKClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = NTKClassifier(depth=3, fix=1, C=10.0).fit(X, y)
    >>> clf.classes_.tolist(), clf.decision_function(X[:2]).shape
    ([0, 1, 2], (2, 3))
    >>> bool(clf.score(X, y) > 0.95)
    True
    """

    _kernel = "ntk"
    _parameter_constraints: dict = {
        **KernelClassifier._parameter_constraints,
        "fix": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, *, depth=1, fix=0, activation="relu", W_std=1.0, b_std=0.0,
                 network=None, solver="svm", C=1.0, alpha=1e-6, dtype="float64",
                 memory=None, n_landmarks=1000, random_state=None):
        self.depth = depth
        self.fix = fix
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.network = network
        self.solver = solver
        self.C = C
        self.alpha = alpha
        self.dtype = dtype
        self.memory = memory
        self.n_landmarks = n_landmarks
        self.random_state = random_state


class NNGPClassifier(KernelClassifier):
    """Classifier on the infinite-width NNGP of a network: a C-SVM or the GP posterior mean.

    The network is ``(Dense(W_std, b_std) - activation) x depth - Dense`` in the NTK
    parametrization (input kernel ``x . x' / d``), or any ``ntkit.layers`` network given as
    ``network``. The kernel of new inputs at predict time is ``K(X, X_fit_)``.

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
        ``"svm"``: ``sklearn.svm.SVC`` on the precomputed kernel. ``"ridge"``: the GP
        posterior mean (kernel ridge regression) on centred one-hot targets, predicting the
        argmax, solved by ``ntkit.solve.kernel_ridge``.
        ``"nystrom_pcg"``: the same ridge estimator on ``n_landmarks`` uniformly drawn
        landmarks, solved by FALKON (``ntkit.solve.krr``), which streams kernel blocks and
        never forms the ``n x n`` kernel: for ``n`` past ~20 000.
    C : float, default=1.0
        The SVM's regularisation (``> 0``); unused by ridge.
    alpha : float, default=1e-6
        Ridge added to the training kernel relative to its mean diagonal,
        ``K + alpha * mean(diag K) * I`` (``>= 0``, scale-free); unused by the SVM.
    dtype : {"float64", "float32"}, default="float64"
        Precision in which the kernel is computed; float64 is recommended.
    memory : str, joblib.Memory or None, default=None
        Where kernels are cached, as for ``sklearn.pipeline.Pipeline``: a ``joblib.Memory``
        or the path of its cache folder. With a memory, the kernels are computed once per
        pair of input arrays and architecture (activation, ``W_std``, ``b_std``, to depth
        ``max(depth, 5)``), so a grid search over ``C``, ``alpha`` and ``depth <= 5``
        computes each kernel once per split. ``None``: nothing is cached.
    n_landmarks : int, default=1000
        Landmarks of ``solver="nystrom_pcg"`` (``>= 1``, capped at ``n_samples``); the
        ridge is ``alpha`` times the landmarks' mean kernel diagonal (an unbiased estimate
        of the training kernel's). Unused by the other solvers.
    random_state : int, torch.Generator or None, default=None
        Draws the landmarks of ``solver="nystrom_pcg"``; unused by the other solvers.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    X_fit_ : ndarray of shape (n_samples, n_features)
        The training inputs, in ``dtype``.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``X`` had string column names.
    svm_ : sklearn.svm.SVC
        The fitted SVM (``solver="svm"``).
    dual_coef_ : ndarray of shape (n_samples, n_classes)
        GP posterior-mean coefficients on centred one-hot targets (``solver="ridge"``).
    krr_ : ntkit.solve.KRRModel
        The fitted Nyström model (``solver="nystrom_pcg"``).

    See Also
    --------
    NTKClassifier : the same on the NTK.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from ntkit.estimators import NNGPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = NNGPClassifier(depth=2, solver="ridge", alpha=1e-2).fit(X, y)
    >>> clf.predict(X[:3]).tolist(), clf.dual_coef_.shape
    ([0, 0, 0], (150, 3))
    """

    _kernel = "nngp"

    def __init__(self, *, depth=1, activation="relu", W_std=1.0, b_std=0.0, network=None,
                 solver="svm", C=1.0, alpha=1e-6, dtype="float64", memory=None,
                 n_landmarks=1000, random_state=None):
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.network = network
        self.solver = solver
        self.C = C
        self.alpha = alpha
        self.dtype = dtype
        self.memory = memory
        self.n_landmarks = n_landmarks
        self.random_state = random_state
