"""The one activation registry (``ntkit.layers.ACTIVATIONS``): names, keyword arguments,
registration, and that the estimators accept what it holds."""

from __future__ import annotations

import numpy as np
import pytest

from ntkit import estimators as E
from ntkit import layers as L
from ntkit.layers import _named


@pytest.fixture
def registry():
    """The registry, restored in place after the test: registration is process-wide, and the
    estimators' constraint holds a live view of this very dict."""
    saved = dict(_named._REGISTRY)
    yield _named._REGISTRY
    _named._REGISTRY.clear()
    _named._REGISTRY.update(saved)


def test_names_build_the_layer_classes():
    assert L.activation("relu") == L.ReLU()
    assert L.activation("erf") == L.Erf()
    # torch.nn.LeakyReLU's default slope; a caller that wants another says so.
    assert L.activation("leaky_relu") == L.LeakyReLU(0.01)
    assert L.activation("leaky_relu", negative_slope=0.1) == L.LeakyReLU(0.1)
    assert L.activation("identity") == L.ABReLU(1.0, 1.0)
    assert set(L.ACTIVATIONS) >= {"relu", "leaky_relu", "abs", "erf", "gelu", "sin", "cos",
                                  "gaussian", "identity"}


def test_unknown_name_and_bad_keyword():
    with pytest.raises(ValueError, match=r"^activation must be one of \[.*'relu'.*\]; got 'tanh'"):
        L.activation("tanh")
    with pytest.raises(TypeError, match="slope"):
        L.activation("relu", slope=0.2)


def test_registry_view_is_read_only():
    with pytest.raises(TypeError):
        L.ACTIVATIONS["relu"] = L.Erf  # type: ignore[index]


def test_register_a_new_name_reaches_the_estimators(registry):
    X = np.random.default_rng(0).standard_normal((20, 3))
    y = np.sin(X[:, 0])
    with pytest.raises(ValueError, match="'activation' parameter"):
        E.NNGPRegressor(activation="leaky_relu_03", solver="ridge").fit(X, y)
    L.register_activation("leaky_relu_03", lambda: L.LeakyReLU(0.3))
    assert "leaky_relu_03" in L.ACTIVATIONS
    by_name = E.NNGPRegressor(activation="leaky_relu_03", solver="ridge").fit(X, y)
    by_obj = E.NNGPRegressor(activation=L.LeakyReLU(0.3), solver="ridge").fit(X, y)
    # The same activation object built two ways, same computation: bit-exact.
    np.testing.assert_array_equal(by_name.predict(X), by_obj.predict(X))


def test_register_refuses_rebinding_and_non_activations(registry):
    with pytest.raises(ValueError, match="'relu' is already registered; pass replace=True"):
        L.register_activation("relu", L.Erf)
    L.register_activation("relu", L.Erf, replace=True)
    assert L.activation("relu") == L.Erf()
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        L.register_activation("", L.Erf)
    with pytest.raises(TypeError, match="factory must be callable"):
        L.register_activation("x", 3)
    L.register_activation("not_an_activation", lambda: "relu")
    with pytest.raises(TypeError, match="returned str, not an ntkit.layers.Activation"):
        L.activation("not_an_activation")
