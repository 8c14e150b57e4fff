"""ntkit.empirical's structured strategy: the open registry of handlers, ntkit's ConvModule,
and convolutions' padding, dilation and groups read from public attributes, each against
the Jacobian strategy (float64; relative Frobenius error below 1e-10: both are sums of a
few thousand float64 products, exact to ~1e-15 each, with ample margin)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention
from torch import nn

from ntkit import layers as L  # noqa: N812 - the convention of docs/conventions.md
from ntkit.empirical import StructuredHandler, _factors, empirical_ntk, register_structured
from test_empirical import F64, STRATEGIES, _assert_rel_close, _explicit_ntk, _inputs, _plan


def _scaled_linear_type():
    """A fresh user module type (registration is global: one type per test)."""

    class ScaledLinear(nn.Module):
        """``y_s = 0.5 W x_s + 2 b`` on rows ``s`` of ``(N, S, in)`` inputs."""

        def __init__(self, d_in: int, d_out: int):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(d_out, d_in, dtype=F64))
            self.bias = nn.Parameter(torch.randn(d_out, dtype=F64))

        def forward(self, x):
            return F.linear(x, 0.5 * self.weight, 2.0 * self.bias)

    return ScaledLinear


class _CountingHandler(StructuredHandler):
    """Rows of ``(N, S, in)`` with the scales ``(0.5, 2)``; counts its calls."""

    kind = "rows"

    def __init__(self):
        self.records = self.grads_calls = 0

    def record(self, m, x, n):
        self.records += 1
        return x.detach().reshape(n, 1, -1, x.shape[-1])

    def grads(self, m, g):
        self.grads_calls += 1
        b, k = g.shape[:2]
        return g.reshape(b, k, -1, g.shape[-1]).transpose(1, 2).unsqueeze(1)

    def scales(self, m):
        return 0.5, 2.0


def _user_model(cls):
    torch.manual_seed(30)
    return nn.Sequential(cls(3, 5), nn.Tanh(), cls(5, 2), nn.Flatten())


@pytest.mark.parametrize("outputs", ["trace", "full"])
def test_a_registered_user_module_takes_the_structured_path(outputs):
    cls = _scaled_linear_type()
    model, x = _user_model(cls), _inputs((2, 3), n=5)
    unregistered = _plan(model, x)
    assert set(unregistered.fallback) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert "ScaledLinear has no factorisation" in unregistered.reasons["0.weight"]

    handler = register_structured(cls, _CountingHandler())
    plan = _plan(model, x, outputs)
    assert plan.fallback == [] and {g.handler for g in plan.groups} == {handler}
    handler.records = handler.grads_calls = 0
    theta = empirical_ntk(model, x, strategy="structured", outputs=outputs)
    # The planning pass (2 modules: records, and grads for the widths) and one block's pass
    # (2 modules: records and grads): the factors were used, not per-example Jacobians.
    assert handler.records == 4 and handler.grads_calls == 4
    _assert_rel_close(theta, empirical_ntk(model, x, strategy="jacobian", outputs=outputs))
    _assert_rel_close(theta, _explicit_ntk(model, x, outputs=outputs))


def test_register_as_a_decorator_and_subclasses_inherit_the_handler():
    cls = _scaled_linear_type()

    @register_structured(cls)
    class Handler(_CountingHandler):
        pass

    sub = type("SubScaled", (cls,), {})  # no own forward: the parent's handler applies
    assert isinstance(_factors.handler_for(sub(2, 2)), Handler)
    model, x = _user_model(sub), _inputs((2, 3), n=4)
    assert _plan(model, x).fallback == []
    _assert_rel_close(empirical_ntk(model, x, strategy="structured"), _explicit_ntk(model, x))


@pytest.mark.parametrize("args, error, message", [
    ((int, _CountingHandler()), TypeError, r"module_type must be a subclass of torch\.nn\.Mod"),
    ((nn.Linear, object()), TypeError, r"handler must be a StructuredHandler instance; got obj"),
    ((nn.Linear, StructuredHandler()), ValueError, r"handler\.kind must be one of \('rows'"),
])
def test_register_rejects_bad_arguments(args, error, message):
    with pytest.raises(error, match=message):
        register_structured(*args)
    assert isinstance(_factors.handler_for(nn.Linear(2, 2)), _factors._Dense)  # unchanged


def _conv_net(conv: nn.Module, in_shape: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(31)
    with torch.no_grad():
        width = conv.to(F64)(torch.zeros(1, *in_shape, dtype=F64)).numel()
    return nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.Linear(width, 2)).to(F64)


CONVS = {
    "same-even-kernel": (lambda: nn.Conv2d(2, 3, (2, 3), padding="same"), (2, 5, 4)),
    "same-dilated-reflect": (lambda: nn.Conv2d(2, 3, 3, dilation=2, padding="same",
                                               padding_mode="reflect"), (2, 6, 6)),
    "circular-strided": (lambda: nn.Conv2d(2, 4, 3, stride=2, padding=(1, 2),
                                           padding_mode="circular"), (2, 5, 6)),
    "replicate-groups": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2,
                                           padding_mode="replicate"), (4, 4, 4)),
    "valid-1d-dilated": (lambda: nn.Conv1d(2, 3, 3, dilation=2, padding="valid"), (2, 9)),
    "circular-1d-groups": (lambda: nn.Conv1d(4, 4, 3, padding=2, groups=4,
                                             padding_mode="circular"), (4, 7)),
}


@pytest.mark.parametrize("name", list(CONVS))
def test_torch_convolutions_from_public_attributes(name):
    make, in_shape = CONVS[name]
    model, x = _conv_net(make(), in_shape), _inputs(in_shape, n=5)
    assert _plan(model, x).fallback == []
    for outputs in ("trace", "full"):
        _assert_rel_close(empirical_ntk(model, x, strategy="structured", outputs=outputs),
                          empirical_ntk(model, x, strategy="jacobian", outputs=outputs))


TWINS = {
    "same-strided-ntk": (L.serial(L.Conv(4, (3, 2), strides=(2, 1), W_std=1.4, b_std=0.3),
                                  L.ReLU(), L.Conv(3, (2, 2), padding="VALID"), L.Flatten(),
                                  L.Dense(2)), (2, 5, 5)),
    "circular-standard": (L.serial(L.Conv(3, (3, 3), padding="CIRCULAR", b_std=0.2,
                                      parametrization="standard"), L.Erf(), L.Flatten(),
                                   L.Dense(2, parametrization="standard")), (2, 4, 5)),
    "1d-same-no-bias": (L.serial(L.Conv(3, (4,), strides=2, b_std=None), L.ReLU(),
                                 L.Flatten(), L.Dense(2)), (2, 7)),
}


@pytest.mark.parametrize("outputs", ["trace", "full", "diagonal"])
@pytest.mark.parametrize("name", list(TWINS))
def test_conv_module_takes_the_structured_path(name, outputs, monkeypatch):
    net, in_shape = TWINS[name]
    model = net.module(in_shape, dtype=F64, generator=torch.Generator().manual_seed(32))
    x = _inputs(in_shape, n=5)
    plan = _plan(model, x, outputs)
    convs = [n for n, m in model.named_modules() if isinstance(m, L.ConvModule)]
    assert convs and plan.fallback == []
    assert {n.rsplit(".", 1)[0] for g in plan.groups if g.handler is _factors.CONV_HANDLER
            for n in g.names} == set(convs)
    recorded = []
    record = _factors.CONV_HANDLER.record
    monkeypatch.setattr(_factors.CONV_HANDLER, "record",
                        lambda m, xs, n: recorded.append(m) or record(m, xs, n))
    theta = empirical_ntk(model, x, strategy="structured", outputs=outputs)
    # Once in the planning pass, once in the one block's pass: the factors were used.
    assert len(recorded) == 2 * len(convs)
    _assert_rel_close(theta, empirical_ntk(model, x, strategy="jacobian", outputs=outputs))


def test_a_handler_check_that_gives_a_reason_sends_the_parameters_to_the_fallback(
        monkeypatch):
    # StructuredHandler.check runs on the planning pass: a reason (here: any) makes the
    # parameters of that call per-example Jacobians rather than factors, never wrong values.
    net = L.serial(L.Conv(3, (3, 3), padding="SAME", b_std=0.1), L.Flatten(), L.Dense(2))
    model = net.module((1, 4, 4), dtype=F64, generator=torch.Generator().manual_seed(33))
    x = _inputs((1, 4, 4), n=3)
    assert _plan(model, x).fallback == []
    monkeypatch.setattr(_factors.CONV_HANDLER, "check",
                        lambda m, feature, output: "its patches do not reproduce its output")
    plan = _plan(model, x)
    assert set(plan.fallback) == {"0.weight", "0.bias"}
    assert "its patches do not reproduce its output" in plan.reasons["0.weight"]
    _assert_rel_close(empirical_ntk(model, x, strategy="structured"), _explicit_ntk(model, x))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_conv_module_agrees_with_explicit_jacobians(strategy):
    net, in_shape = TWINS["same-strided-ntk"]
    model = net.module(in_shape, dtype=F64, generator=torch.Generator().manual_seed(34))
    x = _inputs(in_shape, n=4)
    _assert_rel_close(empirical_ntk(model, x, strategy=strategy), _explicit_ntk(model, x))
