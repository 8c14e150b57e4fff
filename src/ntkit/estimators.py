"""scikit-learn estimators over infinite-width kernels: NTK and NNGP, with a C-SVM or ridge.

Four estimators share one base: :class:`NTKClassifier`, :class:`NTKRegressor`,
:class:`NNGPClassifier`, :class:`NNGPRegressor`. The architecture is either a few parameters
of a fully-connected network, ``(Dense(W_std, b_std) - activation) x depth - Dense`` in the NTK
parametrization (input kernel ``x . x' / d``, as everywhere in ntkit), or any
``ntkit.layers`` network (``network=``). The solver is

- ``"svm"``: a C-SVM (``sklearn.svm.SVC`` / ``SVR``) on the precomputed kernel, the protocol
  of Arora et al. 2020 ("Harnessing the power of infinitely wide deep nets on small-data
  tasks");
- ``"ridge"``: closed-form kernel ridge regression, i.e. the GP posterior mean,
  ``K(X, X_fit) (K(X_fit, X_fit) + alpha * mean(diag K) * I)^{-1} y``, with centred one-hot
  targets for classification (prediction: the argmax). ``alpha`` is relative to the mean
  diagonal of the training kernel, so it does not depend on the kernel's scale.

``fix`` (NTK only) is the number of bottom Dense layers frozen, i.e. left out of the NTK's sum
over parameters (Arora et al. 2020); ``fix = depth`` trains only the readout.

**Kernel reuse.** Every depth and ``fix`` of the FC network come from one recursion
(:func:`ntkit.family.fc_kernel_family`). Kernel families are kept in a small module-level LRU
cache keyed by a fingerprint of the input arrays (bytes, shape, dtype) and the architecture
(activation, ``W_std``, ``b_std``), computed to at least depth ``PREFETCH_DEPTH`` when the cache
can hold it; so a grid search over ``depth x fix x C`` (or ``alpha``) computes each kernel once
per training split and once per (validation split, training split). ``clear_kernel_cache()``
empties it. ``network=`` kernels are cached the same way, keyed by the (hashable) network.

**scikit-learn checks.** All four estimators, with both solvers and on the ``network=`` path,
pass ``sklearn.utils.estimator_checks.parametrize_with_checks`` in float64 with no check
skipped by us (scikit-learn itself skips the pandas half of ``check_*_data_not_an_array``
without pandas, and ``check_array_api_input`` without ``SCIPY_ARRAY_API``). With
``dtype="float32"`` two checks are expected to fail: ``check_methods_sample_order_invariance``
and ``check_methods_subset_invariance`` compare outputs at ``rtol=1e-7``, but the kernel of a
pair of equal inputs is exact only when the whole batch equals the training inputs, and
otherwise carries float32 rounding near ``c = 1`` (~1e-5 relative). The estimators take no
``sample_weight`` and have no ``predict_proba``, so the checks of those do not apply.

Example:
    >>> import numpy as np
    >>> from ntkit.estimators import NTKClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((40, 3))
    >>> y = (X[:, 0] > 0).astype(int)
    >>> clf = NTKClassifier(depth=2, fix=1, solver="svm", C=10.0).fit(X, y)
    >>> clf.predict(X[:5]).shape, clf.decision_function(X[:5]).shape
    ((5,), (5,))
    >>> bool(clf.score(X, y) > 0.9)
    True
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.svm import SVC, SVR
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import layers as L
from .family import KernelFamily, fc_kernel_family
from .solve import centred_one_hot, kernel_ridge

__all__ = [
    "NTKClassifier", "NTKRegressor", "NNGPClassifier", "NNGPRegressor",
    "ACTIVATIONS", "clear_kernel_cache",
]

#: Activation names accepted by ``activation=``; an ``ntkit.layers.Activation`` instance also
#: works. ``identity`` is ``ABReLU(1, 1)`` (a linear network), which the family recursion
#: takes as an activation.
ACTIVATIONS = {
    "relu": L.ReLU,
    "leaky_relu": L.LeakyReLU,
    "abs": L.Abs,
    "erf": L.Erf,
    "gelu": L.GELU,
    "sin": L.Sin,
    "cos": L.Cos,
    "gaussian": L.Gaussian,
    "identity": lambda: L.ABReLU(1.0, 1.0),
}

_DTYPES = {"float64": torch.float64, "float32": torch.float32}

# Arora et al. 2020 search depths 1..5 (and every fix below); computing families at least this
# deep makes such a grid compute each kernel once. Each extra layer is two more (N1, N2) tensors.
PREFETCH_DEPTH = 5


# -- kernel cache -------------------------------------------------------------------------------

class _LRUCache:
    """A thread-safe LRU map bounded in entries and in bytes (values report ``nbytes``)."""

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value, nbytes: int) -> None:
        with self._lock:
            self._items.pop(key, None)
            if nbytes > self.max_bytes or self.max_entries <= 0:
                return
            self._items[key] = (value, nbytes)
            while (len(self._items) > self.max_entries
                   or sum(n for _, n in self._items.values()) > self.max_bytes):
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_CACHE = _LRUCache(max_entries=16, max_bytes=1 << 30)


def clear_kernel_cache() -> None:
    """Forget every cached kernel (they are otherwise evicted least-recently-used first)."""
    _CACHE.clear()


def _fingerprint(x: torch.Tensor) -> tuple:
    digest = hashlib.blake2b(x.contiguous().numpy().tobytes(), digest_size=16).hexdigest()
    return (digest, tuple(x.shape), str(x.dtype))


def _hashable(obj) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def _family(x1: torch.Tensor, x2: torch.Tensor | None, depth: int, activation: L.Activation,
            W_std: float, b_std: float) -> KernelFamily:
    """The FC kernel family of ``(x1, x2)`` to at least ``depth``, from the cache if there."""
    if not _hashable(activation):
        return fc_kernel_family(x1, x2, max_depth=depth, activation=activation,
                                W_std=W_std, b_std=b_std)
    key = ("fc", _fingerprint(x1), None if x2 is None else _fingerprint(x2), activation,
           W_std, b_std)
    hit = _CACHE.get(key)
    if hit is not None and hit[0].max_depth >= depth:
        return hit[0]
    matrix = len(x1) * len(x1 if x2 is None else x2) * x1.element_size()
    # A family to depth D holds 2 D + 1 matrices; prefetch only what fits in a quarter of the
    # cache, so that the train and validation families of a few splits fit together.
    affordable = (_CACHE.max_bytes // 4 // matrix - 1) // 2
    max_depth = max(depth, min(PREFETCH_DEPTH, affordable))
    family = fc_kernel_family(x1, x2, max_depth=max_depth, activation=activation,
                              W_std=W_std, b_std=b_std)
    _CACHE.put(key, family, (2 * max_depth + 1) * matrix)
    return family


def _network_kernel(network: L.Layer, x1: torch.Tensor, x2: torch.Tensor | None,
                    which: str) -> torch.Tensor:
    """``network.kernel(x1, x2)`` (its ``nngp`` or ``ntk``), from the cache if there."""
    key = None
    if _hashable(network):
        key = ("net", _fingerprint(x1), None if x2 is None else _fingerprint(x2), network, which)
        hit = _CACHE.get(key)
        if hit is not None:
            return hit[0]
    k = getattr(network.kernel(x1, x2, get=which), which)
    if not isinstance(k, torch.Tensor) or k.shape != (len(x1), len(x1 if x2 is None else x2)):
        raise ValueError(
            f"network must give one (N1, N2) kernel; got {type(k).__name__} of shape "
            f"{getattr(k, 'shape', None)} from {network!r}"
        )
    if key is not None:
        _CACHE.put(key, k, k.numel() * k.element_size())
    return k


# -- parameter checks ---------------------------------------------------------------------------

def _int_param(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an int {bound}; got {value!r}")
    return int(value)


def _real_param(value, name: str, *, positive: bool = False) -> float:
    real = isinstance(value, (int, float, np.integer, np.floating)) \
        and not isinstance(value, (bool, np.bool_))
    if not (real and math.isfinite(value) and (value > 0 if positive else value >= 0)):
        raise ValueError(f"{name} must be a finite real number "
                         f"{'> 0' if positive else '>= 0'}; got {value!r}")
    return float(value)


def _activation_param(value) -> L.Activation:
    if isinstance(value, L.Activation):
        return value
    if isinstance(value, str) and value in ACTIVATIONS:
        return ACTIVATIONS[value]()
    raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} or an "
                     f"ntkit.layers.Activation instance; got {value!r}")


# -- the estimators -----------------------------------------------------------------------------

class _KernelEstimator(BaseEstimator):
    """Shared machinery: parameter checks, input conversion, kernels, the two solvers."""

    _kernel = "ntk"  # which kernel of the network: "ntk" or "nngp"

    def _check_params(self) -> dict:
        p = {"solver": self.solver}
        if self.solver not in ("svm", "ridge"):
            raise ValueError(f"solver must be 'svm' or 'ridge'; got {self.solver!r}")
        if not isinstance(self.dtype, str) or self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}; got {self.dtype!r}")
        p["dtype"] = _DTYPES[self.dtype]
        p["C"] = _real_param(self.C, "C", positive=True)
        p["alpha"] = _real_param(self.alpha, "alpha")
        if hasattr(self, "epsilon"):
            p["epsilon"] = _real_param(self.epsilon, "epsilon")
        fix = getattr(self, "fix", 0)
        if self.network is not None:
            if not isinstance(self.network, L.Layer):
                raise ValueError(f"network must be an ntkit.layers network (a Layer); got "
                                 f"{self.network!r}")
            if not (isinstance(fix, (int, np.integer)) and fix == 0):
                raise ValueError(f"fix must be 0 when network is given (frozen layers are only "
                                 f"defined for the depth/activation parametrization); got {fix!r}")
            p["network"] = self.network
            return p
        p["depth"] = _int_param(self.depth, "depth", 0)
        p["fix"] = _int_param(fix, "fix", 0, p["depth"])
        p["activation"] = _activation_param(self.activation)
        p["W_std"] = _real_param(self.W_std, "W_std", positive=True)
        p["b_std"] = _real_param(self.b_std, "b_std")
        return p

    def _tensor(self, X) -> torch.Tensor:
        # A copy: sklearn hands in read-only memmaps, and the cache must not see later edits.
        return torch.tensor(np.asarray(X), dtype=_DTYPES[self.dtype])

    def _kernel_matrix(self, p: dict, x1: torch.Tensor, x2: torch.Tensor | None) -> np.ndarray:
        """``(N1, N2)`` float64 kernel between ``x1`` and ``x2`` (``None``: ``x1`` itself)."""
        if "network" in p:
            k = _network_kernel(p["network"], x1, x2, self._kernel)
        else:
            fam = _family(x1, x2, p["depth"], p["activation"], p["W_std"], p["b_std"])
            k = fam.ntk(p["depth"], p["fix"]) if self._kernel == "ntk" else fam.nngp(p["depth"])
        return k.detach().to("cpu", torch.float64).numpy().copy()

    def _fit_kernel(self, p: dict, X, y_targets, svm) -> None:
        """Fit the solver on the training kernel; ``y_targets`` ``(n,)`` or ``(n, k)``."""
        self.X_fit_ = np.asarray(X, dtype=np.dtype(self.dtype))
        k = self._kernel_matrix(p, self._tensor(self.X_fit_), None)
        if p["solver"] == "svm":
            self.svm_ = svm(p).fit(k, y_targets)
            return
        rhs = torch.from_numpy(np.asarray(y_targets, dtype=np.float64))
        self.dual_coef_ = kernel_ridge(torch.from_numpy(k), rhs, alpha=p["alpha"]).numpy()

    def _decision(self, X) -> np.ndarray:
        """``(n,)`` or ``(n, k)`` raw outputs of the fitted solver on new inputs."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        k = self._kernel_matrix(self._check_params(), self._tensor(X), self._tensor(self.X_fit_))
        if self.solver == "svm":
            return self.svm_.decision_function(k) if isinstance(self, ClassifierMixin) \
                else self.svm_.predict(k)
        return k @ self.dual_coef_

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "X_fit_")


class _Classifier(ClassifierMixin, _KernelEstimator):
    def fit(self, X, y):
        """Fit on ``X`` ``(n_samples, n_features)`` and labels ``y`` ``(n_samples,)``.

        **Returns:** ``self``, with ``classes_`` ``(n_classes,)``, ``X_fit_`` and the fitted
        solver (``svm_``, an ``SVC``; or ``dual_coef_`` ``(n_samples, n_classes)``).
        """
        p = self._check_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes; got "
                             f"1 class ({self.classes_[0]!r})")
        if p["solver"] == "ridge":
            targets = centred_one_hot(torch.from_numpy(codes), len(self.classes_)).numpy()
        else:
            targets = codes
        self._fit_kernel(p, X, targets, lambda p: SVC(kernel="precomputed", C=p["C"]))
        return self

    def decision_function(self, X) -> np.ndarray:
        """``(n,)`` scores for two classes (positive: ``classes_[1]``), else
        ``(n, n_classes)`` (one-vs-rest for the SVM, the regression outputs for ridge)."""
        d = self._decision(X)
        if self.solver == "ridge" and d.shape[1] == 2:
            return d[:, 1] - d[:, 0]
        return d

    def predict(self, X) -> np.ndarray:
        """``(n,)`` predicted labels for ``X`` ``(n, n_features)``."""
        d = self.decision_function(X)
        codes = (d > 0).astype(int) if d.ndim == 1 else d.argmax(axis=1)
        return self.classes_[codes]


class _Regressor(RegressorMixin, _KernelEstimator):
    def fit(self, X, y):
        """Fit on ``X`` ``(n_samples, n_features)`` and targets ``y`` ``(n_samples,)``.

        **Returns:** ``self``, with ``X_fit_`` and the fitted solver (``svm_``, an ``SVR``; or
        ``dual_coef_`` ``(n_samples, 1)``).
        """
        p = self._check_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=True)
        self._fit_kernel(p, X, y.astype(np.float64),
                         lambda p: SVR(kernel="precomputed", C=p["C"], epsilon=p["epsilon"]))
        return self

    def predict(self, X) -> np.ndarray:
        """``(n,)`` predictions for ``X`` ``(n, n_features)``."""
        d = self._decision(X)
        return d[:, 0] if d.ndim == 2 else d


_COMMON_DOC = """
    **Arguments** (keyword only; checked in ``fit``, errors name the parameter):

    - ``depth``: number of hidden layers ``Dense - activation`` (``>= 0``); a readout Dense
      follows.{fix}
    - ``activation``: one of ``{acts}``, or an ``ntkit.layers.Activation`` instance.
    - ``W_std``, ``b_std``: weight and bias standard deviations of every Dense (NTK
      parametrization; the input kernel is ``x . x' / d``).
    - ``network``: an ``ntkit.layers`` network used instead of ``depth``, ``activation``,
      ``W_std``, ``b_std`` (which are then ignored){net_fix}.
    - ``solver``: ``"svm"`` (``sklearn.svm.{svm}`` on the precomputed kernel) or ``"ridge"``
      (closed-form kernel ridge regression / GP posterior mean{ridge}).
    - ``C``: the SVM's regularisation (``> 0``).{eps}
    - ``alpha``: ridge added to the diagonal of the training kernel, relative to its mean
      diagonal, ``K + alpha * mean(diag K) * I`` (scale-free; ``>= 0``).
    - ``dtype``: ``"float64"`` (default, recommended) or ``"float32"`` for the kernel.

    Learned attributes: ``X_fit_`` ``(n_samples, n_features)`` (kernels at predict time are
    ``K(X, X_fit_)``), ``n_features_in_``, {learned}and ``svm_`` or ``dual_coef_``.
    See the module docstring for kernel caching and the scikit-learn checks.
"""


def _doc(summary: str, *, ntk: bool, classifier: bool, example: str) -> str:
    fix = ("\n    - ``fix``: number of bottom Dense layers frozen, left out of the NTK's sum "
           "over\n      parameters (``0..depth``; Arora et al. 2020).") if ntk else ""
    return summary + _COMMON_DOC.format(
        fix=fix,
        acts=", ".join(ACTIVATIONS),
        net_fix="; ``fix`` must then be 0" if ntk else "",
        svm="SVC" if classifier else "SVR",
        ridge=", on centred one-hot targets, prediction by argmax" if classifier else "",
        eps="" if classifier else "\n    - ``epsilon``: the SVR's insensitive-tube width "
                                  "(``>= 0``).",
        learned="``classes_`` ``(n_classes,)``, " if classifier else "",
    ) + example


class NTKClassifier(_Classifier):
    _kernel = "ntk"

    def __init__(self, *, depth=1, fix=0, activation="relu", W_std=1.0, b_std=0.0,
                 network=None, solver="svm", C=1.0, alpha=1e-6, dtype="float64"):
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


class NNGPClassifier(_Classifier):
    _kernel = "nngp"

    def __init__(self, *, depth=1, activation="relu", W_std=1.0, b_std=0.0,
                 network=None, solver="svm", C=1.0, alpha=1e-6, dtype="float64"):
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.network = network
        self.solver = solver
        self.C = C
        self.alpha = alpha
        self.dtype = dtype


class NTKRegressor(_Regressor):
    _kernel = "ntk"

    def __init__(self, *, depth=1, fix=0, activation="relu", W_std=1.0, b_std=0.0,
                 network=None, solver="svm", C=1.0, epsilon=0.1, alpha=1e-6, dtype="float64"):
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


class NNGPRegressor(_Regressor):
    _kernel = "nngp"

    def __init__(self, *, depth=1, activation="relu", W_std=1.0, b_std=0.0,
                 network=None, solver="svm", C=1.0, epsilon=0.1, alpha=1e-6, dtype="float64"):
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


NTKClassifier.__doc__ = _doc(
    "Classifier on the infinite-width NTK of a network: C-SVM or kernel ridge.\n",
    ntk=True, classifier=True, example="""
    Example:
        >>> from sklearn.datasets import load_iris
        >>> X, y = load_iris(return_X_y=True)
        >>> clf = NTKClassifier(depth=3, fix=1, C=10.0).fit(X, y)
        >>> clf.classes_.tolist(), clf.decision_function(X[:2]).shape
        ([0, 1, 2], (2, 3))
""")
NNGPClassifier.__doc__ = _doc(
    "Classifier on the infinite-width NNGP of a network: C-SVM or GP posterior mean.\n",
    ntk=False, classifier=True, example="""
    Example:
        >>> from sklearn.datasets import load_iris
        >>> X, y = load_iris(return_X_y=True)
        >>> NNGPClassifier(depth=2, solver="ridge", alpha=1e-2).fit(X, y).predict(X[:3]).tolist()
        [0, 0, 0]
""")
NTKRegressor.__doc__ = _doc(
    "Regressor on the infinite-width NTK of a network: SVR or kernel ridge.\n",
    ntk=True, classifier=False, example="""
    Example:
        >>> import numpy as np
        >>> X = np.linspace(-1, 1, 20)[:, None]
        >>> reg = NTKRegressor(depth=2, b_std=0.1, solver="ridge").fit(X, np.sin(3 * X[:, 0]))
        >>> reg.predict(X[:4]).shape
        (4,)
""")
NNGPRegressor.__doc__ = _doc(
    "Regressor on the infinite-width NNGP of a network: SVR or GP posterior mean.\n",
    ntk=False, classifier=False, example="""
    Example:
        >>> import numpy as np
        >>> from ntkit import layers as L
        >>> net = L.serial(L.Dense(1, b_std=0.1), L.Erf(), L.Dense(1, b_std=0.1))
        >>> X = np.linspace(-1, 1, 20)[:, None]
        >>> reg = NNGPRegressor(network=net, solver="ridge").fit(X, X[:, 0] ** 2)
        >>> x_new = np.linspace(-0.9, 0.9, 7)[:, None]
        >>> bool(reg.score(x_new, x_new[:, 0] ** 2) > 0.99)
        True
""")
