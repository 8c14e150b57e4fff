"""ntkit.empirical: every strategy against an explicit per-example, per-output gradient loop."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention
from torch import nn

import ntkit as nk
from ntkit import layers as L  # noqa: N812 - the convention of docs/conventions.md
from ntkit.empirical import empirical_ntk

F64 = torch.float64
STRATEGIES = ("auto", "jacobian", "ntk_vp", "structured")


def _explicit_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None,
                  outputs: str = "trace", params=None):
    """``sum_p df_a(x1_i)/dp df_b(x2_j)/dp`` by one autograd.grad per example and output, in
    the ``outputs`` layout; ``params``: the parameters that count (default: trainable)."""
    x2 = x1 if x2 is None else x2
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params

    def jacobian(x):  # (N, K, P)
        rows = []
        for i in range(x.shape[0]):
            out = model(x[i:i + 1]).reshape(-1)
            per_output = []
            for o in range(out.shape[0]):
                grads = torch.autograd.grad(out[o], params, retain_graph=True, allow_unused=True)
                per_output.append(torch.cat([
                    (torch.zeros_like(p) if g is None else g).reshape(-1)
                    for g, p in zip(grads, params, strict=True)
                ]))
            rows.append(torch.stack(per_output))
        return torch.stack(rows)

    j1, j2 = jacobian(x1), jacobian(x2)
    k = j1.shape[1]
    theta = torch.zeros(x1.shape[0], x2.shape[0], k, k, dtype=j1.dtype)
    for i in range(x1.shape[0]):
        for j in range(x2.shape[0]):
            for a in range(k):
                for b in range(k):
                    theta[i, j, a, b] = (j1[i, a] * j2[j, b]).sum()
    if outputs == "full":
        return theta
    diagonal = theta.diagonal(dim1=2, dim2=3)
    return diagonal if outputs == "diagonal" else diagonal.sum(-1)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3)).to(F64)


def _twin(parametrization: str) -> nn.Module:
    net = L.serial(L.Dense(16, W_std=1.5, b_std=0.1, parametrization=parametrization),
                   L.ReLU(), L.Dense(2, parametrization=parametrization))
    return net.module((5,), dtype=F64, generator=_gen())


def _branches() -> nn.Module:
    """A twin with a residual block, two-way fan-out and a concatenation."""
    net = L.serial(L.Dense(8, W_std=1.3, b_std=0.2), L.FanOut(2),
                   L.parallel(L.serial(L.ReLU(), L.Dense(8, b_std=0.3)), L.Identity()),
                   L.FanInSum(), L.FanOut(2),
                   L.parallel(L.Dense(3), L.serial(L.Erf(), L.Dense(4))), L.FanInConcat(),
                   L.Dense(2))
    return net.module((5,), dtype=F64, generator=_gen())


def _frozen() -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(),
                          nn.Linear(8, 2)).to(F64)
    model[2].requires_grad_(False)
    model[4].bias.requires_grad_(False)
    return model


def _inplace() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(4, 8, bias=False), nn.ReLU(inplace=True),
                         nn.Linear(8, 2)).to(F64)


def _conv() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 2)).to(F64)


def _inputs(shape, n=7, seed=10, dtype=F64):
    return torch.randn(n, *shape, dtype=dtype, generator=_gen(seed))


# name -> (model factory, per-example input shape, is every parameter factorised by
# strategy="structured" (no per-example Jacobian fallback))
MODELS = {
    "mlp": (_mlp, (4,), True),
    "twin-ntk": (lambda: _twin("ntk"), (5,), True),
    "twin-standard": (lambda: _twin("standard"), (5,), True),
    "twin-branches": (_branches, (5,), True),
    "frozen": (_frozen, (4,), True),
    "inplace-relu": (_inplace, (4,), True),
    "conv": (_conv, (1, 4, 4), True),
}


def _assert_rel_close(a, b, rtol=1e-10):
    err = float((a - b).norm() / b.norm())
    assert err < rtol, f"relative error {err:.3g} >= {rtol:g}"


@pytest.fixture(scope="module")
def references():
    """The explicit NTK of each model on its inputs (computed once)."""
    out = {}
    for name, (make, shape, _) in MODELS.items():
        model = make()
        x = _inputs(shape)
        out[name] = (model, x, _explicit_ntk(model, x))
    return out


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", list(MODELS))
def test_agrees_with_explicit_jacobian_product(references, name, strategy):
    model, x, ref = references[name]
    theta = empirical_ntk(model, x, strategy=strategy)
    assert theta.shape == (x.shape[0], x.shape[0])
    assert theta.dtype == F64 and not theta.requires_grad
    _assert_rel_close(theta, ref)
    assert all(p.grad is None for p in model.parameters())  # nothing leaks into .grad


def _applicable(*names):
    return [(n, s) for n in names for s in STRATEGIES]


@pytest.mark.parametrize("name, strategy", _applicable("mlp", "conv"))
def test_symmetric_and_blocks_of_the_full_kernel(references, name, strategy):
    model, x, _ = references[name]
    full = empirical_ntk(model, x, strategy=strategy)
    assert torch.equal(full, full.T)
    assert torch.equal(empirical_ntk(model, x, x, strategy=strategy), full)  # x2 is x1
    assert bool(torch.linalg.eigvalsh(full).min() > -1e-10 * full.diagonal().max())
    rect = empirical_ntk(model, x[:3], x[2:], strategy=strategy)
    assert rect.shape == (3, x.shape[0] - 2)
    _assert_rel_close(rect, full[:3, 2:], rtol=1e-12)


@pytest.mark.parametrize("name, strategy", _applicable("twin-ntk", "conv"))
def test_batch_size_not_dividing_n(references, name, strategy):
    model, x, ref = references[name]
    for bs in (1, 3, 100):
        theta = empirical_ntk(model, x, strategy=strategy, batch_size=bs)
        _assert_rel_close(theta, ref)
        assert torch.equal(theta, theta.T)  # diagonal blocks too, bit for bit
    full = empirical_ntk(model, x, strategy=strategy, batch_size=3, outputs="full")
    assert torch.equal(full, full.permute(1, 0, 3, 2))
    rect = empirical_ntk(model, x[:5], x[1:], strategy=strategy, batch_size=2)
    _assert_rel_close(rect, ref[:5, 1:])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_float32_close_to_float64_and_follows_inputs_dtype(references, strategy):
    model, x, ref = references["twin-ntk"]
    # A float64 model on float32 inputs runs in float32 (parameters cast), and vice versa.
    theta32 = empirical_ntk(model, x.float(), strategy=strategy)
    assert theta32.dtype == torch.float32
    _assert_rel_close(theta32.double(), ref, rtol=1e-5)
    model32 = _twin("ntk").float()
    ref32 = _explicit_ntk(copy.deepcopy(model32).double(), x)  # the float32 weights, exactly
    theta64 = empirical_ntk(model32, x, strategy=strategy)
    assert theta64.dtype == F64
    _assert_rel_close(theta64, ref32)
    _assert_rel_close(empirical_ntk(model32, x.float(), strategy=strategy).double(), ref32,
                      rtol=1e-5)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_linear_model_closed_form(strategy):
    # f_o(x) = w_o . x + b_o: df_o/dw_o = x, df_o/db_o = 1, summed over K = 2 outputs.
    x1, x2 = _inputs((4,), n=3), _inputs((4,), n=5, seed=11)
    theta = empirical_ntk(nn.Linear(4, 2).to(F64), x1, x2, strategy=strategy)
    _assert_rel_close(theta, 2.0 * (x1 @ x2.T + 1.0), rtol=1e-14)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_works_under_no_grad(references, strategy):
    model, x, ref = references["conv"]
    with torch.no_grad():
        _assert_rel_close(empirical_ntk(model, x, strategy=strategy), ref)


def test_numpy_inputs_and_top_level_export():
    model = _mlp()
    x = _inputs((4,), n=4)
    assert nk.empirical_ntk is empirical_ntk
    assert torch.equal(empirical_ntk(model, x.numpy()), empirical_ntk(model, x))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batchnorm1d_in_eval_mode(strategy):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)).to(F64)
    model(_inputs((4,), n=16, seed=5))  # move the running statistics off their defaults
    model.eval()
    x = _inputs((4,))
    _assert_rel_close(empirical_ntk(model, x, strategy=strategy), _explicit_ntk(model, x))


class _Twice(nn.Module):
    """One Linear applied twice: tied weights."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(torch.tanh(self.inner(torch.tanh(self.inner(x)))))


class _SharedParameter(nn.Module):
    """Two Linear modules holding the same weight Parameter."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.tanh(self.a(x))).sum(1)


class _WeightReused(nn.Module):
    """A Linear called once whose weight is also used directly."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x) + F.linear(torch.tanh(x), self.lin.weight)


class _Sequence(nn.Module):
    """A Linear on (N, S, d): several rows per example."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 3)

    def forward(self, x):
        return self.lin(x.reshape(x.shape[0], 2, 2)).tanh().sum(1)


class _InputRewritten(nn.Module):
    """A Linear whose input is modified in place after the call."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.tanh(x)
        y = self.lin(h)
        h.mul_(2.0)
        return y * h[:, :2]


@pytest.mark.parametrize("make, fallback", [
    (_Twice, {}),  # one Linear called twice: rows of both calls, still factorised
    (_SharedParameter, {}),  # a weight shared by two Linear modules: likewise
    (_WeightReused, {"lin.weight": "enters the computation 2 times"}),
    (_Sequence, {}),  # (N, S, d) rows per example: factorised with S = 2
])
@pytest.mark.parametrize("outputs", ["trace", "full"])
def test_tied_and_reused_weights_are_exact(make, fallback, outputs):
    torch.manual_seed(5)
    model = make().to(F64)
    x = _inputs((4,))
    plan = _plan(model, x)
    assert {n: r for n, r in plan.reasons.items()}.keys() == fallback.keys()
    for name, reason in fallback.items():
        assert reason in plan.reasons[name]
    ref = _explicit_ntk(model, x, outputs=outputs)
    for strategy in STRATEGIES:
        _assert_rel_close(empirical_ntk(model, x, strategy=strategy, outputs=outputs), ref)


def _plan(model, x, outputs="trace"):
    """The structured strategy's plan: which parameters fall back to Jacobians, and why."""
    from ntkit.empirical._model import select_params
    from ntkit.empirical._probe import probe
    from ntkit.empirical._structured import plan_structured

    selected = select_params(model, None)
    params = dict(model.named_parameters())
    trainable = {n: p.detach() for n, p in params.items() if id(p) in selected}
    constants = {n: p.detach() for n, p in params.items() if id(p) not in selected}
    constants.update(dict(model.named_buffers()))
    pr = probe(model, trainable, constants, x)
    return plan_structured(model, x, selected=selected, outputs=outputs, n1=len(x),
                           n2=len(x), pr=pr)


def test_a_layer_input_rewritten_in_place_is_not_factorised():
    # Plain autograd rejects this model (the weight gradient needs the original input);
    # structured computes no weight gradient, so it checks the input's version itself and
    # hands the weight to autograd, which then raises as plain autograd does.
    model = _InputRewritten().to(F64)
    x = _inputs((4,))
    assert "modified in place" in _plan(model, x).reasons["lin.weight"]
    for strategy in STRATEGIES:
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            empirical_ntk(model, x, strategy=strategy)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        model(x).sum().backward()


class _Custom(nn.Module):
    """A raw parameter outside any Linear."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.lin = nn.Linear(4, 1)

    def forward(self, x):
        return self.lin(x * self.scale)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_raw_parameter_falls_back_to_its_own_jacobian(strategy):
    model = _Custom().to(F64)
    x = _inputs((4,))
    plan = _plan(model, x)
    assert plan.fallback == ["scale"] and "_Custom has no factorisation" in plan.reasons["scale"]
    _assert_rel_close(empirical_ntk(model, x, strategy=strategy), _explicit_ntk(model, x))


def _bad_calls():
    model = _mlp()
    x = _inputs((4,))
    frozen = _mlp().requires_grad_(False)
    bn = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).to(F64)
    bn_no_stats = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False),
                                nn.Linear(4, 1)).to(F64).eval()
    dropout = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 1)).to(F64)
    meta = nn.Linear(4, 1, device="meta", dtype=F64)

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 1)

        def forward(self, x):
            return self.lin(x), self.lin(x)

    class Total(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 1)

        def forward(self, x):
            return self.lin(x).sum()

    class Pooled(Total):
        def forward(self, x):
            return self.lin(x).mean(0, keepdim=True)

    return [
        ((lambda x: x, x), {}, TypeError, r"model must be a torch\.nn\.Module; got function"),
        ((model, x), {"strategy": "fast"}, ValueError, r"strategy must be one of .*'fast'"),
        ((model, x), {"batch_size": 0}, ValueError, r"batch_size must be a positive integer"),
        ((model, x), {"batch_size": 2.0}, TypeError, r"batch_size must be a positive integer"),
        ((model, [[1.0] * 4]), {}, TypeError, r"x1 must be a torch\.Tensor or numpy array"),
        # Integer inputs are indices, for models that consume them: a Linear fails on them.
        ((model, x.long()), {}, TypeError, r"x1 has the integer dtype torch\.int64, which is"),
        ((model, x, x.long()), {}, TypeError, r"x1 and x2 must have the same dtype"),
        ((model, x > 0), {}, TypeError, r"x1 must have a floating-point dtype, or an integer"),
        ((model, x.to(torch.complex128)), {}, TypeError, r"x1 must have a floating-point dt"),
        ((model, x[0]), {}, ValueError, r"x1 must have shape \(N, features...\) with a batch"),
        ((model, x[:0]), {}, ValueError, r"x1 is empty"),
        ((model, x.clone().fill_(math.nan)), {}, ValueError, r"x1 contains 28 NaN"),
        ((model, x, x[:, :3]), {}, ValueError, r"same feature shape; got \(4,\) and \(3,\)"),
        ((model, x, x.float()), {}, TypeError, r"x1 and x2 must have the same dtype"),
        ((frozen, x), {}, ValueError, r"model has no parameters with requires_grad=True"),
        ((bn, x), {}, ValueError, r"'1' \(BatchNorm1d\) normalises with batch statistics"),
        ((bn_no_stats, x), {}, ValueError, r"'1' \(BatchNorm1d\) normalises with batch stat"),
        ((dropout, x), {}, ValueError, r"'1' \(Dropout\) is in training mode"),
        ((meta, x), {}, ValueError, r"same device: model tensor 'weight' is on meta"),
        ((Pair().to(F64), x), {}, TypeError, r"model must return one tensor.*got tuple"),
        ((Total().to(F64), x), {}, ValueError, r"batch axis first.*it returned shape \(\)"),
        ((Pooled().to(F64), x), {}, ValueError, r"N = \d examples it returned shape \(1, 1\)"),
    ]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bad_arguments_raise_clear_errors(strategy):
    for args, kwargs, error, message in _bad_calls():
        with pytest.raises(error, match=message):
            empirical_ntk(*args, strategy=kwargs.pop("strategy", strategy), **kwargs)


def _wide_ntk_error(width: int, x: torch.Tensor, seeds) -> float:
    """Mean relative Frobenius distance of the empirical NTK of twins from the analytic one."""
    net = L.serial(L.Dense(width, W_std=1.5, b_std=0.1), L.ReLU(),
                   L.Dense(width, W_std=1.5, b_std=0.1), L.ReLU(),
                   L.Dense(1, W_std=1.5, b_std=0.1))
    ref = net.kernel(x).ntk
    errors = [float((empirical_ntk(net.module((5,), dtype=F64, generator=_gen(s)), x) - ref)
                    .norm() / ref.norm()) for s in seeds]
    return float(np.mean(errors))


def test_wide_twin_approaches_the_infinite_width_ntk():
    # At initialisation the NTK of a width-n network is an average over n hidden units, so
    # it concentrates on the infinite-width kernel with relative fluctuations ~ c / sqrt(n)
    # (Jacot et al. 2018 for the limit; Hanin & Nica 2019: variance ~ depth / width). For this
    # 2-hidden-layer ReLU net on 10 inputs we measured, over 20 seeds at widths 128..8192,
    # mean error 2.0-2.6 / sqrt(n) and worst single seed 5 / sqrt(n); the mean of 4 seeds
    # must stay below 4 / sqrt(n) (0.088 at n = 2048).
    x = _inputs((5,), n=10, seed=1)
    seeds = range(4)
    wide = _wide_ntk_error(2048, x, seeds)
    narrow = _wide_ntk_error(128, x, seeds)
    assert wide < 4.0 / math.sqrt(2048), (wide, narrow)
    assert wide < narrow / 2, (wide, narrow)  # 1/sqrt(n) predicts a factor of 4


def test_output_units_independent_of_a_convolution():
    # Output 0 reads only the convolution, output 1 only the dense layer: each output's
    # backward pass gives the other head's layer a zero gradient, and no cross terms.
    torch.manual_seed(6)

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3, padding=1)
            self.dense = nn.Linear(16, 1)

        def forward(self, x):
            head0 = self.conv(x).tanh().flatten(1).sum(1, keepdim=True)
            return torch.cat([head0, self.dense(x.flatten(1))], dim=1)

    model = TwoHeads().double()
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    for outputs in ("full", "diagonal", "trace"):
        ref = nk.empirical_ntk(model, x, strategy="jacobian", outputs=outputs)
        got = nk.empirical_ntk(model, x, strategy="structured", outputs=outputs)
        # float64 products of a handful of terms: agreement to rounding.
        assert float((got - ref).abs().max()) <= 1e-12 * float(ref.abs().max())
    full = nk.empirical_ntk(model, x, strategy="structured", outputs="full")
    assert float(full[:, :, 0, 1].abs().max()) == 0.0  # no shared parameters: no cross terms
