"""A layer defined outside ntkit, with only the public API: kernel, twin, spec and budget."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from ntkit import layers as L

# Names are global to the process: these are prefixed with the test module's name.


@L.register_layer(fields={"c": "real"}, required=("c",), name="test_registry.Scale")
@dataclass(frozen=True)
class Scale(L.Layer):
    """``z -> c z``: every kernel times ``c^2``; a Gaussian input stays Gaussian."""

    c: float

    def out_shape(self, in_shape):
        return in_shape

    def kernel_fn(self, k):
        c2 = self.c**2
        return k.replace(nngp=k.nngp * c2, ntk=None if k.ntk is None else k.ntk * c2,
                         cov1=k.cov1 * c2, cov2=None if k.cov2 is None else k.cov2 * c2)

    def build(self, in_shape, generator, dtype) -> nn.Module:
        return _ScaleModule(self.c)


class _ScaleModule(nn.Module):
    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, x):
        return x * self.c


@dataclass(frozen=True)
class Greedy(Scale):
    """``Scale`` that declares a working set of a million kernel entries per pair of inputs."""

    def footprint(self, in_shape, layout):
        out, out_layout, _ = super().footprint(in_shape, layout)
        return out, out_layout, 1e6


def _net(middle: L.Layer | None = None) -> L.Serial:
    layers = [L.Dense(16, W_std=1.4), L.ReLU(), L.Dense(1, W_std=1.2)]
    if middle is not None:
        layers.insert(1, middle)
    return L.serial(*layers)


@pytest.fixture
def x():
    return torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def test_user_layer_kernel_is_its_closed_form(x):
    # ReLU is positively homogeneous and its derivative scale-free, and the biases are 0, so
    # scaling the first pre-activations by 2 scales the NNGP and the NTK by exactly 4 (each
    # entry is the plain one times 4 up to rounding: a few ulps).
    plain, scaled = _net().kernel(x), _net(Scale(2.0)).kernel(x)
    assert torch.allclose(scaled.nngp, 4 * plain.nngp, rtol=1e-14, atol=0)
    assert torch.allclose(scaled.ntk, 4 * plain.ntk, rtol=1e-14, atol=0)
    assert not torch.allclose(scaled.ntk, plain.ntk, rtol=1e-3)


def test_user_layer_twin(x):
    # Scale has no parameters: both twins draw the same weights from the same seed, and the
    # ReLU network's output doubles (to rounding).
    plain = _net().module((3,), generator=torch.Generator().manual_seed(1),
                          dtype=torch.float64)
    scaled = _net(Scale(2.0)).module((3,), generator=torch.Generator().manual_seed(1),
                                     dtype=torch.float64)
    assert torch.allclose(scaled(x), 2 * plain(x), rtol=1e-14, atol=0)


def test_user_layer_spec_round_trip_and_hash():
    net = _net(Scale(2.0))
    doc = net.to_dict()
    assert doc["net"]["layers"][1] == {"type": "test_registry.Scale", "c": 2.0}
    back = L.from_json(net.to_json())
    assert back == net and isinstance(back.layers[1], Scale)
    assert L.spec_hash(back) == L.spec_hash(net) == L.spec_hash(doc)
    assert L.spec_hash(_net(Scale(3.0))) != L.spec_hash(net)


def test_user_layer_fields_are_checked_on_loading():
    doc = _net(Scale(2.0)).to_dict()
    doc["net"]["layers"][1]["c"] = "2"
    with pytest.raises(TypeError, match=r"net \(Serial\).layers\[1\] "
                                        r"\(test_registry.Scale\).c must be a finite number"):
        L.from_dict(doc)
    del doc["net"]["layers"][1]["c"]
    with pytest.raises(ValueError, match=r"missing field 'c'"):
        L.from_dict(doc)


def test_unregistered_types_raise():
    doc = {"ntkit_spec": 1, "net": {"type": "test_registry.Unregistered"}}
    with pytest.raises(ValueError, match=r"net: unknown layer type "
                                         r"'test_registry.Unregistered'; known: \[.*'Dense'"):
        L.from_json(json.dumps(doc))
    # Greedy subclasses a registered class but is not registered itself.
    with pytest.raises(TypeError, match=r"net.layers\[1\]: .*\(Greedy\) has no serialisable "
                                        r"spec; register its class"):
        _net(Greedy(2.0)).to_json()


def test_user_layer_is_budgeted(x):
    net = _net(Scale(2.0))
    # The budget is in bytes of the inputs' dtype; this one holds every block of 5 inputs.
    budgeted = net.kernel(x, max_memory=10**6)
    whole = net.kernel(x)
    assert torch.equal(budgeted.ntk, whole.ntk)  # the same blocks, computed the same way
    # A layer's own footprint enters the estimate: a million entries per pair (x 8 bytes x 2
    # kernels) cannot fit in 1 MB, although the same network with Scale does.
    with pytest.raises(ValueError, match=r"max_memory=1000000 .* cannot hold the computation"):
        _net(Greedy(2.0)).kernel(x, max_memory=10**6)
    with pytest.raises(ValueError, match=r"max_memory=100 .* cannot hold the computation"):
        net.kernel(x, max_memory=100)


def test_a_name_registers_once():
    @dataclass(frozen=True)
    class Other(Scale):
        pass

    with pytest.raises(ValueError, match=r"layer type 'test_registry.Scale' is already "
                                         r"registered"):
        L.register_layer(Other, fields={"c": "real"}, name="test_registry.Scale")
    with pytest.raises(ValueError, match=r"Scale is already registered as "
                                         r"'test_registry.Scale'"):
        L.register_layer(Scale, name="test_registry.Scale2")
    # The refused registrations left nothing behind.
    with pytest.raises(TypeError, match=r"has no serialisable spec"):
        Other(1.0).to_json()


@pytest.mark.parametrize(("kwargs", "err", "match"), [
    ({"fields": {"c": "complex"}}, ValueError, r"field 'c' has unknown kind 'complex'"),
    ({"fields": {"d": "real"}}, ValueError, r"takes no argument 'd'"),
    ({"fields": {"c": "real"}, "required": ("d",)}, ValueError, r"required fields \['d'\]"),
    ({"fields": {}, "name": ""}, ValueError, r"name must be a non-empty string"),
])
def test_registration_is_checked(kwargs, err, match):
    @dataclass(frozen=True)
    class Fresh(Scale):
        pass

    with pytest.raises(err, match=match):
        L.register_layer(Fresh, **{"name": "test_registry.Fresh", **kwargs})


def test_only_layer_classes_register():
    with pytest.raises(TypeError, match=r"is not a layer class"):
        L.register_layer(dict, name="test_registry.dict")


def test_builtin_combinators_expose_their_children():
    inner = (L.Dense(4), L.ReLU())
    assert L.Serial(inner).children() == inner
    assert L.Parallel(inner).children() == inner
    assert L.Dense(4).children() == () and L.FanOut(2).children() == ()
