"""ntkit.parametrize.centered: the lazy-training output scale of Chizat, Oyallon & Bach (2019)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

import ntkit as nk
from ntkit.parametrize import Centered, centered

F64 = torch.float64


def _mlp(seed: int, d: int = 3, width: int = 32, out: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, out)).double()


def _data(seed: int, n: int, d: int = 3, out: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, dtype=F64, generator=g),
            torch.randn(n, out, dtype=F64, generator=g))


class _TwoInputs(nn.Module):
    """A model whose forward takes two tensors and a keyword, with a tied weight."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4, bias=False)
        self.b = nn.Linear(4, 2)
        self.c = self.a  # tied: one parameter under two names

    def forward(self, x, z, *, scale=1.0):
        return self.b(torch.sin(self.a(x)) + self.c(z) * scale)


def test_output_is_exactly_zero_at_init():
    # f(x; w) and f(x; w0) run the same kernels on equal values in equally aligned (64-byte)
    # buffers, so the difference is an exact zero, not a rounding error.
    model = _mlp(0, out=3)
    x, _ = _data(1, 7, out=3)
    for alpha in (1e-3, 1.0, 1e4):
        h = centered(model, alpha)
        out = h(x)
        assert out.shape == (7, 3)
        assert torch.count_nonzero(out) == 0

    m = _TwoInputs().double()
    x, z = torch.randn(5, 4, dtype=F64), torch.randn(5, 4, dtype=F64)
    h = centered(m, 2.0)
    assert torch.count_nonzero(h(x, z, scale=0.5)) == 0
    # The tied weight appears once among the frozen copies and once among the parameters.
    assert len(dict(h.origin.named_buffers())) == len(list(m.parameters())) == 3


def test_trainable_parameters_are_the_models_and_w0_is_frozen():
    model = _mlp(0)
    h = centered(model, 5.0)
    assert [id(p) for p in h.parameters()] == [id(p) for p in model.parameters()]
    w0 = {n: t.clone() for n, t in h.initial().items()}
    x, y = _data(2, 6)
    opt = torch.optim.SGD(h.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        (h.loss_scale * ((h(x) - y) ** 2).mean()).backward()
        opt.step()
    moved = (model[0].weight - w0["0.weight"]).abs().max().item()
    assert moved > 0.0
    for n, t in h.initial().items():
        assert not t.requires_grad and torch.equal(t, w0[n])
    # w0 is saved with the module and moved with it.
    assert "origin.0__weight" in h.state_dict()
    h32 = h.float()
    assert h32.initial()["0.weight"].dtype == torch.float32
    assert h.loss_scale == pytest.approx(1 / 25.0, rel=1e-15)


def test_gradient_of_scaled_loss_is_one_over_alpha_times_the_models():
    # d/dw [ (1/alpha^2) * 1/2 ||alpha (f - f0) - y||^2 ] = (1/alpha) J^T (alpha (f - f0) - y):
    # checked against an explicit Jacobian of the bare model away from init. Two float64
    # computations of the same sums: agreement to 1e-10 relative is rounding.
    model = _mlp(3, width=16)
    x, y = _data(4, 5)
    alpha = 7.0
    h = centered(model, alpha)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    loss = h.loss_scale * 0.5 * ((h(x) - y) ** 2).sum()
    grads = torch.autograd.grad(loss, list(model.parameters()))

    params = {n: p.detach() for n, p in model.named_parameters()}
    jac = jacrev(lambda q: functional_call(model, q, (x,)))(params)
    with torch.no_grad():
        resid = alpha * (model(x) - functional_call(model, h.initial(), (x,))) - y
    for (n, _), gr in zip(model.named_parameters(), grads, strict=True):
        expected = torch.einsum("no,no...->...", resid, jac[n]) / alpha
        assert torch.allclose(gr, expected, rtol=1e-10, atol=1e-12 * expected.abs().max())


def test_ntk_of_centered_is_alpha_squared_times_the_models():
    # The centring subtracts a constant in w, so the Jacobian is alpha J and the NTK alpha^2
    # Theta: with loss_scale = 1/alpha^2 the function-space gradient flow is alpha-free.
    model = _mlp(5, width=24)
    x, _ = _data(6, 6)
    theta = nk.empirical_ntk(model, x)
    for alpha in (0.1, 30.0):
        theta_h = nk.empirical_ntk(centered(model, alpha), x)
        assert torch.allclose(theta_h, alpha**2 * theta, rtol=1e-10)


def _train(h: nn.Module, x, y, *, lr: float, steps: int):
    opt = torch.optim.SGD(h.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (h.loss_scale * 0.5 * ((h(x) - y) ** 2).mean()).backward()
        opt.step()
    return h


def test_large_alpha_follows_the_linearized_model_with_gap_like_one_over_alpha():
    # Chizat et al. Thm 2.4: over a fixed training time the centred model stays within
    # O(1/alpha) of gradient descent on its linearisation, and the leading term is exactly
    # proportional to 1/alpha, so the gap shrinks 4x for each 4x in alpha. Measured ratios
    # 4.6 (alpha 8 -> 32, the next-order term still visible) and 4.2 (32 -> 128); the band
    # [3.2, 5.4] fails for a gap going like 1/alpha^2 (16) or not shrinking (1).
    # lr = 0.2 is about 1 / lambda_max(Theta / n) of this model (5.6), a stable step.
    x, y = _data(8, 12)
    xt, _ = _data(9, 20)
    gaps = []
    for alpha in (8.0, 32.0, 128.0):
        model = _mlp(7, width=48)
        lin = nk.linearize(model)
        h = _train(centered(model, alpha), x, y, lr=0.2, steps=150)
        h_lin = _train(centered(lin, alpha), x, y, lr=0.2, steps=150)
        with torch.no_grad():
            both = torch.cat([x, xt])
            gaps.append((h(both) - h_lin(both)).abs().max().item())
            fit = ((h_lin(x) - y) ** 2).mean().item()
        # Training moved the function by O(1) whatever alpha: the loss fell by a quarter
        # (measured 0.68 -> 0.47), so the small gap is not a model that did not move.
        assert fit < 0.75 * (y**2).mean().item()
    r1, r2 = gaps[0] / gaps[1], gaps[1] / gaps[2]
    assert 3.2 < r1 < 5.4 and 3.2 < r2 < 5.4, gaps
    assert gaps[-1] < 5e-3


@pytest.mark.parametrize("alpha, err", [
    (0.0, ValueError), (-1.0, ValueError), (math.nan, ValueError), (math.inf, ValueError),
    (1e200, ValueError), (1e-200, ValueError), (True, TypeError), ("2", TypeError),
    (None, TypeError),
])
def test_bad_alpha(alpha, err):
    with pytest.raises(err, match="alpha"):
        centered(_mlp(0), alpha)


def test_bad_model():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        centered(lambda x: x, 1.0)
    with pytest.raises(ValueError, match="no parameters"):
        centered(nn.Tanh(), 1.0)
    with pytest.raises(ValueError, match="alpha"):
        Centered(_mlp(0), -1.0)  # the class checks as the function does
    assert isinstance(centered(_mlp(0), 1), Centered)


def test_works_on_a_planned_model():
    # A plan's multipliers are torch.nn.utils.parametrize parametrizations: the frozen copy
    # holds their originals, and the output is zero at w0 and moves with training.
    def mlp(width):
        return nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 1)).double()

    model = mlp(64)
    nk.parametrize.plan(model, "mup", base=mlp(16)).apply_(
        model, generator=torch.Generator().manual_seed(0))
    h = centered(model, 3.0)
    assert "2__parametrizations__weight__original" in dict(h.origin.named_buffers())
    x, y = _data(3, 5)
    assert torch.count_nonzero(h(x)) == 0
    _train(h, x, y, lr=0.1, steps=2)
    assert h(x).abs().max().item() > 0.0
