"""Task vectors, tangent-space fine-tuning and the disentanglement error (ntkit.apps.tangent),
and the reduced reproduction of Ortiz-Jiménez, Favero & Frossard (NeurIPS 2023)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp

from ntkit import linearize
from ntkit.apps.tangent import TaskVector, disentanglement_error, finetune


def _tv(**deltas) -> TaskVector:
    return TaskVector({k: torch.tensor(v, dtype=torch.float64) for k, v in deltas.items()})


def test_task_vector_algebra_matches_hand_computed_tensors():
    a = _tv(w=[1.0, 2.0], b=[[3.0]])
    b = _tv(w=[0.5, -1.0], b=[[1.0]])
    # Sums and multiples of small dyadic numbers are exact in float64; assert_close's default
    # tolerance (1e-7 relative) would still catch any wrong entry.
    cases = {
        "a + b": (a + b, [1.5, 1.0], [[4.0]]),
        "a - b": (a - b, [0.5, 3.0], [[2.0]]),
        "-a": (-a, [-1.0, -2.0], [[-3.0]]),
        "2 * a": (2 * a, [2.0, 4.0], [[6.0]]),
        "a * -0.5": (a * -0.5, [-0.5, -1.0], [[-1.5]]),
        "sum": (sum([a, b, a]), [2.5, 3.0], [[7.0]]),
    }
    for name, (tv, w, bias) in cases.items():
        torch.testing.assert_close(tv["w"], torch.tensor(w, dtype=torch.float64), msg=name)
        torch.testing.assert_close(tv["b"], torch.tensor(bias, dtype=torch.float64), msg=name)
    assert a.norm() == pytest.approx(math.sqrt(14.0), rel=1e-15)
    assert a.numel() == 3 and sorted(a) == ["b", "w"]
    assert a["w"].tolist() == [1.0, 2.0]  # the operations left their operands unchanged


def test_from_models_and_apply_to_round_trip():
    g = torch.Generator().manual_seed(0)
    pre = nn.Linear(3, 2).double()
    post = nn.Linear(3, 2).double()
    with torch.no_grad():
        for p in post.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    tau = TaskVector.from_models(pre, post)
    torch.testing.assert_close(tau["weight"], post.weight - pre.weight, rtol=0, atol=1e-15)
    before = pre.weight.detach().clone()
    copy = tau.apply_to(pre, alpha=1.0)
    assert copy is not pre and torch.equal(pre.weight, before)  # a copy; pre unchanged
    # theta_0 + (theta_1 - theta_0) rounds back to theta_1 to within an ulp of the entries.
    torch.testing.assert_close(copy.weight, post.weight, rtol=0, atol=1e-14)
    same = tau.apply_to(pre, alpha=-2.0, inplace=True)
    assert same is pre
    torch.testing.assert_close(pre.weight, before - 2 * (post.weight - before), rtol=0,
                               atol=1e-14)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                         nn.Linear(16, 3)).double()


def test_tangent_finetuned_model_is_linear_in_its_task_vector():
    model = _mlp()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (32,), generator=g)
    out = finetune(model, x, y, tangent=True, steps=30, lr=0.05, generator=g)
    tau = out.task_vector
    assert tau.norm() > 0.1  # training moved the weights
    params = {n: p.detach() for n, p in model.named_parameters()}
    f0, j_tau = jvp(lambda q: functional_call(model, q, (x,)), (params,),
                    ({n: tau[n] for n in params},))
    # The trained tangent model is f(p0) + J tau ...
    with torch.no_grad():
        torch.testing.assert_close(out.model(x), f0 + j_tau, rtol=0, atol=1e-10)
    # ... and any multiple of tau on the tangent model at p0 is f(p0) + alpha J tau: one jvp
    # against the edit path (deep copy, parameter update, the linearised forward); float64
    # rounding of O(1) outputs is ~1e-15, so 1e-10 leaves room and fails on any non-linearity
    # (the curvature term alpha^2 tau H tau / 2 is ~1e-2 here).
    tangent = linearize(model)
    for alpha in (-2.0, 0.5, 3.0):
        with torch.no_grad():
            edited = tau.apply_to(tangent, alpha=alpha)(x)
        torch.testing.assert_close(edited, f0 + alpha * j_tau, rtol=0, atol=1e-10)
    with torch.no_grad():
        plain = tau.apply_to(model, alpha=3.0)(x)
    assert float((plain - (f0 + 3.0 * j_tau)).abs().max()) > 1e-4  # the plain model is not


def _two_task_case():
    """Logits ``W x + b`` with ``W = 0``, ``b = (0, 0.1)``; tau1 adds ``x_0`` to logit 0, tau2
    adds ``x_1`` to logit 1. Task 1 inputs ``(1, c)``, task 2 inputs ``(d, 1)``."""
    model = nn.Linear(2, 2).double()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([0.0, 0.1]))
    tau1 = _tv(weight=[[1.0, 0.0], [0.0, 0.0]], bias=[0.0, 0.0])
    tau2 = _tv(weight=[[0.0, 0.0], [0.0, 1.0]], bias=[0.0, 0.0])
    x1 = torch.tensor([[1.0, 0.0], [1.0, 0.5], [1.0, 2.0]], dtype=torch.float64)
    x2 = torch.tensor([[0.0, 1.0], [0.5, 1.0], [3.0, 1.0]], dtype=torch.float64)
    return model, tau1, tau2, x1, x2


def test_disentanglement_error_on_a_constructed_case():
    model, tau1, tau2, x1, x2 = _two_task_case()
    # By hand. Task 1 alone: logits (a1, 0.1); with both: (a1, 0.1 + a2 c). Task 2 alone:
    # (0, 0.1 + a2); with both: (a1 d, 0.1 + a2). E.g. (a1, a2) = (0.5, 1): task 1 alone
    # predicts 0, with both c = 0.5, 2 flip to 1 (2/3); task 2 alone predicts 1, with both
    # d = 3 flips to 0 (1/3): xi = 1. At a1 = -1 class 1 wins everywhere: xi = 0.
    expected = torch.tensor([[0.0, 0.0], [2 / 3, 1.0], [2 / 3, 2 / 3]], dtype=torch.float64)
    for m in (model, linearize(model)):  # the plain path and the affine (tangent) path
        xi = disentanglement_error(m, tau1, tau2, x1, x2, alphas1=[-1.0, 0.5, 1.0],
                                   alphas2=[0.25, 1.0])
        torch.testing.assert_close(xi, expected, rtol=0, atol=1e-12)


def test_tangent_path_of_xi_agrees_with_direct_evaluation():
    """The affine shortcut for linearised models against editing the tangent model at every
    grid point (a CNN-free MLP; predictions agree unless two logits tie to ~1e-12)."""
    model = _mlp()
    g = torch.Generator().manual_seed(2)
    x1 = torch.randn(40, 4, generator=g, dtype=torch.float64)
    x2 = torch.randn(40, 4, generator=g, dtype=torch.float64) + 1.0
    tau1 = TaskVector({n: 0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64)
                       for n, p in model.named_parameters()})
    tau2 = TaskVector({n: 0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64)
                       for n, p in model.named_parameters()})
    tangent = linearize(model)
    alphas = [-2.0, 0.5, 2.0]
    xi = disentanglement_error(tangent, tau1, tau2, x1, x2, alphas1=alphas, alphas2=alphas)

    def pred(a1, a2, x):
        edited = tau2.apply_to(tau1.apply_to(tangent, alpha=a1), alpha=a2)
        with torch.no_grad():
            return edited(x).argmax(-1)

    for i, a1 in enumerate(alphas):
        for j, a2 in enumerate(alphas):
            direct = ((pred(a1, a2, x1) != pred(a1, 0.0, x1)).double().mean()
                      + (pred(a1, a2, x2) != pred(0.0, a2, x2)).double().mean())
            assert float(xi[i, j]) == pytest.approx(float(direct), abs=1e-12)
    assert float(xi.max()) > 0  # a case where the edits do interfere


def test_bad_inputs_raise_clear_errors():
    a = _tv(w=[1.0, 2.0])
    with pytest.raises(ValueError, match="empty"):
        TaskVector({})
    with pytest.raises(ValueError, match="NaN"):
        _tv(w=[float("nan")])
    with pytest.raises(TypeError, match="floating-point"):
        TaskVector({"w": torch.tensor([1, 2])})
    with pytest.raises(ValueError, match="different parameter names"):
        a + _tv(v=[1.0, 2.0])
    with pytest.raises(ValueError, match="shape"):
        a + _tv(w=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="alpha must be finite"):
        a * float("nan")
    with pytest.raises(TypeError, match="alpha must be a real number"):
        a * "2"
    model = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="alpha must be finite"):
        TaskVector({"weight": torch.ones(1, 2)}).apply_to(model, alpha=float("inf"))
    with pytest.raises(ValueError, match="no parameters named"):
        a.apply_to(model)
    with pytest.raises(ValueError, match="shape"):
        TaskVector({"weight": torch.ones(2, 2)}).apply_to(model)
    with pytest.raises(ValueError, match="different parameter names"):
        TaskVector.from_models(model, nn.Linear(2, 1, bias=False))
    with pytest.raises(ValueError, match="holds constant"):
        TaskVector({"bias": torch.ones(1)}).apply_to(linearize(model, params="weight"))
    x, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    with pytest.raises(ValueError, match="at least one example"):
        finetune(model, x[:0], y[:0])
    with pytest.raises(ValueError, match="one entry per example"):
        finetune(model, x, y[:3])
    with pytest.raises(ValueError, match="steps"):
        finetune(model, x, y, steps=0)
    with pytest.raises(ValueError, match="lr"):
        finetune(model, x, y, lr=-1.0)
    with pytest.raises(ValueError, match="x has NaN"):
        finetune(model, torch.full((8, 2), float("nan")), y)
    m, tau1, tau2, x1, x2 = _two_task_case()
    with pytest.raises(ValueError, match="x1 must hold at least one input"):
        disentanglement_error(m, tau1, tau2, x1[:0], x2, alphas1=[1.0], alphas2=[1.0])
    with pytest.raises(ValueError, match="alphas2 must be a non-empty"):
        disentanglement_error(m, tau1, tau2, x1, x2, alphas1=[1.0], alphas2=[])
    with pytest.raises(ValueError, match="alphas1 must be finite"):
        disentanglement_error(m, tau1, tau2, x1, x2, alphas1=[float("nan")], alphas2=[1.0])
    with pytest.raises(ValueError, match="same feature shape"):
        disentanglement_error(m, tau1, tau2, x1, x2[:, :1], alphas1=[1.0], alphas2=[1.0])
    with pytest.raises(TypeError, match="TaskVector"):
        disentanglement_error(m, dict(tau1), tau2, x1, x2, alphas1=[1.0], alphas2=[1.0])


def test_reduced_reproduction_tangent_is_more_disentangled():
    """The paper's claim at reduced size: tangent-space task vectors have a lower
    disentanglement error than non-linear ones. Two tasks (90 and 180 degree rotations of
    digits), three seeds, a 7 x 7 grid on [-3, 3]^2. Measured: non-linear 1.01, 1.00, 0.82;
    tangent 0.59, 0.66, 0.66 (mean gap 0.30); we require a mean gap of at least 0.1, a third
    of it, so that training that rounds differently on another CPU still passes while a
    reversal or a tie fails."""
    from ntkit.apps._repro_tangent import tangent_task_arithmetic

    result = tangent_task_arithmetic(seeds=(0, 1, 2), tasks=("rot90", "rot180"), width=8,
                                     pretrain_steps=150, finetune_steps=60, lr=3e-3,
                                     tangent_lr=3e-3, n_alphas=7, n_xi=100)
    xi = {mode: result.xi[mode].mean(axis=(1, 2, 3)) for mode in result.xi}
    assert xi["non-linear"].mean() - xi["tangent"].mean() > 0.1, xi
    # Both fine-tunings learned their tasks (chance is 0.1), so the comparison is meaningful.
    assert result.single["tangent"].mean() > 0.4 and result.single["non-linear"].mean() > 0.4
    with pytest.raises(ValueError, match="tasks must name"):
        tangent_task_arithmetic(tasks=("rot90", "upside-down"))
