"""SNNK features, universal random features and the SNNK layer (ntkit.features._snnk).

Unbiasedness is tested the way the issue asks: many independent estimates of one kernel value,
their mean within 4 standard errors of the closed form. One fit with ``R * m`` i.i.d. features
holds ``R`` independent ``m``-feature maps (disjoint groups of rows of the projection), which is
much cheaper than ``R`` fits and exactly as independent.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from _reference import mean_and_se
from ntkit.features import SNNKFeatures, SNNKLayer, UniversalRandomFeatures

# 4 standard errors: with R = 400 group estimates the standard error is known to ~4%, so a
# correct estimator fails one check with probability ~6e-5; the ~30 checks below, ~2e-3 at
# most, and all seeds are fixed.
Z = 4.0
R, M = 400, 32
F64 = torch.float64


def _pairs(d: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of x and y: x = y, nearly parallel (angle ~1e-3), a generic pair and a pair
    with an obtuse angle, norms 0.5 to 0.9."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, d, generator=g, dtype=F64)
    a = a / a.norm(dim=1, keepdim=True)
    x = torch.stack([0.8 * a[0], 0.7 * a[1], 0.6 * a[2], 0.9 * a[3]])
    near = a[1] + 1e-3 * a[0]
    y = torch.stack([0.8 * a[0], 0.5 * near / near.norm(), 0.7 * a[3], -0.5 * a[3] + 0.3 * a[2]])
    return x, y


def _group_estimates(phi_x: torch.Tensor, phi_y: torch.Tensor, draws: int) -> torch.Tensor:
    """``(R, N)`` estimates of ``phi(x_n) . phi(y_n)`` from ``R`` disjoint groups of draws.

    The columns are ``[part_0 (draws), part_1 (draws), ...]`` (one part for real maps, real
    and imaginary parts for complex ones), each scaled by ``1 / sqrt(total)``: a group's
    estimate is the sum over its draws and parts, times ``R``."""
    prod = (phi_x * phi_y).reshape(phi_x.shape[0], -1, draws).sum(1)   # (N, draws)
    return prod.reshape(prod.shape[0], R, draws // R).sum(-1).T * R


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_snnk_features_unbiased_for_layers_kernel(activation):
    x, y = _pairs()
    phi = SNNKFeatures(R * M, activation=activation, W_std=1.4, b_std=0.3,
                       random_state=0).fit(x)
    est = _group_estimates(phi(x), phi(y), R * M)
    mean, se = mean_and_se(est)
    exact = phi.exact_kernel(x, y).diagonal()
    assert ((mean - exact).abs() <= Z * se).all(), (mean, exact, se)


def test_snnk_relu_kernel_is_arc_cosine():
    # exact_kernel comes from ntkit.layers; check it against Cho & Saul's order-1 arc-cosine
    # kernel written out here: E[relu(u) relu(v)] = |x||y| (sin t + (pi - t) cos t) / (2 pi)
    # for (u, v) of covariance W_std^2 [x.x, x.y; x.y, y.y] / d (b_std = 0).
    x, y = _pairs()
    d, w_std = x.shape[1], 1.4
    phi = SNNKFeatures(8, activation="relu", W_std=w_std, random_state=0).fit(x)
    nx, ny = x.norm(dim=1), y.norm(dim=1)
    dot = (x * y).sum(1)
    t = torch.atan2(((nx * ny) ** 2 - dot**2).clamp(min=0).sqrt(), dot)
    want = w_std**2 / d * nx * ny * (torch.sin(t) + (math.pi - t) * torch.cos(t)) / (2 * math.pi)
    assert torch.allclose(phi.exact_kernel(x, y).diagonal(), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("function", ["exp", "cos", "sin", "gaussian"])
@pytest.mark.parametrize("orthogonal", [False, True])
def test_urf_unbiased_for_function_of_dot_product(function, orthogonal):
    x, w = _pairs()
    b = torch.tensor([0.0, 0.3, -0.5, 0.2], dtype=F64)
    parts = 1 if function == "exp" else 2
    # Orthogonal rows are independent across blocks of d = 6 rows: groups of 36 draws.
    draws = R * 36
    urf = UniversalRandomFeatures(parts * draws, function=function, orthogonal=orthogonal,
                                  random_state=1).fit(x)
    est = _group_estimates(urf(x), urf.weight_features(w, b), draws)
    mean, se = mean_and_se(est)
    exact = urf.exact(x, w, b).diagonal()
    assert ((mean - exact).abs() <= Z * se).all(), (mean, exact, se)
    # The test must be able to fail: 4 SE stay below 60% of each value, so a wrong factor
    # (2, e^b, a sign) is caught. The Gaussian URF has the largest spread (xi ~ N(0, 2):
    # variance ~ E exp(|xi| (|x|^2 + |w|^2))).
    assert (se < 0.15 * exact.abs().clamp(min=0.2)).all(), se


def test_snnk_error_decays_like_inverse_sqrt_m():
    # Relative Frobenius error of K_hat on 500 inputs against the layers' closed form, over
    # m = 256 ... 16384: for i.i.d. features E||K_hat - K||_F^2 = tr(Var)/m exactly, so the
    # log-log slope is -0.5 up to the spread of 3 seeds per m (a few percent per point).
    g = torch.Generator().manual_seed(5)
    x = torch.randn(500, 10, generator=g, dtype=F64)
    ms = [256, 1024, 4096, 16384]
    errors = []
    for m in ms:
        e = []
        for seed in range(3):
            phi = SNNKFeatures(m, activation="relu", b_std=0.1, random_state=seed).fit(x)
            f = phi(x)
            k = phi.exact_kernel(x)
            e.append(float((f @ f.T - k).norm() / k.norm()))
        errors.append(sum(e) / len(e))
    slope = np.polyfit(np.log(ms), np.log(errors), 1)[0]
    assert -0.6 <= slope <= -0.4, (slope, errors)


def test_snnk_layer_approximates_linear_plus_activation():
    # A random nn.Linear(8, 6) (PyTorch's initialisation) and inputs of norm ~0.5: the
    # relative error of the SNNK layer's output falls like m^(-1/2), so by 16x from m = 64 to
    # m = 16384; the mean over 4 seeds must fall by at least 8x (half the ideal factor).
    torch.manual_seed(0)
    lin = nn.Linear(8, 6, dtype=F64)
    x = 0.2 * torch.randn(50, 8, dtype=F64)
    errors = {}
    for m in (64, 16384):
        e = []
        for seed in range(4):
            layer = SNNKLayer.from_linear(lin, activation="cos", n_components=m,
                                          random_state=seed)
            want = torch.cos(lin(x)).detach()
            assert torch.allclose(layer.exact(x), want)
            with torch.no_grad():
                e.append(float((layer(x) - want).norm() / want.norm()))
        errors[m] = sum(e) / len(e)
    assert errors[16384] < errors[64] / 8, errors
    assert errors[16384] < 0.03, errors


def test_snnk_layer_unbiased_and_trainable():
    torch.manual_seed(1)
    lin = nn.Linear(5, 3, dtype=F64)
    x = 0.3 * torch.randn(4, 5, dtype=F64)
    outs = torch.stack([SNNKLayer.from_linear(lin, activation="exp", n_components=64,
                                              random_state=s)(x) for s in range(300)])
    mean, se = mean_and_se(outs)
    assert ((mean - torch.exp(lin(x))).abs() <= Z * se).all()
    layer = SNNKLayer(5, 3, activation="sin", n_components=32, random_state=0, dtype=F64)
    layer(x[None]).sum().backward()                      # leading axes are kept
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()
    assert layer.bias.grad.abs().sum() > 0
    assert layer(x[None]).shape == (1, 4, 3)


def test_transformer_contract_numpy_and_dtype():
    x = np.random.default_rng(0).normal(size=(7, 3))
    phi = SNNKFeatures(16, activation="erf", random_state=0)
    out = phi.fit_transform(x)
    assert isinstance(out, np.ndarray) and out.shape == (7, 16)
    # Same seed, same map in float32 (drawn in float64, then cast).
    f32 = SNNKFeatures(16, activation="erf", random_state=0).fit(x.astype(np.float32))
    assert np.allclose(f32.transform(x.astype(np.float32)), out, atol=1e-5)
    assert UniversalRandomFeatures(8, function="cos", random_state=0).fit(x)(
        torch.from_numpy(x)).shape == (7, 8)


@pytest.mark.parametrize("make, match", [
    (lambda: SNNKFeatures(0), "n_components"),
    (lambda: SNNKFeatures(8, activation="nope"), "activation"),
    (lambda: SNNKFeatures(8, W_std=-1.0), "W_std"),
    (lambda: UniversalRandomFeatures(-3), "n_components"),
    (lambda: UniversalRandomFeatures(8, function="relu"), "SNNKFeatures"),
    (lambda: UniversalRandomFeatures(7, function="cos"), "even"),
])
def test_bad_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make().fit(np.ones((2, 3)))


def test_bad_inputs():
    x = torch.ones(3, 4, dtype=F64)
    with pytest.raises(ValueError, match="NaN"):
        SNNKFeatures(8).fit(torch.full((2, 4), float("nan")))
    urf = UniversalRandomFeatures(8, function="exp", random_state=0).fit(x)
    with pytest.raises(ValueError, match="NaN"):
        urf(x.clone().fill_(float("inf")))
    with pytest.raises(ValueError, match="features"):
        urf.weight_features(torch.ones(2, 5, dtype=F64))
    with pytest.raises(ValueError, match="bias"):
        urf.weight_features(torch.ones(2, 4, dtype=F64), torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="no unbiased URF"):
        SNNKLayer(4, 2, activation="relu", n_components=8)
    with pytest.raises(ValueError, match="n_components"):
        SNNKLayer(4, 2, activation="exp", n_components=0)
