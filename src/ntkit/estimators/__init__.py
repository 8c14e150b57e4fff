"""scikit-learn estimators over infinite-width kernels: NTK and NNGP, with a C-SVM or ridge.

:class:`NTKClassifier`, :class:`NTKRegressor`, :class:`NNGPClassifier` and
:class:`NNGPRegressor` share one base. The architecture is either a few parameters of a
fully-connected network, ``(Dense(W_std, b_std) - activation) x depth - Dense`` in the NTK
parametrization (input kernel ``x . x' / d``, as everywhere in ntkit), or any ``ntkit.layers``
network (``network=``). The solver is ``"svm"`` (``sklearn.svm.SVC`` / ``SVR`` on the
precomputed kernel, the protocol of Arora et al. 2020, "Harnessing the power of infinitely wide
deep nets on small-data tasks") or ``"ridge"`` (closed-form kernel ridge regression, the GP
posterior mean, by :func:`ntkit.solve.kernel_ridge`).

They follow scikit-learn's contract: ``__init__`` only stores parameters, which are checked in
``fit`` against ``_parameter_constraints`` (errors name the parameter); learned state ends in
``_``; they clone, pickle, and pass ``sklearn.utils.estimator_checks.check_estimator``.
Activation names come from the one registry ``ntkit.layers.ACTIVATIONS``.

Nothing is cached unless asked: ``memory=`` (a ``joblib.Memory`` or a folder path, as for
``sklearn.pipeline.Pipeline``) caches kernels on disk keyed on the input arrays and the
architecture, so a grid search over ``C``, ``alpha``, ``depth`` and ``fix`` computes each
kernel once per split.

Example:
    >>> import numpy as np
    >>> from sklearn.model_selection import GridSearchCV
    >>> from ntkit.estimators import NTKClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((40, 3))
    >>> y = (X[:, 0] > 0).astype(int)
    >>> grid = {"depth": [1, 2], "fix": [0, 1], "C": [1.0, 10.0]}
    >>> search = GridSearchCV(NTKClassifier(), grid, cv=2).fit(X, y)
    >>> sorted(search.best_params_)
    ['C', 'depth', 'fix']
"""

from ._classifiers import NNGPClassifier as NNGPClassifier
from ._classifiers import NTKClassifier as NTKClassifier
from ._regressors import NNGPRegressor as NNGPRegressor
from ._regressors import NTKRegressor as NTKRegressor

__all__ = ["NTKClassifier", "NTKRegressor", "NNGPClassifier", "NNGPRegressor"]
