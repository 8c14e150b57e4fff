"""Dense layers (``layers/_dense.py``) in the NTK and the standard parametrization."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _contract import Case, KernelContract
from _reference import explicit_ntk, homogeneous_2d
from ntkit import layers as L  # noqa: N812 - the documented alias

pytestmark = pytest.mark.usefixtures("single_thread")


def _gram(a, b):
    return a @ b.T / a.shape[1]


# --------------------------------------------------------------------------------------------
# Closed forms (neural-tangents' recursion, written out by hand).


def test_first_dense_ntk_parametrization(x, x2):
    # K = W^2 x.x'/d + b^2 and Theta = K (the first layer's only parameters act on x).
    k = L.Dense(7, W_std=1.3, b_std=0.4).kernel(x, x2)
    want = 1.69 * _gram(x, x2) + 0.16
    # Rounding only: a few eps of the entries' scale.
    torch.testing.assert_close(k.nngp, want, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(k.ntk, want, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(k.cov1, 1.69 * (x * x).sum(1) / 4 + 0.16, rtol=1e-14, atol=0)
    torch.testing.assert_close(k.cov2, 1.69 * (x2 * x2).sum(1) / 4 + 0.16, rtol=1e-14, atol=0)
    assert k.shape1 == (6, 7) and k.shape2 == (3, 7)


def test_deep_linear_ntk_parametrization(x):
    # Two layers: K2 = W2^2 K1 + b2^2, Theta2 = K2 + W2^2 Theta1 with Theta1 = K1; no bias
    # (b_std=None) adds nothing.
    net = L.serial(L.Dense(5, W_std=1.3, b_std=0.4), L.Dense(3, W_std=0.7, b_std=None))
    k = net.kernel(x)
    k1 = 1.69 * _gram(x, x) + 0.16
    torch.testing.assert_close(k.nngp, 0.49 * k1, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(k.ntk, 0.49 * k1 + 0.49 * k1, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("b_std, plus", [(0.4, 1.0), (0.0, 1.0), (None, 0.0)])
def test_standard_parametrization_closed_form(x, b_std, plus):
    # Standard: Theta1 = d K0 + 1 = x.x' (+1 for a trainable bias, even at b_std = 0);
    # Theta2 = n1 K1 + W2^2 Theta1 (+1). The NNGP is the NTK parametrization's.
    net = L.serial(L.Dense(5, W_std=1.3, b_std=b_std, parametrization="standard"),
                   L.Dense(3, W_std=0.7, b_std=b_std, parametrization="standard"))
    k = net.kernel(x)
    b2 = (b_std or 0.0) ** 2
    k1 = 1.69 * _gram(x, x) + b2
    theta1 = x @ x.T + plus
    torch.testing.assert_close(k.nngp, 0.49 * k1 + b2, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(k.ntk, 5 * k1 + 0.49 * theta1 + plus, rtol=1e-14, atol=1e-14)


def test_standard_ntk_through_relu_closed_form(x):
    # Standard Dense(n) - ReLU - Dense(1): Theta = n E[relu relu] + W^2 (x.x' + 1) E[relu'
    # relu'] + 1, with the arc-cosine expectations from the exact angular reference.
    n = 37
    net = L.serial(L.Dense(n, W_std=1.3, b_std=0.4, parametrization="standard"), L.ReLU(),
                   L.Dense(1, W_std=0.8, b_std=0.2, parametrization="standard"))
    k = net.kernel(x)
    q = (1.69 * _gram(x, x) + 0.16).numpy()
    d = np.diag(q)
    e = homogeneous_2d(lambda z: np.maximum(z, 0), lambda z: np.maximum(z, 0),
                       d[:, None], q, d[None, :], degree=1)
    t = homogeneous_2d(lambda z: (z > 0) * 1.0, lambda z: (z > 0) * 1.0,
                       d[:, None], q, d[None, :], degree=0)
    want = n * e + 0.64 * ((x @ x.T).numpy() + 1) * t + 1
    # Reference accurate to ~1e-12 relative (test_activations.py).
    np.testing.assert_allclose(k.ntk.numpy(), want, rtol=1e-10)
    np.testing.assert_allclose(k.nngp.numpy(), 0.64 * e + 0.04, rtol=1e-10)


# --------------------------------------------------------------------------------------------
# The finite twin.


@pytest.mark.parametrize("parametrization", ["ntk", "standard"])
def test_module_forward_is_the_documented_affine_map(parametrization, x):
    # forward = x @ (weight_scale * weight).T + bias_scale * bias, exactly as documented;
    # checked against the raw parameters (not the module's own forward path).
    m = L.Dense(5, W_std=1.3, b_std=0.4, parametrization=parametrization).module(
        (4,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    layer = m[0] if isinstance(m, torch.nn.Sequential) else m
    w_scale = 1.3 / 2 if parametrization == "ntk" else 1.0
    b_scale = 0.4 if parametrization == "ntk" else 1.0
    want = x @ (w_scale * layer.weight).T + b_scale * layer.bias
    torch.testing.assert_close(m(x), want, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("parametrization, b_std, n_params",
                         [("ntk", 0.4, 2), ("ntk", 0.0, 1), ("ntk", None, 1),
                          ("standard", 0.0, 2), ("standard", None, 1)])
def test_module_has_bias_exactly_when_trainable(parametrization, b_std, n_params):
    # NTK parametrization: a zero b_std makes the bias inert, so it is left out; standard: the
    # bias is the parameter itself and stays (zero-initialised) unless b_std is None. The
    # kernel's "+1" for the standard bias relies on this.
    m = L.Dense(3, b_std=b_std, parametrization=parametrization).module((4,))
    assert len(list(m.parameters())) == n_params


@pytest.mark.parametrize("parametrization", ["ntk", "standard"])
def test_module_initial_weight_scales(parametrization):
    # Standard draws W ~ N(0, W_std^2 / in) and b ~ N(0, b_std^2); NTK draws N(0, 1) for both.
    # 200 x 1000 weights: the sample std has relative standard error 1/sqrt(2 * 2e5) = 0.16%,
    # so 1% is > 6 standard errors; 200 biases: 5% is 1, so we allow 30% (6 standard errors).
    m = L.Dense(200, W_std=1.5, b_std=0.3, parametrization=parametrization).module(
        (1000,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    layer = m[0] if isinstance(m, torch.nn.Sequential) else m
    w_want = 1.0 if parametrization == "ntk" else 1.5 / math.sqrt(1000)
    b_want = 1.0 if parametrization == "ntk" else 0.3
    assert abs(float(layer.weight.detach().std()) / w_want - 1) < 0.01
    assert abs(float(layer.bias.detach().std()) / b_want - 1) < 0.3


def test_module_dtype_follows_request():
    # float32 and float64 twins are the same draws (made in float64, then cast).
    g32, g64 = (torch.Generator().manual_seed(2) for _ in range(2))
    m32 = L.Dense(4).module((3,), generator=g32, dtype=torch.float32)
    m64 = L.Dense(4).module((3,), generator=g64, dtype=torch.float64)
    w32, w64 = next(m32.parameters()), next(m64.parameters())
    assert w32.dtype == torch.float32 and w64.dtype == torch.float64
    torch.testing.assert_close(w32.double(), w64, rtol=6e-8, atol=0)  # float32 rounding


def test_explicit_ntk_of_first_layer_is_exact(x):
    # One Dense(1) in the NTK parametrization: f = W_std/sqrt(d) w.x + b_std b, so the
    # Jacobian NTK is W_std^2 x.x'/d + b_std^2 for every draw: the reference and the kernel
    # agree to rounding without any Monte Carlo.
    net = L.Dense(1, W_std=1.3, b_std=0.4)
    model = net.module((4,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(explicit_ntk(model, x), net.kernel(x).ntk, rtol=1e-14,
                               atol=1e-15)


# --------------------------------------------------------------------------------------------
# The contract.


def _std_head():
    return L.Dense(1, W_std=0.8, b_std=0.2, parametrization="standard")


def _std_head_nobias():
    return L.Dense(1, W_std=0.8, b_std=None, parametrization="standard")


CASES = [
    Case("dense-ntk", lambda w: L.Dense(w, W_std=1.3, b_std=0.4)),
    Case("dense-ntk-nobias", lambda w: L.Dense(w, W_std=0.9, b_std=None)),
    Case("dense-standard",
         lambda w: L.Dense(w, W_std=1.3, b_std=0.4, parametrization="standard"),
         head=_std_head),
    Case("dense-standard-nobias",
         lambda w: L.Dense(w, W_std=1.3, b_std=None, parametrization="standard"),
         head=_std_head_nobias),
    # The standard NTK grows with the width (n K from the head): Monte Carlo compares Theta
    # itself, and its relative error still shrinks like 1/sqrt(width).
    Case("dense-standard-relu",
         lambda w: L.serial(L.Dense(w, W_std=1.3, b_std=0.4, parametrization="standard"),
                            L.ReLU()),
         head=_std_head),
]


class TestDenseContract(KernelContract):
    @pytest.fixture(params=CASES, ids=repr)
    def case(self, request):
        return request.param
