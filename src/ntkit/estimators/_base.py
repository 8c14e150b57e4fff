"""What the four estimators share: parameter constraints, kernels (through ``memory``), and the
two solvers (a C-SVM on the precomputed kernel, or kernel ridge by :mod:`ntkit.solve`)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.svm import SVC, SVR
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_memory, validate_data

from .._random import torch_generator
from ..layers import ACTIVATIONS, Activation, Layer, activation
from ..solve import centred_one_hot, kernel_ridge, krr, sample_landmarks
from ..solve._landmarks import as_kernel_fn
from ._kernels import PREFETCH_DEPTH, FCKernel, fc_family, network_kernel

__all__ = ["KernelClassifier", "KernelRegressor"]

_DTYPES = {"float64": np.float64, "float32": np.float32}
_POSITIVE = Interval(Real, 0, np.inf, closed="neither")
_NON_NEGATIVE = Interval(Real, 0, np.inf, closed="left")


class _KernelEstimator(BaseEstimator):
    """Parameters, kernels and solvers; subclasses set ``_kernel`` and define ``__init__``."""

    _kernel = "ntk"  # which kernel of the network: "ntk" or "nngp"

    _parameter_constraints: dict = {
        "depth": [Interval(Integral, 0, None, closed="left")],
        # The live key view: names registered later (register_activation) are accepted too.
        "activation": [StrOptions(ACTIVATIONS.keys()), Activation],
        "W_std": [_POSITIVE],
        "b_std": [_NON_NEGATIVE],
        "network": [Layer, None],
        "solver": [StrOptions({"svm", "ridge", "nystrom_pcg"})],
        "n_landmarks": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state", torch.Generator],
        "C": [_POSITIVE],
        "alpha": [_NON_NEGATIVE],
        "dtype": [StrOptions(set(_DTYPES))],
        "memory": [None, str, HasMethods(["cache"])],
    }

    def _check_fix(self) -> int:
        """``fix`` (0 for the NNGP), checked against ``depth`` and ``network``."""
        fix = int(getattr(self, "fix", 0))
        if self.network is not None and fix != 0:
            raise ValueError(f"fix must be 0 when network is given (frozen layers are only "
                             f"defined for the depth/activation parametrization); got {fix!r}")
        if self.network is None and fix > self.depth:
            raise ValueError(f"fix must be an int in 0..depth={self.depth}; got {fix!r}")
        return fix

    def _kernel_matrix(self, x1: np.ndarray, x2: np.ndarray | None) -> np.ndarray:
        """``(N1, N2)`` float64 kernel between ``x1`` and ``x2`` (``None``: ``x1`` itself),
        through ``memory`` when one is given."""
        memory = check_memory(self.memory)
        if self.network is not None:
            return memory.cache(network_kernel)(self.network, x1, x2, which=self._kernel)
        depth = int(self.depth)
        act = self.activation
        # One family serves every depth and fix up to its own depth: when it is kept, compute
        # it deep enough that a grid over depth and fix reuses it. (A joblib.Memory without a
        # location keeps nothing; an object that only has .cache is assumed to keep.)
        keeps = getattr(memory, "location", True) is not None
        family = memory.cache(fc_family)(
            x1, x2,
            max_depth=max(depth, PREFETCH_DEPTH) if keeps else depth,
            activation=act if isinstance(act, Activation) else activation(act),
            W_std=float(self.W_std), b_std=float(self.b_std),
        )
        k = family.ntk(depth, self._check_fix()) if self._kernel == "ntk" \
            else family.nngp(depth)
        return k.to(torch.float64).numpy()

    def _kernel_fn(self):
        """The kernel as a function of two input blocks (tensors), for ``nystrom_pcg``."""
        if self.network is not None:
            return as_kernel_fn(self.network, get=self._kernel)
        act = self.activation
        return FCKernel(int(self.depth), self._check_fix(), self._kernel,
                        act if isinstance(act, Activation) else activation(act),
                        float(self.W_std), float(self.b_std))

    def _fit_nystrom(self, targets) -> None:
        x = torch.from_numpy(self.X_fit_)
        kernel_fn = self._kernel_fn()
        m = min(int(self.n_landmarks), len(x))
        idx = sample_landmarks(kernel_fn, x, m, generator=torch_generator(self.random_state))
        # The ridges agree: lambda n = alpha * mean(diag K), the mean estimated on the
        # (uniform) landmarks.
        scale = float(kernel_fn.diagonal(x[idx]).mean())
        ridge = float(self.alpha) * (scale if scale > 0 else 1.0) / len(x)
        self.krr_ = krr(kernel_fn, x, torch.from_numpy(np.asarray(targets, np.float64)),
                        landmarks=x[idx], ridge=ridge, progress=False)

    def _fit_solver(self, X, targets) -> None:
        """Fit on the training kernel; ``targets`` ``(n,)`` labels/values for the SVM, or
        ``(n, k)`` / ``(n,)`` regression targets for ridge and ``nystrom_pcg``."""
        self._check_fix()
        self.X_fit_ = np.asarray(X, dtype=_DTYPES[self.dtype])
        if self.solver == "nystrom_pcg":
            self._fit_nystrom(targets)
            return
        k = self._kernel_matrix(self.X_fit_, None)
        if self.solver == "svm":
            self.svm_ = self._svm().fit(k, targets)
            return
        rhs = torch.from_numpy(np.asarray(targets, dtype=np.float64))
        self.dual_coef_ = kernel_ridge(torch.from_numpy(k), rhs, alpha=float(self.alpha)).numpy()

    def _decision(self, X) -> np.ndarray:
        """``(n,)`` or ``(n, k)`` raw outputs of the fitted solver on new inputs."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        if self.solver == "nystrom_pcg":
            out = self.krr_.predict(torch.tensor(np.asarray(X, dtype=_DTYPES[self.dtype])))
            return out.to(torch.float64).numpy()
        k = self._kernel_matrix(np.asarray(X, dtype=_DTYPES[self.dtype]), self.X_fit_)
        if self.solver == "ridge":
            return k @ self.dual_coef_
        if isinstance(self, ClassifierMixin):
            return self.svm_.decision_function(k)
        return self.svm_.predict(k)


class KernelClassifier(ClassifierMixin, _KernelEstimator):
    """Classification on a kernel: labels, the SVC or ridge on centred one-hot targets."""

    def _svm(self) -> SVC:
        return SVC(kernel="precomputed", C=float(self.C))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit on ``X`` ``(n_samples, n_features)`` and labels ``y`` ``(n_samples,)``.

        Returns
        -------
        self
            With ``classes_``, ``X_fit_`` and ``svm_`` or ``dual_coef_`` set.
        """
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes; got "
                             f"1 class ({self.classes_[0]!r})")
        if self.solver in ("ridge", "nystrom_pcg"):
            codes = centred_one_hot(torch.from_numpy(codes), len(self.classes_)).numpy()
        self._fit_solver(X, codes)
        return self

    def decision_function(self, X) -> np.ndarray:
        """Scores of ``X`` ``(n_samples, n_features)``.

        Returns
        -------
        ndarray
            ``(n_samples,)`` for two classes (positive: ``classes_[1]``), else
            ``(n_samples, n_classes)``: one-vs-rest for the SVM, the regression outputs on
            centred one-hot targets for ridge.
        """
        d = self._decision(X)
        if self.solver in ("ridge", "nystrom_pcg") and d.shape[1] == 2:
            return d[:, 1] - d[:, 0]
        return d

    def predict(self, X) -> np.ndarray:
        """``(n_samples,)`` predicted labels for ``X`` ``(n_samples, n_features)``."""
        d = self.decision_function(X)
        codes = (d > 0).astype(int) if d.ndim == 1 else d.argmax(axis=1)
        return self.classes_[codes]


class KernelRegressor(RegressorMixin, _KernelEstimator):
    """Regression on a kernel: the SVR or kernel ridge on the targets."""

    _parameter_constraints: dict = {
        **_KernelEstimator._parameter_constraints,
        "epsilon": [_NON_NEGATIVE],
    }

    def _svm(self) -> SVR:
        return SVR(kernel="precomputed", C=float(self.C), epsilon=float(self.epsilon))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit on ``X`` ``(n_samples, n_features)`` and targets ``y`` ``(n_samples,)``.

        Returns
        -------
        self
            With ``X_fit_`` and ``svm_`` or ``dual_coef_`` set.
        """
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=True)
        self._fit_solver(X, y.astype(np.float64))
        return self

    def predict(self, X) -> np.ndarray:
        """``(n_samples,)`` predictions for ``X`` ``(n_samples, n_features)``."""
        d = self._decision(X)
        return d[:, 0] if d.ndim == 2 else d
