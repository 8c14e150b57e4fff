"""SIREN's uniform first layer for d > 1 coordinates (SirenInput): the kernel contract on
2-D and 3-D coordinates, the d = 1 formula unchanged, the product of sincs against direct
quadrature, and the raw-inputs bookkeeping of the kernel record."""

import math

import numpy as np
import pytest
import torch

from _contract import Case, KernelContract
from ntkit import layers as L

OMEGA = 30.0


def coordinates(d: int):
    """Fixed float64 coordinates, uniform in [-1, 1]^d, ``x`` ``(6, d)`` and ``x2`` ``(3, d)``;
    ``x[5]`` is ``x[0]`` moved by 0.02 per axis (sinc arguments ~0.3: a near pair) and
    ``x[4]`` by -0.15 (arguments ~2, where the uniform and Gaussian first layers differ)."""
    def make():
        g = torch.Generator().manual_seed(77 + d)
        x = 2 * torch.rand(9, d, generator=g, dtype=torch.float64) - 1
        x[5] = x[0] + 0.02
        x[4] = x[0] - 0.15
        return x[:6], x[6:]
    return make


def _hidden(w: int) -> L.Layer:
    return L.serial(L.SirenInput(w, omega_0=OMEGA),
                    L.UniformDense(w, W_std=math.sqrt(2) / OMEGA, b_std=0.3), L.Sin(b=OMEGA))


CASES = [
    Case(f"siren-input-d{d}", lambda w: L.SirenInput(w, omega_0=OMEGA), inputs=coordinates(d))
    for d in (2, 3)
] + [
    Case("siren-input-standard-d2",
         lambda w: L.SirenInput(w, omega_0=OMEGA, parametrization="standard"),
         head=lambda: L.Dense(1, W_std=0.8, b_std=0.2, parametrization="standard"),
         inputs=coordinates(2)),
    # After the first layer a hidden layer of finite width: the mean over twins differs from
    # the limit by O(1/width) (measured within 3.6 standard errors at width 256, no bias
    # allowance needed).
    Case("siren-hidden-d2", _hidden, inputs=coordinates(2), widths=(16, 256), seed_factor=4),
]


class TestSirenNdContract(KernelContract):
    @pytest.fixture(params=CASES, ids=repr)
    def case(self, request):
        return request.param


def _per_unit_kernels(x: torch.Tensor, width: int, seed: int):
    """``(width, N, N)`` per-unit NNGP and NTK samples of one SirenInput twin: ``h_i(x)
    h_i(x')`` and ``g_i(x) . g_i(x')`` with ``g_i`` the gradient of unit ``i`` in its own row
    of parameters (by autograd: unit ``i`` depends on row ``i`` only, so the gradient of the
    sum over units holds every unit's)."""
    model = L.SirenInput(width, omega_0=OMEGA).module(
        (x.shape[1],), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    h = model(x)
    grads = []
    for i in range(x.shape[0]):
        gw, gb = torch.autograd.grad(h[i].sum(), (model.weight, model.bias), retain_graph=True)
        grads.append(torch.cat([gw, gb[:, None]], 1))
    g = torch.stack(grads, 1)  # (width, N, d + 1)
    h = h.detach().T
    return h[:, :, None] * h[:, None, :], g @ g.transpose(1, 2)


@pytest.mark.parametrize("d", [2, 3])
def test_first_layer_units_against_kernel_and_not_gaussian(d):
    # 65536 independent units of one twin: their mean is a Monte Carlo estimate of the
    # first layer's NNGP and NTK with a standard error from the units' spread (exact to ~1%
    # at this sample size). Each entry must lie within 4.5 standard errors (21 entries per
    # kernel; P(|z| > 4.5) ~ 7e-6 each); the Gaussian first layer of the same variances
    # must lie far outside (measured z 15-17 at d = 2 and 31-32 at d = 3, from the pair
    # x[0], x[4]), so the check has power.
    x = coordinates(d)()[0]
    for kind, samples in zip(("nngp", "ntk"), _per_unit_kernels(x, 2**16, seed=d), strict=True):
        mean, se = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
        exact = getattr(L.SirenInput(8, omega_0=OMEGA).kernel(x), kind)
        gauss = getattr(L.SirenInput(8, omega_0=OMEGA, distribution="normal").kernel(x), kind)
        z, z_gauss = ((mean - exact) / se).abs().max(), ((mean - gauss) / se).abs().max()
        assert z < 4.5, (kind, z)
        assert z_gauss > 10, (kind, z_gauss)


def _gram_formula_d1(x1: torch.Tensor, x2: torch.Tensor):
    """The d = 1 NNGP and NTK (NTK parametrization) as ntkit computed them before raw inputs
    reached the layer: from the Gram entries ``q = x x'`` alone."""
    w = OMEGA
    q12, q11, q22 = x1 * x2.T, x1 * x1, (x2 * x2).T

    def sinc(t):
        return torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, 1, t))

    minus = sinc(w * (q11 + q22 - 2 * q12).clamp(min=0).sqrt())
    plus = sinc(w * (q11 + q22 + 2 * q12).clamp(min=0).sqrt()) * math.sin(2 * w) / (2 * w)
    return (minus - plus) / 2, (q12 / 3 + 1 / 3) * w * w * (minus + plus) / 2


def test_d1_unchanged():
    # The raw coordinates give |x -+ x'| directly; the Gram route took the square root of
    # q11 + q22 -+ 2 q12, whose cancellation moves sinc by at most ~w^2 eps |x|^2 / 6
    # (~1e-13 for |x| <= 1). So the two agree to 1e-12 (NTK: relative to its scale ~300).
    g = torch.Generator().manual_seed(5)
    x1 = 2 * torch.rand(7, 1, generator=g, dtype=torch.float64) - 1
    x1[3] = x1[1] + 1e-9
    x1[6] = 0.0
    x2 = torch.cat([x1[:2], 2 * torch.rand(3, 1, generator=g, dtype=torch.float64) - 1])
    layer = L.SirenInput(16, omega_0=OMEGA)
    for a, b in ((x1, None), (x1, x2)):
        k = layer.kernel(a, b)
        nngp, ntk = _gram_formula_d1(a, a if b is None else b)
        torch.testing.assert_close(k.nngp, nngp, rtol=0, atol=1e-12)
        torch.testing.assert_close(k.ntk, ntk, rtol=0, atol=1e-12 * float(ntk.abs().max()))
    diag = layer.kernel(x1, diagonal=True)
    torch.testing.assert_close(diag.nngp, _gram_formula_d1(x1, x1)[0].diagonal(), rtol=0,
                               atol=1e-12)


def _quadrature_d2(x: np.ndarray, y: np.ndarray, nodes: int = 80) -> tuple[float, float]:
    """E[phi(x) phi(y)] and the NTK of one unit, integrated directly over the uniform
    ``(u_1, u_2, v)`` on ``[-1/2, 1/2]^2 x [-1/sqrt 2, 1/sqrt 2]`` (Gauss-Legendre, ``nodes``
    per axis; the integrands oscillate at most ~40 rad over an axis, resolved by 80 nodes
    to ~1e-14). NTK: sum over the parameters of products of derivatives,
    ``d z / d theta_k = x_k / (2 sqrt 3)``, ``d z / d beta = 1 / sqrt 6``."""
    t, wt = np.polynomial.legendre.leggauss(nodes)
    u1, u2, v = np.meshgrid(t / 2, t / 2, t / math.sqrt(2), indexing="ij")
    weight = np.einsum("i,j,k->ijk", wt, wt, wt) / 8  # the mean over [-1, 1]^3
    z1, z2 = u1 * x[0] + u2 * x[1] + v, u1 * y[0] + u2 * y[1] + v
    nngp = float((weight * np.sin(OMEGA * z1) * np.sin(OMEGA * z2)).sum())
    grads = [x * y / 12, 1 / 6]  # products of d z / d param for the weights and the bias
    cos_cos = (weight * OMEGA**2 * np.cos(OMEGA * z1) * np.cos(OMEGA * z2)).sum()
    return nngp, float(cos_cos * (grads[0].sum() + grads[1]))


def test_sinc_products_against_quadrature_d2():
    # The closed form (a product of sincs) against a direct 3-D quadrature of the defining
    # expectation on 10 pairs, some far apart, one near, one at the origin and one at a
    # corner: agreement to 1e-8 (measured ~1e-14; NTK relative to its scale ~100).
    x = np.array([[0.3, -0.7], [0.31, -0.69], [-0.9, 0.95], [1.0, 1.0], [0.0, 0.0]])
    k = L.SirenInput(8, omega_0=OMEGA).kernel(torch.from_numpy(x))
    for i in range(len(x)):
        for j in range(i, len(x)):
            nngp, ntk = _quadrature_d2(x[i], x[j])
            assert abs(float(k.nngp[i, j]) - nngp) < 1e-8
            assert abs(float(k.ntk[i, j]) - ntk) < 1e-8 * 100


def test_raw_inputs_reach_only_the_first_layer():
    x = coordinates(2)()[0]
    k0 = L.Identity().kernel(x, get="nngp")
    raw = type(k0).from_inputs(x).raw_inputs()
    assert raw is not None and raw.x1 is x and raw.x2 is None
    # A record whose kernel was changed no longer describes the raw inputs.
    assert type(k0).from_inputs(x).replace(nngp=k0.nngp.clone()).raw_inputs() is None
    # Identity passes the record on unchanged: SirenInput after it is SirenInput itself (the
    # same numbers through the same code: bit for bit).
    alone = L.SirenInput(8).kernel(x)
    after = L.serial(L.Identity(), L.SirenInput(8)).kernel(x)
    assert torch.equal(alone.nngp, after.nngp) and torch.equal(alone.ntk, after.ntk)
    # After a layer that transforms the inputs the coordinates are gone: a clear error.
    for before in (L.serial(L.FanOut(2), L.FanInConcat()), L.Dense(2)):
        with pytest.raises(ValueError, match="first layer"):
            L.serial(before, L.SirenInput(8)).kernel(x)


def test_bad_input():
    net = L.siren((8, 8))
    x = coordinates(2)()[0]
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="x1 contains 1 NaN"):
        net.kernel(bad)
    with pytest.raises(ValueError, match="x2 contains 1 NaN"):
        net.kernel(x, bad)
    with pytest.raises(ValueError, match=r"inputs of shape \(N, features\)"):
        net.kernel(x[:, :, None])
    with pytest.raises(ValueError, match="x1 must have shape"):
        net.kernel(x[:, 0])
    with pytest.raises(ValueError, match="x2"):
        net.kernel(x, torch.zeros(3, 3, dtype=torch.float64))
