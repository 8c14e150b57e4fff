"""Nyström features of any ntkit kernel: ``phi(x) = k(x, C) K_CC^{-1/2}`` on ``M`` landmarks.

Williams & Seeger, "Using the Nyström Method to Speed Up Kernel Machines" (NeurIPS 2000):
``phi(x) . phi(x') = k(x, C) K_CC^+ k(C, x')``, the kernel projected on the span of the
landmarks' feature vectors, exact whenever ``x`` or ``x'`` is a landmark. The landmarks are
drawn from the training inputs uniformly or by ridge-leverage scores
(:func:`ntkit.solve.sample_landmarks`: the recursive sampling of Musco & Musco 2017).
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import validate_data
from torch import Tensor

from .._random import torch_generator
from ..solve import eigh
from ..solve._landmarks import SAMPLINGS, as_kernel_fn, sample_landmarks
from ._base import RandomFeatureMap

__all__ = ["Nystroem"]


class Nystroem(RandomFeatureMap):
    """Nyström feature map ``(N, d) -> (N, n_components)`` of an ntkit kernel.

    **Arguments:**

    - ``kernel``: an ``ntkit.layers`` network (its ``get`` kernel, ``"ntk"`` or ``"nngp"``) or
      a callable ``k(x1, x2)`` mapping ``(N1, d)``, ``(N2, d)`` tensors to ``(N1, N2)``.
    - ``n_components``: the number ``M`` of landmarks (and features), at most the number of
      training inputs.
    - ``sampling``: ``"uniform"`` or ``"rls"`` (ridge-leverage scores, recursive).
    - ``random_state``: ``None``, an int, a ``torch.Generator`` or a NumPy random state.

    **Fitted:** ``landmarks_`` ``(M, d)``, ``landmark_indices_`` ``(M,)`` rows of the
    training inputs, ``normalization_`` ``(M, M)`` = ``K_CC^{-1/2}`` (pseudo-inverse: the
    eigenvalues that :func:`ntkit.solve.eigh` rounds to 0 are left out).

    Example:
        >>> from ntkit import layers as L
        >>> net = L.serial(L.Dense(1, b_std=0.1), L.ReLU(), L.Dense(1, b_std=0.1))
        >>> x = torch.randn(200, 4, generator=torch.Generator().manual_seed(0),
        ...                 dtype=torch.float64)
        >>> phi = Nystroem(net, n_components=30, random_state=0).fit(x)
        >>> f = phi(x)
        >>> f.shape
        torch.Size([200, 30])
        >>> k = net.kernel(x, get="ntk").ntk  # exact on the landmarks' rows
        >>> i = phi.landmark_indices_
        >>> bool(torch.allclose(f[i] @ f[i].T, k[i][:, i], atol=1e-10))
        True
    """

    _parameter_constraints: dict = {
        **RandomFeatureMap._parameter_constraints,
        "kernel": [callable, HasMethods(["kernel"])],
        "get": [StrOptions({"nngp", "ntk"})],
        "sampling": [StrOptions(set(SAMPLINGS))],
        "n_components": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, kernel=None, *, n_components: int = 100, get: str = "ntk",
                 sampling: str = "uniform", random_state=None):
        super().__init__()
        self.kernel = kernel
        self.n_components = n_components
        self.get = get
        self.sampling = sampling
        self.random_state = random_state

    def fit(self, X, y=None):
        """Draw ``n_components`` landmarks from ``X`` ``(N, d)`` and factor their kernel.

        **Returns:** ``self``, with ``landmarks_``, ``landmark_indices_``,
        ``normalization_`` and ``n_features_in_`` set.
        """
        self._validate_params()
        if self.kernel is None:
            raise TypeError("kernel must be an ntkit.layers network or a callable k(x1, x2); "
                            "got None")
        if isinstance(X, Tensor):
            x = self._check_tensor(X, reset=True)
        else:
            x = torch.from_numpy(np.require(
                validate_data(self, X, dtype=[np.float64, np.float32]), requirements="CW"))
        if self.n_components > x.shape[0]:
            raise ValueError(f"n_components (landmarks) must be at most the number of inputs "
                             f"N={x.shape[0]}; got {self.n_components}")
        self.n_features_in_ = int(x.shape[1])
        kernel_fn = as_kernel_fn(self.kernel, get=self.get)
        idx = sample_landmarks(kernel_fn, x, self.n_components, sampling=self.sampling,
                               generator=torch_generator(self.random_state))
        landmarks = x[idx]
        with torch.no_grad():
            evals, evecs = eigh(kernel_fn(landmarks, landmarks), name="k(landmarks, landmarks)")
        inv_sqrt = torch.where(evals > 0, evals.clamp(min=1e-300).rsqrt(), 0.0)
        self.register_buffer("landmarks_", landmarks)
        self.register_buffer("landmark_indices_", idx)
        self.register_buffer("normalization_", (evecs * inv_sqrt) @ evecs.T)
        return self

    def _features(self, x: Tensor) -> Tensor:
        kernel_fn = as_kernel_fn(self.kernel, get=self.get)
        return kernel_fn(x, self._buffer("landmarks_", x)) @ self._buffer("normalization_", x)
