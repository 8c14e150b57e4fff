"""Regression tests of ntkit.empirical for defects found trying it as a new user (issue 17,
section 5): random models, recurrent modules, integer token ids, memory budgets. Kernels
are compared in float64 with the explicit per-example autograd loop of ``test_empirical``
(relative Frobenius error below 1e-10: sums of a few thousand float64 products)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention
from torch import nn

from ntkit.empirical import empirical_nngp, empirical_ntk, linearize
from test_empirical import F64, STRATEGIES, _assert_rel_close, _explicit_ntk, _inputs, _plan


class _FunctionalDropout(nn.Module):
    def forward(self, x):
        return F.dropout(x, 0.5, training=True)  # random whatever the module's mode


def _functional_dropout() -> nn.Module:
    torch.manual_seed(40)
    return nn.Sequential(nn.Linear(4, 8), _FunctionalDropout(), nn.Linear(8, 2)).to(F64)


class _Recurrent(nn.Module):
    """A recurrent module over ``(N, T, 3)`` sequences, its last state through a head."""

    def __init__(self, cell: type, **options):
        super().__init__()
        self.rnn = cell(3, 4, batch_first=True, **options)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_functional_dropout_is_detected_in_every_strategy(strategy):
    x = _inputs((4,), n=5)
    with pytest.raises(ValueError, match=r"model: module '1' \(_FunctionalDropout\) gives "
                                         r"different outputs .* must be deterministic"):
        empirical_ntk(_functional_dropout(), x, strategy=strategy)


def test_functional_dropout_is_detected_by_the_nngp_and_linearize():
    model, x = _functional_dropout(), _inputs((4,), n=5)
    with pytest.raises(ValueError, match=r"module '1' \(_FunctionalDropout\) gives different"):
        empirical_nngp(model, x)
    with pytest.raises(ValueError, match=r"module '1' \(_FunctionalDropout\) gives different"):
        linearize(model)(x)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_dropout_inside_a_recurrent_module_in_training_mode_is_detected(strategy):
    torch.manual_seed(41)
    model = _Recurrent(nn.LSTM, num_layers=2, dropout=0.5).to(F64)
    x = _inputs((3, 3), n=4)
    with pytest.raises(ValueError, match=r"module 'rnn' \(LSTM\) gives different outputs"):
        empirical_ntk(model, x, strategy=strategy)
    # In eval mode the same model is deterministic and its kernel is the explicit one.
    model.eval()
    _assert_rel_close(empirical_ntk(model, x, strategy=strategy), _explicit_ntk(model, x))


@pytest.fixture(scope="module")
def recurrent():
    out = {}
    for seed, cell in enumerate((nn.RNN, nn.LSTM, nn.GRU)):
        torch.manual_seed(42 + seed)
        model = _Recurrent(cell).to(F64)
        x = _inputs((4, 3), n=4, seed=50 + seed)
        out[cell.__name__] = (model, x, _explicit_ntk(model, x, outputs="full"))
    return out


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_recurrent_modules_in_every_strategy(recurrent, cell, strategy):
    model, x, full = recurrent[cell]
    _assert_rel_close(empirical_ntk(model, x, strategy=strategy, outputs="full"), full)
    trace = full.diagonal(dim1=2, dim2=3).sum(-1)
    _assert_rel_close(empirical_ntk(model, x, strategy=strategy), trace)
    # Against other inputs (two different blocks) as well.
    x2 = _inputs((4, 3), n=3, seed=60)
    _assert_rel_close(empirical_ntk(model, x, x2, strategy=strategy),
                      _explicit_ntk(model, x, x2))


def test_recurrent_model_keeps_its_head_factorised(recurrent):
    # Only the recurrent module's parameters fall back to (looped) per-example Jacobians.
    model, x, _ = recurrent["GRU"]
    assert set(_plan(model, x).fallback) == {n for n, _ in model.rnn.named_parameters(
        prefix="rnn")}


class _Bag(nn.Module):
    """Token ids -> embedding -> mean over positions -> linear head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(6, 4, padding_idx=0)
        self.head = nn.Linear(4, 3)

    def forward(self, ids):
        return self.head(self.embed(ids).mean(1))


def _ids(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 6, (n, 5), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("outputs", ["trace", "full", "diagonal"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_integer_token_ids_in_every_strategy(strategy, outputs):
    torch.manual_seed(44)
    model = _Bag().to(F64)
    x1, x2 = _ids(5, 45), _ids(3, 46)
    assert x1.dtype == torch.int64
    for a, b in ((x1, None), (x1, x2)):
        theta = empirical_ntk(model, a, b, strategy=strategy, outputs=outputs)
        assert theta.dtype == F64  # the model's dtype: integer inputs set none
        _assert_rel_close(theta, _explicit_ntk(model, a, b, outputs=outputs))
    assert _plan(model, x1).fallback == []  # the embedding's index Gram, not Jacobians


def test_integer_token_ids_in_the_nngp_and_a_float32_model():
    torch.manual_seed(47)
    model = _Bag()  # float32
    ids = _ids(4, 48).to(torch.int32)
    f = model(ids)
    nngp = empirical_nngp(model, ids)
    assert nngp.dtype == torch.float32
    # The same products of the same outputs, so rounding-level agreement in float32.
    torch.testing.assert_close(nngp, f @ f.T, rtol=1e-6, atol=1e-6)
    assert empirical_ntk(model, ids).dtype == torch.float32


def test_one_token_per_example_and_ids_as_numpy():
    torch.manual_seed(49)
    model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 2)).to(F64)
    ids = torch.tensor([0, 3, 3, 1])
    theta = empirical_ntk(model, ids.numpy(), strategy="structured")
    _assert_rel_close(theta, _explicit_ntk(model, ids))


def test_max_memory_strings():
    torch.manual_seed(50)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).to(F64)
    x = _inputs((4,), n=6)
    # The same computation twice (the same block size): equal bit for bit.
    assert torch.equal(empirical_ntk(model, x, max_memory="4GB"),
                       empirical_ntk(model, x, max_memory=4 * 10**9))
    with pytest.raises(ValueError, match=r"max_memory=1000 bytes is too small"):
        empirical_ntk(model, x, max_memory="1kB", strategy="jacobian")
