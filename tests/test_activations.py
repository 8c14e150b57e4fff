"""Closed-form activations (``layers/_closed_form.py``) and ``Identity`` (``_activation.py``).

Every closed form is checked against an independent 2-D integral (``_reference``), with
default and non-default constants, directly and through a ``Dense`` layer; the exact
diagonal is checked bit for bit; and the whole kernel contract runs on each activation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.special import erf as sp_erf
from scipy.special import ndtr

from _contract import Case, KernelContract
from _reference import gauss_hermite_2d, homogeneous_2d
from ntkit import layers as L  # noqa: N812 - the documented alias
from ntkit.layers._closed_form import _angle

pytestmark = pytest.mark.usefixtures("single_thread")


@dataclass(frozen=True)
class Ref:
    """An activation with its function and derivative written independently in NumPy."""

    id: str
    layer: L.Activation
    f: object
    df: object
    homogeneous: bool = False  # ReLU-type: integrate exactly by angle, not by Gauss-Hermite

    def __repr__(self):
        return self.id


def _abrelu(a, b):
    return (lambda z: np.where(z < 0, a * z, b * z)), (lambda z: np.where(z < 0, a, b) * 1.0)


def _erf(a, b, c):
    return (lambda z: a * sp_erf(b * z) + c,
            lambda z: a * b * 2 / math.sqrt(math.pi) * np.exp(-b * b * z * z))


def _sin(a, b, c):
    return lambda z: a * np.sin(b * z + c), lambda z: a * b * np.cos(b * z + c)


def _cos(a, b, c):
    return lambda z: a * np.cos(b * z + c), lambda z: -a * b * np.sin(b * z + c)


def _gaussian(a, b):
    return lambda z: a * np.exp(b * z * z), lambda z: 2 * a * b * z * np.exp(b * z * z)


REFS = [
    Ref("relu", L.ReLU(), *_abrelu(0.0, 1.0), homogeneous=True),
    Ref("leaky-default", L.LeakyReLU(), *_abrelu(0.01, 1.0), homogeneous=True),
    Ref("leaky-0.2", L.LeakyReLU(0.2), *_abrelu(0.2, 1.0), homogeneous=True),
    Ref("abrelu(-0.5,2)", L.ABReLU(-0.5, 2.0), *_abrelu(-0.5, 2.0), homogeneous=True),
    Ref("abs", L.Abs(), *_abrelu(-1.0, 1.0), homogeneous=True),
    Ref("erf", L.Erf(), *_erf(1.0, 1.0, 0.0)),
    Ref("erf(1.5,0.7,0.3)", L.Erf(a=1.5, b=0.7, c=0.3), *_erf(1.5, 0.7, 0.3)),
    Ref("gelu", L.GELU(), lambda z: z * ndtr(z),
        lambda z: ndtr(z) + z * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)),
    Ref("sin", L.Sin(), *_sin(1.0, 1.0, 0.0)),
    Ref("sin(1.2,0.8,0.4)", L.Sin(a=1.2, b=0.8, c=0.4), *_sin(1.2, 0.8, 0.4)),
    Ref("cos", L.Cos(), *_cos(1.0, 1.0, 0.0)),
    Ref("cos(1.2,0.8,0.4)", L.Cos(a=1.2, b=0.8, c=0.4), *_cos(1.2, 0.8, 0.4)),
    Ref("gaussian", L.Gaussian(), *_gaussian(1.0, -1.0)),
    Ref("gaussian(0.7,-0.4)", L.Gaussian(a=0.7, b=-0.4), *_gaussian(0.7, -0.4)),
    Ref("gaussian(1,+0.05)", L.Gaussian(a=1.0, b=0.05), *_gaussian(1.0, 0.05)),
]


def reference(ref: Ref, q12, q11, q22) -> tuple[np.ndarray, np.ndarray]:
    """``(E[phi phi], E[phi' phi'])`` from ``_reference`` (no ntkit code)."""
    if ref.homogeneous:
        return (homogeneous_2d(ref.f, ref.f, q11, q12, q22, degree=1),
                homogeneous_2d(ref.df, ref.df, q11, q12, q22, degree=0))
    return (gauss_hermite_2d(ref.f, ref.f, q11, q12, q22),
            gauss_hermite_2d(ref.df, ref.df, q11, q12, q22))


def _grid():
    # Variances 0.3 to 2.5, correlations from -0.9 to 0.95, and the diagonal (c = 1 exactly).
    q = np.array([0.3, 1.0, 2.5])
    c = np.array([-0.9, -0.3, 0.0, 0.5, 0.95])
    q11, q22, cc = (a.ravel() for a in np.meshgrid(q, q, c, indexing="ij"))
    q12 = cc * np.sqrt(q11 * q22)
    return np.concatenate([q12, q]), np.concatenate([q11, q]), np.concatenate([q22, q])


# --------------------------------------------------------------------------------------------
# The reference itself, against textbook identities that share nothing with ntkit.


def test_reference_quadratures_are_exact():
    q12, q11, q22 = _grid()
    # E[cos u cos v] = exp(-(q11 + q22)/2) cosh(q12).
    got = gauss_hermite_2d(np.cos, np.cos, q11, q12, q22)
    want = np.exp(-(q11 + q22) / 2) * np.cosh(q12)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    # Sheppard: E[sign u sign v] = (2/pi) arcsin(c); and E[u v] = q12 (degree 1).
    c = q12 / np.sqrt(q11 * q22)
    got = homogeneous_2d(np.sign, np.sign, q11, q12, q22, degree=0)
    np.testing.assert_allclose(got, 2 / np.pi * np.arcsin(np.clip(c, -1, 1)), atol=1e-12)
    got = homogeneous_2d(lambda z: z, lambda z: z, q11, q12, q22, degree=1)
    np.testing.assert_allclose(got, q12, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------
# Closed forms against the reference.


@pytest.mark.parametrize("ref", REFS, ids=repr)
def test_expectations_match_reference(ref: Ref):
    # The reference is exact to ~1e-12 (test above); closed forms to rounding. Errors are
    # measured against the natural scale sqrt(E[g(u)^2] E[g(v)^2]) of each entry.
    q12, q11, q22 = _grid()
    want_k, want_t = reference(ref, q12, q11, q22)
    got_k, got_t = ref.layer.expectations(*(torch.tensor(a) for a in (q12, q11, q22)), ntk=True)
    for got, want, g in ((got_k, want_k, ref.f), (got_t, want_t, ref.df)):
        d1 = reference_diag(ref, g, q11)
        d2 = reference_diag(ref, g, q22)
        scale = np.sqrt(np.abs(d1 * d2))
        err = np.abs(got.numpy() - want) / np.maximum(scale, 1e-300)
        assert err.max() < 1e-10, (err.max(), got, want)


def reference_diag(ref: Ref, g, q):
    if ref.homogeneous:
        return homogeneous_2d(g, g, q, q, q, degree=1 if g is ref.f else 0)
    return gauss_hermite_2d(g, g, q, q, q)


@pytest.mark.parametrize("ref", REFS, ids=repr)
def test_kernel_through_dense_matches_reference(ref: Ref, x, x2):
    # serial(Dense, act) on two batches: the Dense kernel by hand, K = W^2 x.x'/d + b^2 and
    # Theta = K, then each entry through the reference, so that variances of x1 and x2 are
    # paired correctly. Tolerance: reference accuracy, as above.
    w_std, b_std = 1.2, 0.3
    net = L.serial(L.Dense(5, W_std=w_std, b_std=b_std), ref.layer)
    k = net.kernel(x, x2)
    d = x.shape[1]
    q12 = (w_std**2 * (x @ x2.T) / d + b_std**2).numpy()
    q11 = (w_std**2 * (x * x).sum(1) / d + b_std**2).numpy()[:, None]
    q22 = (w_std**2 * (x2 * x2).sum(1) / d + b_std**2).numpy()[None, :]
    want_k, want_t = reference(ref, q12, q11, q22)
    scale = float(np.abs(want_k).max())
    np.testing.assert_allclose(k.nngp.numpy(), want_k, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(k.ntk.numpy(), q12 * want_t, rtol=0,
                               atol=1e-10 * float(np.abs(q12 * want_t).max()))
    np.testing.assert_allclose(k.cov1.numpy(), reference(ref, q11, q11, q11)[0].ravel(),
                               rtol=1e-10)
    np.testing.assert_allclose(k.cov2.numpy(), reference(ref, q22, q22, q22)[0].ravel(),
                               rtol=1e-10)


def test_erf_williams_formula_by_hand():
    # Williams (1997): E[erf(u) erf(v)] = (2/pi) arcsin(2 q12 / sqrt((1+2 q11)(1+2 q22))).
    q11, q12, q22 = (torch.tensor(v, dtype=torch.float64) for v in (0.7, -0.3, 1.9))
    got, _ = L.Erf().expectations(q12, q11, q22, ntk=False)
    want = 2 / math.pi * math.asin(2 * -0.3 / math.sqrt((1 + 1.4) * (1 + 3.8)))
    assert abs(float(got) - want) < 1e-15


def test_relu_special_angles():
    # Orthogonal (theta = pi/2): E = sqrt(q11 q22)/(2 pi), E' = 1/4. Antipodal (theta = pi):
    # both vanish (up to pi/(2 pi) rounding). Rounding only: 1e-15.
    q11, q22, q12 = (torch.tensor(v, dtype=torch.float64)
                     for v in ([2.0, 1.5], [0.5, 1.5], [0.0, -1.5]))
    k, t = L.ReLU().expectations(q12, q11, q22, ntk=True)
    assert abs(float(k[0]) - 1 / (2 * math.pi)) < 1e-15 and abs(float(t[0]) - 0.25) < 1e-15
    assert abs(float(k[1])) < 1e-15 and abs(float(t[1])) < 1e-15


# --------------------------------------------------------------------------------------------
# The exact diagonal.


def test_angle_is_exactly_zero_on_the_diagonal():
    # q11 = q22 = q12: S and theta must be exactly 0 (not sqrt(eps) from a fused
    # multiply-add or an arccos), so the ReLU diagonal carries no angle error at all.
    q = torch.rand(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 5
    for dtype in (torch.float64, torch.float32):
        s, theta = _angle(q.to(dtype), q.to(dtype), q.to(dtype))
        assert int((s != 0).sum()) == 0 and int((theta != 0).sum()) == 0


@pytest.mark.parametrize("layer", [L.ReLU(), L.LeakyReLU(0.2), L.ABReLU(-0.5, 2.0), L.Abs()],
                         ids=repr)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_abrelu_diagonal_is_exact(layer, dtype, x):
    # At c = 1 the arc-cosine kernel is ((a^2 + b^2)/2) q for both E[phi phi] and, as a
    # factor, Theta: bit for bit, in float32 too (the layer's diagonal is that one rounded
    # product of the same numbers, the computation the test repeats; no transcendental).
    t = (layer.a**2 + layer.b**2) / 2
    pre = L.Dense(3, W_std=1.3, b_std=0.2)
    k0 = L.serial(pre).kernel(x.to(dtype))
    k = L.serial(pre, layer).kernel(x.to(dtype))
    assert torch.equal(k.nngp.diagonal(), k0.nngp.diagonal() * t)
    assert torch.equal(k.ntk.diagonal(), k0.ntk.diagonal() * t)
    assert torch.equal(k.nngp.diagonal(), k.cov1)


# --------------------------------------------------------------------------------------------
# Zero-variance inputs: finite, and equal to the reference limit.


@pytest.mark.parametrize("ref", REFS, ids=repr)
def test_zero_input_gives_finite_kernel(ref: Ref, x):
    # A zero row with no bias has variance 0: u = 0 exactly, so E[phi(0) phi(v)] =
    # phi(0) E[phi(v)]. The reference integrates that degenerate Gaussian directly.
    x = x.clone()
    x[2] = 0.0
    k = L.serial(L.Dense(5, W_std=1.2, b_std=None), ref.layer).kernel(x)
    assert bool(torch.isfinite(k.nngp).all()) and bool(torch.isfinite(k.ntk).all())
    q = (1.44 * (x * x).sum(1) / 4).numpy()
    if ref.homogeneous:
        want = np.zeros_like(q)  # phi(0) = 0
    else:
        want = gauss_hermite_2d(ref.f, ref.f, np.zeros_like(q), np.zeros_like(q), q)
    np.testing.assert_allclose(k.nngp[2].numpy(), want, rtol=1e-10, atol=1e-15)


# --------------------------------------------------------------------------------------------
# The contract on every activation: serial(Dense(width), act), and an NTK head Dense(1).


def _spec(layer):
    return lambda w: L.serial(L.Dense(w, W_std=1.2, b_std=0.3), layer)


# Gaussian with b > 0 is left out of the Monte Carlo: phi^2 has heavy tails (finite variance
# needs 8 b q < 1), so its standard error is unreliable; its closed form is checked above.
CASES = [Case(r.id, _spec(r.layer)) for r in REFS if r.id != "gaussian(1,+0.05)"] + [
    Case("identity", lambda w: L.serial(L.Dense(w, W_std=1.2, b_std=0.3), L.Identity())),
    Case("identity-then-relu",
         lambda w: L.serial(L.Dense(w, W_std=1.2, b_std=0.3), L.Identity(), L.ReLU())),
]


class TestActivationContract(KernelContract):
    @pytest.fixture(params=CASES, ids=repr)
    def case(self, request):
        return request.param
