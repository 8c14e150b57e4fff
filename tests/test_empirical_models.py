"""ntkit.empirical on architectures: every strategy and output layout against an explicit
per-example, per-output autograd loop (float64; relative Frobenius error below 1e-10, i.e.
rounding of sums of a few thousand float64 products, ~1e-15 each, with ample margin)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ntkit.empirical import empirical_ntk
from test_empirical import F64, STRATEGIES, _assert_rel_close, _explicit_ntk, _inputs, _plan

OUTPUTS = ("trace", "full", "diagonal")


def _cnn():
    torch.manual_seed(20)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False), nn.Tanh(),
        nn.Conv2d(4, 3, 2, dilation=2, padding="same", padding_mode="circular"),
        nn.Flatten(), nn.Linear(3 * 3 * 3, 2)).to(F64)


def _cnn1d_batchnorm():
    torch.manual_seed(21)
    model = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1, padding_mode="reflect"),
                          nn.BatchNorm1d(3), nn.ReLU(), nn.Conv1d(3, 2, 2, stride=2),
                          nn.GroupNorm(2, 2), nn.Flatten(), nn.Linear(2 * 3, 2)).to(F64)
    model.train()(_inputs((2, 6), n=16, seed=22))  # running statistics off their defaults
    with torch.no_grad():  # affine parameters off their defaults (1, 0)
        for m in (model[1], model[4]):
            m.weight.normal_()
            m.bias.normal_()
    return model.eval()


class _Residual(nn.Module):
    """x -> Linear -> [LayerNorm -> Linear -> GELU -> Linear] + skip -> LayerNorm -> Linear."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 6)
        self.norm1 = nn.LayerNorm(6)
        self.mlp = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 6))
        self.norm2 = nn.LayerNorm(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.mlp(self.norm1(h))
        return self.head(self.norm2(h))


class _Transformer(nn.Module):
    """Token embedding (float ids, padding 0) + positions -> one encoder block -> mean -> head."""

    def __init__(self):
        super().__init__()
        self.tokens = nn.Embedding(5, 8, padding_idx=0)
        self.positions = nn.Parameter(torch.randn(3, 8) * 0.1)
        self.block = nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0,
                                                batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = self.tokens(x.long()) + self.positions
        return self.head(self.block(h).mean(1))


class _TiedHead(nn.Module):
    """Embedding whose weight is tied to the output head (as in language models)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.head = nn.Linear(4, 5, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, x):
        return self.head(torch.tanh(self.embed(x.long())).sum(1))


def _tokens(n=5, seed=23):
    return torch.randint(0, 5, (n, 3), generator=torch.Generator().manual_seed(seed)).to(F64)


def _transformer():
    torch.manual_seed(24)
    return _Transformer().to(F64).eval()


def _tied_head():
    torch.manual_seed(25)
    return _TiedHead().to(F64)


def _residual():
    torch.manual_seed(26)
    return _Residual().to(F64)


# name -> (factory, inputs, parameters expected to fall back to per-example Jacobians)
ARCHITECTURES = {
    "cnn-stride-padding-groups": (_cnn, lambda: _inputs((2, 5, 5), n=5), set()),
    "cnn1d-batchnorm-groupnorm": (_cnn1d_batchnorm, lambda: _inputs((2, 6), n=5), set()),
    "residual-layernorm": (_residual, lambda: _inputs((4,), n=5), set()),
    # A parameter added directly in forward has no module call to factorise.
    "transformer": (_transformer, _tokens, {"positions"}),
    # An Embedding and a Linear share a weight: different kinds, so no factorisation.
    "tied-embedding-head": (_tied_head, _tokens, {"embed.weight"}),
}


@pytest.fixture(scope="module")
def references():
    out = {}
    for name, (make, inputs, _) in ARCHITECTURES.items():
        model, x = make(), inputs()
        out[name] = (model, x, _explicit_ntk(model, x, outputs="full"))
    return out


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_structured_plan_factorises_what_it_can(references, name):
    model, x, _ = references[name]
    assert set(_plan(model, x).fallback) == ARCHITECTURES[name][2]


@pytest.mark.parametrize("outputs", OUTPUTS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_agrees_with_explicit_jacobian_product(references, name, strategy, outputs):
    model, x, full = references[name]
    ref = {"full": full, "diagonal": full.diagonal(dim1=2, dim2=3),
           "trace": full.diagonal(dim1=2, dim2=3).sum(-1)}[outputs]
    theta = empirical_ntk(model, x, strategy=strategy, outputs=outputs)
    assert theta.shape == ref.shape
    _assert_rel_close(theta, ref)
    rect = empirical_ntk(model, x[:2], x[1:], strategy=strategy, outputs=outputs,
                         batch_size=2)
    _assert_rel_close(rect, ref[:2, 1:])


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_structured_reads_images_in_any_memory_layout(references, layout):
    # Convolution patches are gathered by strides from a channels-last copy: the input's own
    # layout (channels last, or a strided slice of a larger batch) must not matter.
    model, x, full = references["cnn-stride-padding-groups"]
    if layout == "channels_last":
        x_in = x.to(memory_format=torch.channels_last)
        assert not x_in.is_contiguous()
    else:
        x_in = torch.stack([2 * x, x], dim=1)[:, 1]  # every other example of a batch
        assert not x_in.is_contiguous() and x_in.storage_offset() > 0
    _assert_rel_close(empirical_ntk(model, x_in, strategy="structured", outputs="full"), full)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_params_select_names_modules_and_predicates(references, strategy):
    model, x, _ = references["residual-layernorm"]
    head = [model.head.weight, model.head.bias]
    _assert_rel_close(empirical_ntk(model, x, strategy=strategy, params="head"),
                      _explicit_ntk(model, x, params=head))
    _assert_rel_close(empirical_ntk(model, x, strategy=strategy, params=["head.weight"]),
                      _explicit_ntk(model, x, params=head[:1]))
    rest = [p for n, p in model.named_parameters() if not n.startswith("embed")]
    _assert_rel_close(
        empirical_ntk(model, x, strategy=strategy, outputs="full",
                      params=lambda n, p: not n.startswith("embed")),
        _explicit_ntk(model, x, outputs="full", params=rest))


def test_params_may_select_frozen_parameters():
    model = _residual().requires_grad_(False)
    x = _inputs((4,), n=4)
    twin = _residual()  # the same weights, trainable, for the reference
    ref = _explicit_ntk(twin, x, params=list(twin.norm2.parameters()))
    _assert_rel_close(empirical_ntk(model, x, params="norm2"), ref)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_max_memory_blocks_give_the_same_kernel(references, strategy):
    model, x, full = references["cnn-stride-padding-groups"]
    # Small enough to force blocks of one or two examples for every strategy.
    theta = empirical_ntk(model, x, strategy=strategy, outputs="full", max_memory=60_000)
    _assert_rel_close(theta, full)
    with pytest.raises(ValueError, match=r"max_memory=100 bytes is too small: strategy="):
        empirical_ntk(model, x, strategy=strategy, max_memory=100)


def test_auto_picks_structured_for_dense_and_conv_nets():
    from ntkit.empirical._ntk import choose_strategy

    mlp = nn.Sequential(nn.Linear(50, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                        nn.Linear(64, 10))
    x = torch.randn(32, 50)
    for outputs in OUTPUTS:
        costs = choose_strategy(mlp, x, outputs=outputs)
        assert min(costs, key=costs.get) == "structured", costs
    # A model with one big raw parameter and a cheap forward: nothing to factorise, so the raw
    # FLOPs favour Jacobian contraction, but by less than VMAP_COST_FACTOR: auto's pick
    # (structured) was measured within the 1.5x of the fastest (bench/RESULTS.md).
    from ntkit.empirical._ntk import VMAP_COST_FACTOR

    costs = choose_strategy(_tied_head(), _tokens(20))
    assert costs["jacobian"] / VMAP_COST_FACTOR < costs["structured"] < costs["jacobian"], costs
    # The benchmark's CNN at N = 64, trace: structured ran faster than jacobian
    # (bench/empirical_ntk.py, bench/RESULTS.md) with nearly equal raw FLOPs;
    # VMAP_COST_FACTOR makes auto agree.
    cnn = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(32 * 8 * 8, 10))
    costs = choose_strategy(cnn, torch.randn(64, 1, 8, 8), outputs="trace")
    assert min(costs, key=costs.get) == "structured", costs


@pytest.mark.parametrize("bad, error, message", [
    ({"outputs": "matrix"}, ValueError, r"outputs must be one of \('trace', 'full', "),
    ({"strategy": "fast"}, ValueError, r"strategy must be one of .*'ntk_vp'"),
    ({"params": "nope"}, ValueError, r"params: 'nope' names no parameter or module"),
    ({"params": []}, ValueError, r"params selects no parameters"),
    ({"params": lambda n, p: False}, ValueError, r"params selects no parameters"),
    ({"params": [3]}, TypeError, r"params must be parameter or module names"),
    ({"max_memory": -1}, ValueError, r"max_memory must be a positive number of bytes"),
    ({"max_memory": float("inf")}, ValueError, r"max_memory must be a positive number of by"),
    ({"max_memory": float("nan")}, ValueError, r"max_memory must be a positive number of by"),
    ({"max_memory": "9" * 400}, ValueError, r"max_memory must be a positive number of bytes"),
    ({"max_memory": 10**400}, ValueError, r"max_memory must be a positive number of bytes"),
    ({"max_memory": True}, TypeError, r"max_memory must be a positive number of bytes"),
])
def test_bad_options_raise_clear_errors(bad, error, message):
    with pytest.raises(error, match=message):
        empirical_ntk(_residual(), _inputs((4,), n=3), **bad)
