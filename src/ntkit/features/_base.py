"""What every random feature map shares: a ``torch.nn.Module`` that is a scikit-learn transformer.

A subclass states its parameters (``__init__`` stores them, ``_parameter_constraints`` checks
them), draws its randomness once in ``_draw`` and maps inputs in ``_features``; this base does
the rest: parameter and input checks, seeding, the fitted buffers (so ``.to(device)`` moves
them), ``fit`` / ``transform`` / ``fit_transform`` on NumPy arrays, and ``forward`` on tensors
in the input's dtype and device.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor, nn

from .._checks import all_finite
from .._random import torch_generator

__all__ = ["RandomFeatureMap"]


class RandomFeatureMap(TransformerMixin, BaseEstimator, nn.Module):
    """Base of the random feature maps ``phi: (N, d) -> (N, n_components)`` of ntkit.

    A subclass defines ``__init__`` (calling ``super().__init__()`` and storing its parameters
    under their own names, nothing else), extends ``_parameter_constraints``, and implements

    - ``_draw(d, generator) -> dict[str, Tensor]``: all randomness of the map for inputs with
      ``d`` features, drawn in float64 on the CPU from ``generator`` (so a seed gives the same
      map in every dtype and on every device);
    - ``_features(x) -> Tensor``: ``(N, d) -> (N, n_components)`` from the drawn tensors, which
      it reads as attributes ``<name>_`` cast to ``x``'s dtype and device by :meth:`_buffer`.

    ``fit(X)`` only reads ``X``'s number of features (and its dtype and device, where the
    drawn tensors are kept as buffers); ``transform`` takes NumPy arrays (returning float32 for
    float32, else float64) or tensors (returning tensors); ``forward`` takes tensors.
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state", torch.Generator],
    }

    # nn.Module.__init__ sets a public ``training`` flag; scikit-learn's contract allows only
    # parameters as public attributes after __init__, so the flag lives in ``_training``.
    @property
    def training(self) -> bool:
        return self.__dict__.get("_training", True)

    @training.setter
    def training(self, mode: bool) -> None:
        self.__dict__["_training"] = bool(mode)

    def _draw(self, d: int, generator: torch.Generator) -> dict[str, Tensor]:
        raise NotImplementedError

    def _features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _check_hyper(self, d: int) -> None:
        """Checks across parameters and the input dimension ``d`` (``ValueError``)."""

    def __sklearn_is_fitted__(self) -> bool:
        return "n_features_in_" in self.__dict__

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def fit(self, X, y=None):
        """Draw the random map for inputs like ``X``.

        **Arguments:** ``X``: ``(N, d)`` array or tensor (only ``d``, the dtype and the device
        are used); ``y``: ignored.

        **Returns:** ``self``, with ``n_features_in_`` and the drawn tensors set.
        """
        self._validate_params()
        if isinstance(X, Tensor):
            x = self._check_tensor(X, reset=True)
            dtype, device = x.dtype, x.device
        else:
            x = validate_data(self, X, dtype=[np.float64, np.float32])
            dtype, device = torch.float32 if x.dtype == np.float32 else torch.float64, None
        d = int(x.shape[1])
        self.n_features_in_ = d
        self._check_hyper(d)
        self._buffers.clear()  # a refit with fewer layers leaves none of the old ones behind
        for name, value in self._draw(d, torch_generator(self.random_state)).items():
            cast = dtype if value.is_floating_point() else value.dtype  # indices stay ints
            self.register_buffer(name + "_", value.to(dtype=cast, device=device))
        return self

    def transform(self, X):
        """The features of ``X``.

        **Arguments:** ``X``: ``(N, d)`` array or tensor with ``d = n_features_in_``.

        **Returns:** ``(N, n_components)``: a tensor in ``X``'s dtype and device for a tensor,
        else a NumPy array (float32 for float32 input, float64 otherwise).
        """
        check_is_fitted(self)
        if isinstance(X, Tensor):
            return self.forward(X)
        x = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        with torch.no_grad():
            return self._features(torch.from_numpy(np.require(x, requirements="CW"))).numpy()

    def forward(self, x: Tensor) -> Tensor:
        """``(N, d) -> (N, n_components)`` in ``x``'s dtype and on its device."""
        check_is_fitted(self)
        return self._features(self._check_tensor(x, reset=False))

    def _buffer(self, name: str, like: Tensor) -> Tensor:
        """The fitted tensor ``name`` in ``like``'s dtype (if floating) and device."""
        value = getattr(self, name)
        cast = like.dtype if value.is_floating_point() else value.dtype
        return value.to(dtype=cast, device=like.device)

    def _tensor_srht(self, name: str, t: Tensor, s: Tensor) -> Tensor:
        """``Q(t ⊗ s)`` with the TensorSRHT drawn under ``name`` (``_sketch.put_tensor_srht``)."""
        from ._sketch import tensor_srht

        return tensor_srht(t, s, *(self._buffer(f"{name}{key}_", t)
                                   for key in ("sigma", "tau", "rows")))

    def _check_tensor(self, x: Tensor, *, reset: bool) -> Tensor:
        if not x.is_floating_point():
            raise TypeError(f"X must have a floating-point dtype; got {x.dtype}")
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"X must have shape (N, n_features) with N, n_features >= 1; got "
                             f"shape {tuple(x.shape)}")
        if not reset and x.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {x.shape[1]} features, but {type(self).__name__} was "
                             f"fitted on {self.n_features_in_} features")
        if not all_finite(x):
            raise ValueError("X contains NaN or infinity; clean the inputs first")
        return x
