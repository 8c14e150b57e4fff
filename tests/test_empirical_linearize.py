"""ntkit.empirical: empirical_nngp, linearize and taylor (float64, small models)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import ntkit as nk
from ntkit import layers as L  # noqa: N812 - the convention of docs/conventions.md
from ntkit.empirical import empirical_nngp, empirical_ntk, linearize, taylor
from test_empirical import F64, _assert_rel_close, _gen, _inputs


def _mlp(seed=30, outputs=2):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(),
                         nn.Linear(8, outputs)).to(F64)


def _shifted(module: nn.Module, direction: dict[str, torch.Tensor], eps: float) -> nn.Module:
    """A copy of ``module`` with ``eps * direction`` added to the named parameters."""
    out = copy.deepcopy(module)
    with torch.no_grad():
        for n, p in out.named_parameters():
            if n in direction:
                p.add_(eps * direction[n])
    return out


def _direction(module: nn.Module, seed=31, prefix=""):
    g = _gen(seed)
    return {prefix + n: torch.randn(p.shape, dtype=F64, generator=g)
            for n, p in module.named_parameters()}


def test_exports():
    assert nk.empirical_nngp is empirical_nngp and nk.linearize is linearize
    assert nk.taylor is taylor


def test_nngp_layouts_are_outer_products_of_outputs_and_features():
    model = _mlp()
    x1, x2 = _inputs((3,), n=4), _inputs((3,), n=3, seed=11)
    f1, f2 = model(x1).detach(), model(x2).detach()
    _assert_rel_close(empirical_nngp(model, x1, x2), f1 @ f2.T, rtol=1e-14)
    _assert_rel_close(empirical_nngp(model, x1, x2, outputs="full"),
                      torch.einsum("ia,jb->ijab", f1, f2), rtol=1e-14)
    _assert_rel_close(empirical_nngp(model, x1, x2, outputs="diagonal", batch_size=3),
                      torch.einsum("ia,ja->ija", f1, f2), rtol=1e-14)
    h1 = torch.tanh(model[0](x1)).detach()
    _assert_rel_close(empirical_nngp(model, x1, layer="1"), h1 @ h1.T, rtol=1e-14)
    with pytest.raises(ValueError, match=r"layer: 'nope' names no submodule"):
        empirical_nngp(model, x1, layer="nope")
    with pytest.raises(ValueError, match=r"outputs must be one of"):
        empirical_nngp(model, x1, outputs="all")


def test_nngp_of_wide_twins_averages_to_the_infinite_width_nngp():
    # Given the hidden layer, the 32 output units are i.i.d. with covariance
    # W_std^2 h.h'/n + b_std^2, which concentrates on the analytic NNGP as n grows; the
    # noise shared by the outputs of one network averages out only over seeds. With 64
    # seeds we measured relative Frobenius errors 0.021-0.047 over five disjoint seed sets
    # (0.05-0.13 with 16 seeds, i.e. ~ 1/sqrt(seeds)); the bound 0.1 is twice the worst.
    net = L.serial(L.Dense(512, W_std=1.5, b_std=0.1), L.ReLU(),
                   L.Dense(32, W_std=1.5, b_std=0.1))
    x = _inputs((5,), n=6, seed=1)
    ref = net.kernel(x).nngp
    mean = sum(empirical_nngp(net.module((5,), dtype=F64, generator=_gen(s)), x) / 32
               for s in range(64)) / 64
    err = float((mean - ref).norm() / ref.norm())
    assert err < 0.1, err


def test_linearize_equals_the_model_at_p0_and_to_first_order():
    model = _mlp()
    lin = linearize(model)
    x = _inputs((3,), n=5)
    _assert_rel_close(lin(x).detach(), model(x).detach(), rtol=1e-15)
    direction = _direction(model)
    errors = []
    for eps in (1e-2, 5e-3):
        moved = _shifted(model, direction, eps)
        moved_lin = _shifted(lin, {"module." + n: d for n, d in direction.items()}, eps)
        errors.append(float((moved_lin(x) - moved(x)).norm()))
    # The remainder is second order: halving eps divides it by 4 (3.6..4.4 allows the
    # third-order term, ~eps relative).
    assert 3.6 < errors[0] / errors[1] < 4.4, errors


def test_linearized_model_is_affine_in_its_parameters():
    lin = linearize(_mlp())
    x = _inputs((3,), n=5)
    d1, d2 = _direction(lin, 32), _direction(lin, 33)
    base = lin(x)
    step1 = _shifted(lin, d1, 1.0)(x) - base
    step2 = _shifted(lin, d2, 1.0)(x) - base
    both = _shifted(_shifted(lin, d1, 0.7), d2, -1.3)(x) - base
    # Exact up to rounding of O(1) values (the jvp is linear in the tangent).
    _assert_rel_close(both, 0.7 * step1 - 1.3 * step2, rtol=1e-12)


@pytest.mark.parametrize("params", [None, "4"])
def test_training_the_linearized_model_follows_the_empirical_ntk(params):
    # One gradient step on L = sum (f(X) - y)^2 / 2 with rate lr moves the linear model's
    # outputs by exactly -lr Theta(x, X) (f(X) - y), with the NTK at p0 (full layout for
    # the 2 outputs; params: all parameters, or the last layer's only).
    model = _mlp()
    lin = linearize(model, params=params)
    x, x_test = _inputs((3,), n=6), _inputs((3,), n=4, seed=12)
    y = torch.randn(6, 2, dtype=F64, generator=_gen(13))
    lr = 0.05
    before, before_test = lin(x).detach(), lin(x_test).detach()
    loss = 0.5 * ((lin(x) - y) ** 2).sum()
    trainable = [p for p in lin.parameters() if p.requires_grad]
    assert len(trainable) == (6 if params is None else 2)
    grads = torch.autograd.grad(loss, trainable)
    with torch.no_grad():
        for p, g in zip(trainable, grads, strict=True):
            p.sub_(lr * g)
    theta = empirical_ntk(model, x_test, x, outputs="full", params=params)
    predicted = before_test - lr * torch.einsum("ijab,jb->ia", theta, before - y)
    _assert_rel_close(lin(x_test).detach(), predicted, rtol=1e-12)


def test_taylor_orders():
    model = _mlp(outputs=1)
    x = _inputs((3,), n=5)
    direction = _direction(model)

    def remainder(order, eps):
        expanded = taylor(model, order)
        moved = _shifted(expanded, {"module." + n: d for n, d in direction.items()}, eps)
        return float((moved(x) - _shifted(model, direction, eps)(x)).norm())

    # Order k leaves an O(eps^(k+1)) remainder: halving eps divides it by 2^(k+1).
    for order in (0, 1, 2):
        ratio = remainder(order, 1e-2) / remainder(order, 5e-3)
        assert abs(math.log2(ratio) - (order + 1)) < 0.15, (order, ratio)
    _assert_rel_close(taylor(model, 1)(x), linearize(model)(x), rtol=1e-15)


def test_taylor_of_a_quadratic_model_is_exact_at_order_2():
    # A two-layer linear network is a polynomial of degree 2 in its parameters.
    torch.manual_seed(34)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).to(F64)
    x = _inputs((3,), n=5)
    direction = _direction(model)
    moved = _shifted(model, direction, 0.8)(x)
    quad = _shifted(taylor(model, 2), {"module." + n: d for n, d in direction.items()}, 0.8)
    _assert_rel_close(quad(x), moved, rtol=1e-12)
    lin = _shifted(linearize(model), {"module." + n: d for n, d in direction.items()}, 0.8)
    assert float((lin(x) - moved).norm() / moved.norm()) > 1e-3  # not exact at order 1


def test_bad_arguments():
    model = _mlp()
    with pytest.raises(ValueError, match=r"order must be a non-negative integer; got -1"):
        taylor(model, -1)
    with pytest.raises(TypeError, match=r"order must be a non-negative integer; got 1.5"):
        taylor(model, 1.5)
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        linearize(lambda x: x)
    with pytest.raises(ValueError, match=r"params: 'nope' names no parameter"):
        linearize(model, params="nope")
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).to(F64)
    with pytest.raises(ValueError, match=r"BatchNorm1d\) normalises with batch statistics"):
        linearize(bn)
