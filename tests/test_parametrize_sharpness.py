"""ntkit.parametrize.sharpness: Lanczos on Hessian-vector products against the full Hessian,
the NTK eigenvalue against an explicit Jacobian, and the model left as it was."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev
from torch.nn.functional import cross_entropy, mse_loss

from ntkit.parametrize import sharpness


def tiny(dtype=torch.float64, seed=0):
    """3 -> 12 -> tanh -> 12 -> tanh -> 3: 243 parameters, small enough for the full Hessian,
    large enough that Lanczos stops long before its basis spans the whole space."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(),
                         nn.Linear(12, 3)).to(dtype)


def batch(dtype=torch.float64, n=20):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g, dtype=dtype)
    return x, torch.randint(0, 3, (n,), generator=g)


def flat(model):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def unflatten(t):
        return {n: s.view(sh) for n, s, sh in zip(names, t.split(sizes), shapes, strict=True)}
    return theta, unflatten


def full_hessian_eigvals(model, loss_fn, x, y):
    theta, unflatten = flat(model)
    h = hessian(lambda t: loss_fn(functional_call(model, unflatten(t), (x,)), y))(theta)
    return torch.linalg.eigvalsh(h).flip(0)


@pytest.mark.parametrize("loss_fn", [cross_entropy, lambda out, y: mse_loss(
    out, nn.functional.one_hot(y, 3).to(out.dtype), reduction="sum")], ids=["ce", "mse-sum"])
def test_lanczos_top_k_equal_eigvalsh_of_full_hessian(loss_fn):
    model = tiny()
    x, y = batch()
    want = full_hessian_eigvals(model, loss_fn, x, y)
    got = sharpness(model, loss_fn, (x, y), k=3, ntk=False,
                    generator=torch.Generator().manual_seed(2))
    # float64, tol = sqrt(eps): an eigenvalue's error is ~ residual^2 / gap ~ 1e-16 relative
    # for separated eigenvalues; 1e-6 is the bar (the Hessian has indefinite
    # directions too: the top k algebraic eigenvalues are compared, not magnitudes).
    assert want[0] > 0
    torch.testing.assert_close(got.hessian, want[:3], rtol=1e-6, atol=0)
    assert got.top == float(got.hessian[0])


def test_float32_model_close_to_float64_hessian():
    x, y = batch()
    want = full_hessian_eigvals(tiny(), cross_entropy, x, y)[0]
    got = sharpness(tiny(torch.float32), cross_entropy, (x.float(), y), ntk=False,
                    generator=torch.Generator().manual_seed(2))
    assert got.hessian.dtype == torch.float32
    # float32 Hessian-vector products carry ~1e-6 relative rounding (depth 3, 243 terms per
    # entry); 1e-4 leaves two orders of margin.
    assert abs(got.top - float(want)) <= 1e-4 * float(want)


def test_ntk_top_eigenvalue_equals_explicit_jacobian_gram():
    model = tiny()
    x, y = batch()
    theta, unflatten = flat(model)
    jac = jacrev(lambda t: functional_call(model, unflatten(t), (x,)))(theta)  # (N, K, P)
    gram = jac.reshape(-1, theta.numel()) @ jac.reshape(-1, theta.numel()).T
    want = float(torch.linalg.eigvalsh(gram)[-1])
    got = sharpness(model, cross_entropy, (x, y), generator=torch.Generator().manual_seed(0))
    # Two float64 routes to the same (N K, N K) matrix: rounding ~1e-15 relative.
    assert got.ntk == pytest.approx(want, rel=1e-10)


def test_linear_model_hessian_is_ntk_over_n():
    # For f linear in its parameters and L = 1/(2N) sum ||f - y||^2 the Hessian is J^T J / N
    # exactly (no second-derivative term), so its top eigenvalue is the NTK's over N: the
    # scaling stated in the docstring.
    torch.manual_seed(3)
    model = nn.Linear(5, 2).double()
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randn(30, 2, generator=g,
                                                                             dtype=torch.float64)
    got = sharpness(model, lambda out, t: 0.5 * ((out - t) ** 2).sum(1).mean(), (x, y), k=2,
                    generator=g)
    assert got.top == pytest.approx(got.ntk / 30, rel=1e-10)
    # and the mean over outputs without the 1/2 (torch's mse_loss) scales it by 2 / K
    got2 = sharpness(model, mse_loss, (x, y), generator=g)
    assert got2.top == pytest.approx(2 * got.ntk / (30 * 2), rel=1e-10)


def test_model_parameters_buffers_and_grads_untouched():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).double()
    x, y = batch()
    cross_entropy(model(x), y).backward()   # some .grad to keep; also moves running stats
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    sharpness(model, cross_entropy, (x, y), k=2, ntk=False,
              generator=torch.Generator().manual_seed(0))
    for n, t in model.state_dict().items():
        assert torch.equal(t, before[n]), n          # the same tensors, never written
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), n
        assert p.requires_grad
    assert model.training


def test_frozen_parameters_are_constants():
    model = tiny()
    x, y = batch()
    model[0].weight.requires_grad_(False)
    got = sharpness(model, cross_entropy, (x, y), ntk=False,
                    generator=torch.Generator().manual_seed(0))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    sizes = [params[n].numel() for n in names]
    theta = torch.cat([params[n].detach().reshape(-1) for n in names])

    def loss(t):
        free = {n: s.view(params[n].shape) for n, s in zip(names, t.split(sizes), strict=True)}
        return cross_entropy(functional_call(model, {**params, **free}, (x,)), y)
    want = torch.linalg.eigvalsh(hessian(loss)(theta))[-1]
    assert got.top == pytest.approx(float(want), rel=1e-6)


def test_bad_inputs():
    model = tiny()
    x, y = batch()
    with pytest.raises(TypeError, match="model"):
        sharpness(lambda t: t, cross_entropy, (x, y))
    with pytest.raises(ValueError, match="batch"):
        sharpness(model, cross_entropy, x)
    with pytest.raises(ValueError, match="batch x"):
        sharpness(model, cross_entropy, (torch.full_like(x, float("nan")), y))
    with pytest.raises(ValueError, match="k must"):
        sharpness(model, cross_entropy, (x, y), k=0)
    with pytest.raises(ValueError, match="scalar"):
        sharpness(model, lambda o, t: cross_entropy(o, t, reduction="none"), (x, y))
    with pytest.raises(ValueError, match="tol"):
        sharpness(model, cross_entropy, (x, y), tol=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        sharpness(model, cross_entropy, (x, y), max_iter=0)
    with pytest.raises(ValueError, match="not finite"):
        sharpness(model, lambda o, t: cross_entropy(o, t) / 0.0, (x, y))
    frozen = nn.Linear(3, 3).double().requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        sharpness(frozen, cross_entropy, (x, y))


def test_param_groups_precondition_by_learning_rates_on_a_planned_model():
    # A muP plan installs multipliers by torch.nn.utils.parametrize and scales each layer's
    # SGD rate; the preconditioned Hessian D^1/2 H D^1/2 (and the rate-weighted NTK J D J^T)
    # are compared with explicit ones built from torch.func on the same parameters.
    from ntkit.parametrize import plan

    def mlp(w):
        return nn.Sequential(nn.Linear(3, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(),
                             nn.Linear(w, 3)).double()
    model = mlp(16)
    p = plan(model, "mup", base=mlp(8))
    p.apply_(model, generator=torch.Generator().manual_seed(0))
    groups = p.param_groups(1.0, optimizer="sgd")
    assert len({g["lr"] for g in groups}) > 1      # the test needs unequal rates
    x, y = batch()
    got = sharpness(model, cross_entropy, (x, y), k=2, param_groups=groups,
                    generator=torch.Generator().manual_seed(1))

    rate = {id(q): g["lr"] for g in groups for q in g["params"]}
    named = [(n, q) for n, q in model.named_parameters()]
    sizes = [q.numel() for _, q in named]
    theta = torch.cat([q.detach().reshape(-1) for _, q in named])
    root = torch.cat([torch.full((q.numel(),), rate[id(q)] ** 0.5, dtype=torch.float64)
                      for _, q in named])

    def unflatten(t):
        return {n: s.view(q.shape) for (n, q), s in zip(named, t.split(sizes), strict=True)}
    h = hessian(lambda t: cross_entropy(functional_call(model, unflatten(t), (x,)), y))(theta)
    want = torch.linalg.eigvalsh(root[:, None] * h * root[None, :]).flip(0)[:2]
    torch.testing.assert_close(got.hessian, want, rtol=1e-6, atol=0)   # as in the first test
    jac = jacrev(lambda t: functional_call(model, unflatten(t), (x,)))(theta)
    jac = jac.reshape(-1, len(theta))
    want_ntk = float(torch.linalg.eigvalsh((jac * root**2) @ jac.T)[-1])
    assert got.ntk == pytest.approx(want_ntk, rel=1e-10)   # float64, two routes
    # Without groups: the raw Hessian, different since the rates differ.
    raw = sharpness(model, cross_entropy, (x, y), ntk=False,
                    generator=torch.Generator().manual_seed(1))
    assert raw.top == pytest.approx(float(torch.linalg.eigvalsh(h)[-1]), rel=1e-6)
    assert abs(raw.top - got.top) > 1e-3 * got.top


def test_param_groups_bad_inputs():
    model = tiny()
    x, y = batch()
    with pytest.raises(TypeError, match="param_groups"):
        sharpness(model, cross_entropy, (x, y), param_groups={"params": [], "lr": 1.0})
    with pytest.raises(ValueError, match="'params' and 'lr'"):
        sharpness(model, cross_entropy, (x, y), param_groups=[{"params": model.parameters()}])
    with pytest.raises(ValueError, match="finite and > 0"):
        sharpness(model, cross_entropy, (x, y),
                  param_groups=[{"params": list(model.parameters()), "lr": 0.0}])
    with pytest.raises(ValueError, match="more than one"):
        sharpness(model, cross_entropy, (x, y),
                  param_groups=[{"params": list(model.parameters()), "lr": 1.0}] * 2)
    with pytest.raises(ValueError, match="not trainable parameters"):
        sharpness(model, cross_entropy, (x, y),
                  param_groups=[{"params": [torch.zeros(3, requires_grad=True)], "lr": 1.0}])
