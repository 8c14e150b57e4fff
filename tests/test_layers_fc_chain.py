"""The fused fully connected chain (``ntkit.layers._fc_chain``) against the general route.

The chain applies the same formulas (``Dense.update``, ``Activation.expectations_into``) in
place on reused buffers; the general route runs each layer's ``kernel_fn`` on fresh tensors.
Both are compared entry by entry. The tolerance allows for rounding in another order (the
two are one formula, so they agree to a few ulps of the largest entry): 1e-13 relative in
float64 and 1e-5 in float32, far below the ~1e-3 that a wrong term (a missing bias, a
skipped layer) would leave.
"""

from __future__ import annotations

import pytest
import torch

from ntkit import layers as L
from ntkit.layers import _compute
from ntkit.layers._fc_chain import FCChain

TOL = {torch.float64: 1e-13, torch.float32: 1e-5}


def _general(monkeypatch, net, *args, **kwargs):
    """``net.kernel`` by the general route (the chain switched off)."""
    with monkeypatch.context() as m:
        m.setattr(FCChain, "of", classmethod(lambda cls, *a: None))
        return net.kernel(*args, **kwargs)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _mlp(act, parametrization="ntk", depth=3):
    layers = []
    for _ in range(depth):
        layers += [L.Dense(64, W_std=1.5, b_std=0.05, parametrization=parametrization), act]
    return L.serial(*layers, L.Dense(1, b_std=None, parametrization=parametrization))


ACTS = {"relu": L.ReLU(), "erf": L.Erf(), "leaky": L.LeakyReLU(0.2), "abs": L.Abs(),
        "erf_abc": L.Erf(a=2.0, b=0.5, c=0.3), "gelu": L.GELU(), "sin": L.Sin(),
        "gaussian": L.Gaussian()}


def _x(n, d=12, dtype=torch.float64, seed=0):
    return torch.randn(n, d, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("act", list(ACTS), ids=list(ACTS))
@pytest.mark.parametrize("parametrization", ["ntk", "standard"])
def test_fused_chain_equals_the_general_route(monkeypatch, act, parametrization):
    net = _mlp(ACTS[act], parametrization)
    x, x2 = _x(130), _x(70, seed=1)
    # Blocks of 50: full, partial and diagonal blocks, the buffers reused between them.
    for args in ((x,), (x, x2)):
        fused = net.kernel(*args, batch_size=50)
        general = _general(monkeypatch, net, *args, batch_size=50)
        assert _rel(fused.nngp, general.nngp) < TOL[torch.float64]
        assert _rel(fused.ntk, general.ntk) < TOL[torch.float64]
        assert _rel(fused.cov1, general.cov1) < TOL[torch.float64]
        assert fused.shape1 == general.shape1 and fused.shape2 == general.shape2
        assert fused.is_gaussian == general.is_gaussian
    nngp_only = net.kernel(x, get="nngp", batch_size=50)
    assert nngp_only.ntk is None
    assert _rel(nngp_only.nngp, net.kernel(x).nngp) < TOL[torch.float64]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_chain_keeps_the_exact_diagonal_and_symmetry(dtype):
    """x2=None: the diagonal is the variance chain's exactly, the matrix exactly symmetric,
    and the NTK's diagonal equals the diagonal-only computation."""
    net = _mlp(L.ReLU())
    x = _x(300, dtype=dtype)
    k = net.kernel(x, batch_size=64)
    d = net.kernel(x, diagonal=True)
    assert torch.equal(k.nngp, k.nngp.T) and torch.equal(k.ntk, k.ntk.T)
    assert torch.equal(k.nngp.diagonal(), k.cov1)
    assert _rel(k.ntk.diagonal(), d.ntk) < TOL[dtype]
    assert _rel(k.nngp.diagonal(), d.nngp) < TOL[dtype]


def test_block_sizes_agree():
    """The same kernel from one block and from 7 x 7 blocks through the same buffers."""
    net = _mlp(L.Erf())
    x = _x(200)
    one = net.kernel(x, batch_size=200)
    many = net.kernel(x, batch_size=29)
    assert _rel(many.nngp, one.nngp) < 1e-13 and _rel(many.ntk, one.ntk) < 1e-13


def test_neural_tangents_reference_value():
    """One-hidden-layer ReLU NTK in closed form (Arora et al. 2019, eq. for the arc-cosine
    kernels), computed here by hand, through the fused chain."""
    x = _x(5, d=4)
    k = L.serial(L.Dense(16), L.ReLU(), L.Dense(1)).kernel(x)
    q = x @ x.T / 4
    n = q.diagonal().sqrt()
    c = (q / n[:, None] / n[None, :]).clamp(-1, 1)
    theta = torch.arccos(c)
    nngp = n[:, None] * n[None, :] * (torch.sin(theta) + (torch.pi - theta) * c) / (2 * torch.pi)
    ntk = nngp + q * (torch.pi - theta) / (2 * torch.pi)
    # arccos loses sqrt(eps) near c = 1 (the diagonal); the chain uses atan2 there.
    assert _rel(k.nngp, nngp) < 1e-7 and _rel(k.ntk, ntk) < 1e-7


def test_which_networks_take_the_fused_chain():
    def chain(net):
        planned, _ = net.plan(True)
        return FCChain.of(planned, None)

    assert chain(_mlp(L.ReLU())) is not None
    assert chain(L.Dense(3)) is not None
    assert chain(L.serial(L.Dense(3), L.Erf())) is not None
    # Numerical nonlinearities (serial composes two in a row into one) join through the
    # default expectations_into, which copies.
    assert chain(L.serial(L.Dense(3), L.Elementwise(torch.tanh), L.Dense(1))) is not None
    assert chain(L.serial(L.Dense(3), L.ReLU(), L.Erf(), L.Dense(1))) is not None
    # Fan-out, a nonlinearity first, SIREN's first layer: the general route.
    assert chain(L.serial(L.Dense(3), L.FanOut(2), L.FanInSum())) is None
    assert chain(L.serial(L.ReLU(), L.Dense(1))) is None
    assert chain(L.siren([8])) is None


def test_numerical_and_composed_nonlinearities(monkeypatch):
    """A quadrature nonlinearity in the chain (default expectations_into) gives the general
    route's kernel, also when ``serial`` composed it from two."""
    x = _x(40)
    net = L.serial(L.Dense(3), L.Elementwise(torch.tanh, deg=8), L.Dense(1))
    fused = net.kernel(x, batch_size=16)
    general = _general(monkeypatch, net, x, batch_size=16)
    assert _rel(fused.nngp, general.nngp) < 1e-13 and _rel(fused.ntk, general.ntk) < 1e-13
    net = L.serial(L.Dense(3), L.ReLU(), L.Erf(), L.Dense(1))
    assert _rel(net.kernel(x).nngp, _general(monkeypatch, net, x).nngp) < 1e-13


def test_float32_overflow_still_recomputed_in_float64():
    """Large inputs overflow float32 inside the chain; the driver redoes them in float64."""
    x = _x(40, dtype=torch.float32) * 1e18
    k = _mlp(L.ReLU(), depth=2).kernel(x)
    assert k.nngp.dtype == torch.float32 and bool(torch.isfinite(k.nngp).all())


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_kernel_matrix_is_one_kernel_into_a_reused_buffer(get):
    """``kernel_matrix`` (FALKON's streamed blocks) gives the entries of ``net.kernel`` for
    one kernel, written into ``out`` when given, for rectangles and the symmetric case."""
    net = _mlp(L.ReLU(), depth=2)
    x, c = _x(90), _x(40, seed=3)
    full = getattr(net.kernel(x, c), get)
    buffer = torch.empty(90, 40, dtype=torch.float64)
    for _ in range(2):  # the same buffer twice
        got = _compute.kernel_matrix(net, x, c, get=get, out=buffer)
        assert got.data_ptr() == buffer.data_ptr()
        assert _rel(got, full) < TOL[torch.float64]
    assert _rel(_compute.kernel_matrix(net, x, x, get=get), getattr(net.kernel(x), get)) \
        < TOL[torch.float64]


def test_kernel_matrix_bad_input():
    net = _mlp(L.ReLU(), depth=1)
    x = _x(5)
    with pytest.raises(ValueError, match="get must be"):
        _compute.kernel_matrix(net, x, x, get="both")
    with pytest.raises(ValueError, match=r"out must be a contiguous \(5, 5\)"):
        _compute.kernel_matrix(net, x, x, get="ntk", out=torch.empty(5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="out must be"):
        _compute.kernel_matrix(net, x, x, get="ntk", out=torch.empty(5, 5))  # float32
    with pytest.raises(ValueError, match="NaN"):
        _compute.kernel_matrix(net, x.clone().fill_(float("nan")), x, get="ntk")
