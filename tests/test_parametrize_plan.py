"""Plans: abc tables, role inference, apply_/remove_, param_groups, muP attention, bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize as P

from ntkit.parametrize import (
    ABC,
    MF,
    MUP,
    NTP,
    SP,
    Exponents,
    get_abc,
    mup_attention_,
    mup_scaled_dot_product_attention,
    plan,
    remove_mup_attention_,
)

TABLES = (SP, NTP, MUP, MF)


def mlp(w: int, depth: int = 2, d_in: int = 4, k: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, w), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(w, w), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(w, k))


def cnn(w: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, w, kernel), nn.ReLU(), nn.Conv2d(w, w, kernel), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w, 10))


class Encoder(nn.Module):
    def __init__(self, d: int, vocab: int = 11, k: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=4 * d, dropout=0.0,
                                                batch_first=True)
        self.head = nn.Linear(d, k)

    def forward(self, tokens):
        return self.head(self.layer(self.embed(tokens)).mean(1))


def _roles(p) -> dict[str, str]:
    return {name: q.width.role for name, q in p.params.items()}


# --- tables -----------------------------------------------------------------------------------

@pytest.mark.parametrize("abc", TABLES, ids=lambda a: a.name)
def test_every_parametrization_is_the_identity_at_the_base_width(abc):
    model = mlp(8)
    p = plan(model, abc, base=mlp(8))
    for q in p.params.values():  # n = 1: every factor is 1 ** x, exactly 1
        assert (q.multiplier, q.init_std, q.init_scale, q.lr_sgd, q.lr_adam) == (1, 1, 1, 1, 1)
    state = copy.deepcopy(model.state_dict())
    p.apply_(model, reinit=False)
    assert not any(P.is_parametrized(m) for m in model.modules())  # no multiplier installed
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_table_values_at_width_multiplier_4():
    # n = 4: closed forms n^-a, n^-b, n^-c from the tables of _abc.py
    got = {abc.name: {q.width.role: (q.multiplier, q.init_std, q.lr_sgd, q.lr_adam)
                      for q in plan(mlp(64), abc, base=mlp(16)).params.values()}
           for abc in TABLES}
    assert got["sp"]["hidden"] == (1, 0.5, 1, 1) and got["sp"]["output"] == (1, 0.5, 1, 1)
    assert got["ntk"]["hidden"] == (0.5, 1, 1, 0.25) and got["ntk"]["input"] == (1, 1, 1, 0.5)
    assert got["mup"]["hidden"] == (1, 0.5, 1, 0.25) and got["mup"]["output"] == (0.25, 1, 4, 1)
    assert got["mup"]["input"] == (1, 1, 4, 1) and got["mup"]["bias"] == (1, 1, 4, 1)
    assert got["mf"]["hidden"] == (0.5, 1, 4, 0.5)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mf_and_mup_are_one_abc_symmetry_class(optimizer):
    """MF's hidden exponents are muP's moved by the symmetry (a+t, b-t, c_sgd-2t, c_adam-t),
    t = 1/2: from the same draw both compute the same function and take the same step (Adam
    up to its eps, here 1e-30 so it cannot matter)."""
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.randn(16, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    outs = []
    for abc in (MUP, MF):
        model = mlp(64).double()
        p = plan(model, abc, base=mlp(16))
        p.apply_(model, generator=torch.Generator().manual_seed(0))
        kw = {"eps": 1e-30} if optimizer == "adam" else {}
        opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer](
            p.param_groups(0.05, optimizer=optimizer), **kw)
        before = model(x)
        nn.functional.mse_loss(before, y).backward()
        opt.step()
        outs.append((before.detach(), model(x).detach()))
    # two computation paths (n^-1/2 in the init or in the multiplier): rounding only
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-10, atol=1e-12)
    assert float((outs[0][1] - outs[0][0]).abs().max()) > 1e-3  # the step did something


def test_get_abc_names_and_custom_tables():
    assert get_abc("standard") is SP and get_abc("NTP") is NTP and get_abc("μP") is MUP
    assert get_abc("mean-field") is MF
    custom = ABC("readout-only", output=Exponents(a=1.0))
    assert get_abc(custom) is custom
    with pytest.raises(ValueError, match="unknown parametrization 'mu'.*'mup'"):
        get_abc("mu")
    with pytest.raises(TypeError, match="parametrization"):
        get_abc(3)
    with pytest.raises(ValueError, match="hidden.b must be a finite number"):
        ABC("bad", hidden=Exponents(b=float("nan")))
    with pytest.raises(ValueError, match="role must be one of"):
        MUP.exponents("embedding")


# --- roles ------------------------------------------------------------------------------------

def test_roles_of_an_mlp_cnn_and_transformer():
    assert _roles(plan(mlp(32, depth=3), "mup", base=mlp(8, depth=3))) == {
        "0.weight": "input", "0.bias": "bias", "2.weight": "hidden", "2.bias": "bias",
        "4.weight": "hidden", "4.bias": "bias", "6.weight": "output", "6.bias": "fixed"}
    p = plan(cnn(16), "mup", base=cnn(4))
    assert _roles(p) == {"0.weight": "input", "0.bias": "bias", "2.weight": "hidden",
                         "2.bias": "bias", "6.weight": "output", "6.bias": "fixed"}
    assert p.params["2.weight"].width.n == 4
    roles = _roles(plan(Encoder(32), "mup", base=Encoder(16)))
    assert roles["embed.weight"] == "input"
    for name in ("self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight",
                 "linear2.weight"):
        assert roles["layer." + name] == "hidden"
    assert roles["layer.self_attn.in_proj_bias"] == "bias"
    assert roles["layer.norm1.weight"] == roles["layer.norm2.bias"] == "norm"
    assert (roles["head.weight"], roles["head.bias"]) == ("output", "fixed")


def test_embedding_and_conv_transpose_orientation():
    # nn.Embedding is (num_embeddings, dim): its fan-out is dim 1; its N(0, 1) init does not
    # depend on the width, so muP leaves it as drawn.
    q = plan(Encoder(32), "mup", base=Encoder(16)).params["embed.weight"]
    assert (q.width.fan_in_mult, q.width.fan_out_mult, q.init_scale) == (1, 2, 1)
    # nn.ConvTranspose2d(in, out) has weight (in, out, k, k): fan-in is dim 0
    q = plan(nn.ConvTranspose2d(8, 3, 2), "mup", base=nn.ConvTranspose2d(2, 3, 2)).params
    assert q["weight"].width.role == "output" and q["weight"].width.fan_in_mult == 4


def test_delta_finds_a_width_equal_in_model_and_base():
    without = _roles(plan(mlp(16), "mup", base=mlp(16)))
    with_delta = plan(mlp(16), "mup", base=mlp(16), delta=mlp(32))
    assert without["2.weight"] == "fixed"
    assert _roles(with_delta)["2.weight"] == "hidden"
    assert with_delta.params["2.weight"].width.n == 1  # a width, at its base size


def test_explicit_widths_give_the_plan_of_a_base_model():
    from_base = plan(mlp(64), "mup", base=mlp(16))
    widths = {"0.weight": (1, 4), "0.bias": 4, "2.weight": (4, 4), "2.bias": 4,
              "4.weight": (4, 1), "4.bias": 1}
    explicit = plan(mlp(64), "mup", widths=widths)
    assert explicit.params == from_base.params


def test_readout_override():
    # A readout whose output is a width too (e.g. a width-sized embedding head) is hidden by
    # shape; readout= makes it the output layer.
    model, base = nn.Sequential(nn.Linear(3, 32), nn.Linear(32, 32)), \
        nn.Sequential(nn.Linear(3, 8), nn.Linear(8, 8))
    assert _roles(plan(model, "mup", base=base))["1.weight"] == "hidden"
    p = plan(model, "mup", base=base, readout="1")
    assert p.params["1.weight"].width.role == "output"
    assert p.params["1.weight"].multiplier == 0.25


# --- table, apply_, remove_ -------------------------------------------------------------------

def test_table_lists_every_parameter_with_its_scales():
    text = plan(mlp(64), "mup", base=mlp(16)).table()
    lines = text.splitlines()
    assert lines[1].split()[:2] == ["parameter", "role"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert set(rows) == {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}
    # role, fan_in x, fan_out x, multiplier, init std, lr sgd, lr adam
    assert rows["4.weight"] == ["output", "4", "1", "0.25", "1", "4", "1"]
    assert rows["2.weight"] == ["hidden", "4", "4", "1", "0.5", "1", "0.25"]


def test_apply_is_reproducible_and_draws_the_planned_std():
    base = mlp(64)
    a, b, c = mlp(1024), mlp(1024), mlp(1024)
    p = plan(a, "ntk", base=base)
    p.apply_(a, generator=torch.Generator().manual_seed(0))
    p.apply_(b, generator=torch.Generator().manual_seed(0))
    p.apply_(c, generator=torch.Generator().manual_seed(1))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same computation
    assert not torch.equal(sa["2.parametrizations.weight.original"],
                           sc["2.parametrizations.weight.original"])
    # NTP hidden weight: std of the default init at the base width, 1/sqrt(3 * 64)
    # (PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in))). Over 2^20 uniform entries the std's
    # relative standard error is sqrt(0.8 / (4 * 2^20)) ~ 4e-4; 1% is > 20 of them.
    w = sa["2.parametrizations.weight.original"]
    assert abs(float(w.std()) * math.sqrt(3 * 64) - 1) < 0.01
    # and the forward pass sees it multiplied by n^-1/2 = 1/4
    assert abs(float(a[2].weight.detach().std()) * math.sqrt(3 * 64) * 4 - 1) < 0.01


def test_remove_restores_the_plain_model_and_bake_keeps_its_function():
    model = mlp(64)
    p = plan(model, "mup", base=mlp(16))
    p.apply_(model, generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    y = model(x)
    raw = model[4].parametrizations.weight.original.detach().clone()
    p.remove_(model)
    assert not P.is_parametrized(model[4])
    assert torch.equal(model[4].weight, raw)
    # reinit=False rescales the current values by init_scale (as mup.set_base_shapes does);
    # bake=True then folds the 1/4 multiplier into the readout weight
    p.apply_(model, reinit=False)
    p.remove_(model, bake=True)
    assert {n for n, _ in model.named_parameters()} == {n for n, _ in mlp(2).named_parameters()}
    torch.testing.assert_close(model[4].weight, raw * p.params["4.weight"].init_scale * 0.25)
    p2 = plan(model, "mup", base=mlp(16))
    p2.apply_(model, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(x), y)  # same seed, same plan: same function


def test_param_groups():
    model = mlp(64)
    p = plan(model, "mup", base=mlp(16))
    groups = p.param_groups(0.1, optimizer="adamw", weight_decay=0.01)
    ids = [id(t) for g in groups for t in g["params"]]
    assert sorted(ids) == sorted(id(t) for t in model.parameters())  # each exactly once
    by_lr = {round(g["lr"], 12): g for g in groups}
    assert set(by_lr) == {0.1, 0.025}
    assert by_lr[0.025]["params"] == [model[2].weight]
    for g in groups:  # lr * weight_decay is width-independent (mup.MuAdamW's convention)
        assert abs(g["lr"] * g["weight_decay"] - 0.1 * 0.01) < 1e-15
    sgd = {id(t): g["lr"] for g in p.param_groups(0.1, optimizer="sgd") for t in g["params"]}
    assert sgd[id(model[0].weight)] == pytest.approx(0.4)
    assert sgd[id(model[4].bias)] == pytest.approx(0.1)
    torch.optim.AdamW(groups)  # accepted by torch.optim
    p.apply_(model)  # still the same parameter objects after parametrizing
    assert {id(t) for g in p.param_groups(0.1) for t in g["params"]} == set(ids)


# --- attention --------------------------------------------------------------------------------

def _reference_attention(mha, x, scale):
    w, b = mha.in_proj_weight, mha.in_proj_bias
    q, k, v = (x @ w.T + b).chunk(3, -1)
    n, s, e = x.shape
    h = mha.num_heads

    def heads(t):
        return t.view(n, s, h, e // h).transpose(1, 2)

    att = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) * scale, -1) @ heads(v)
    return mha.out_proj(att.transpose(1, 2).reshape(n, s, e))


def test_mup_attention_on_multihead_attention():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, num_heads=2, batch_first=True).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    plain = mha(x, x, x, need_weights=False)[0]
    expected = _reference_attention(mha, x, 1 / 8)  # d_head = 8: logits q.k / 8
    mup_attention_(mha)
    # two computation paths in float64: agreement to rounding
    torch.testing.assert_close(mha(x, x, x, need_weights=False)[0], expected, rtol=1e-10,
                               atol=1e-12)
    assert float((plain - expected).detach().abs().max()) > 1e-3  # the scale changed the output
    with pytest.raises(ValueError, match="already applied"):
        mup_attention_(mha)
    remove_mup_attention_(mha)
    assert torch.equal(mha(x, x, x, need_weights=False)[0], plain)
    # at the base head dimension the scale is the usual 1/sqrt(d_head)
    mup_attention_(mha, base_d_head=8)
    torch.testing.assert_close(mha(x, x, x, need_weights=False)[0], plain, rtol=1e-12,
                               atol=1e-14)


def test_mup_attention_inside_a_transformer_after_a_plan():
    model, base = Encoder(32), Encoder(16)
    p = plan(model, "mup", base=base)
    p.apply_(model, generator=torch.Generator().manual_seed(0))
    mup_attention_(model, base_d_head=8)
    with pytest.raises(ValueError, match="other than a plan's multiplier"):
        p.apply_(model)
    tokens = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(1))
    assert model(tokens).shape == (2, 3)


def test_mup_scaled_dot_product_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, generator=g, dtype=torch.float64) for _ in range(3))
    expected = torch.softmax(q @ k.transpose(-1, -2) / 16, -1) @ v
    torch.testing.assert_close(mup_scaled_dot_product_attention(q, k, v), expected,
                               rtol=1e-10, atol=1e-12)
    with pytest.raises(TypeError, match="scale"):
        mup_scaled_dot_product_attention(q, k, v, scale=1.0)
    with pytest.raises(ValueError, match="base_d_head must be a positive int"):
        mup_scaled_dot_product_attention(q, k, v, base_d_head=0)


# --- bad input --------------------------------------------------------------------------------

class _Cube(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.cube = nn.Parameter(torch.zeros(2, 2, w))


def test_bad_input():
    with pytest.raises(ValueError, match=r"different depth.*'6\.bias' is only in model"):
        plan(mlp(32, depth=3), "mup", base=mlp(8, depth=2))
    with pytest.raises(ValueError, match="unknown parametrization 'mpu'"):
        plan(mlp(32), "mpu", base=mlp(8))
    with pytest.raises(ValueError, match=r"widths\['2.weight'\] must be positive"):
        plan(mlp(32), "mup", widths={"0.weight": (1, 4), "0.bias": 4, "2.weight": (0, 4),
                                     "2.bias": 4, "4.weight": (4, 1), "4.bias": 1})
    with pytest.raises(ValueError, match="no multiplier for parameter '0.bias'"):
        plan(mlp(32), "mup", widths={"0.weight": (1, 4)})
    with pytest.raises(ValueError, match="cannot classify parameter 'cube'"):
        plan(_Cube(8), "mup", base=_Cube(4))
    with pytest.raises(ValueError, match="cannot classify parameter '0.weight'"):
        plan(cnn(8, kernel=5), "mup", base=cnn(4, kernel=3))  # a kernel size is no width
    with pytest.raises(ValueError, match="'0.weight' has rank 2 in model but 4 in base"):
        plan(nn.Sequential(nn.Linear(3, 8)), "mup", base=nn.Sequential(nn.Conv2d(3, 4, 1)))
    with pytest.raises(ValueError, match="exactly one of base= .* and widths="):
        plan(mlp(8), "mup")
    with pytest.raises(ValueError, match="readout='0'.*no width in its fan-in"):
        plan(mlp(32), "mup", base=mlp(8), readout="0")
    with pytest.raises(ValueError, match="readout='head' is not a module"):
        plan(mlp(32), "mup", base=mlp(8), readout="head")
    p = plan(mlp(32), "mup", base=mlp(8))
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        p.param_groups(float("nan"))
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        p.param_groups(0.1, weight_decay=-1.0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        p.param_groups(0.1, optimizer="lion")
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(16, 4\), the plan was "
                                         r"made for \(32, 4\)"):
        p.apply_(mlp(16))
    with pytest.raises(ValueError, match="no nn.MultiheadAttention"):
        mup_attention_(mlp(8))


def test_plan_refuses_an_ntk_parametrized_ntkit_twin():
    # The twin scales its N(0, 1) weights by W_std / sqrt(fan_in) in its forward pass; a plan,
    # whose scales are relative to PyTorch's default init, would scale them a second time.
    from ntkit import layers as L

    def spec(width, parametrization):
        return L.serial(L.Dense(width, b_std=0.1, parametrization=parametrization), L.ReLU(),
                        L.Dense(1, parametrization=parametrization))

    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="parametrization='standard'"):
        plan(spec(64, "ntk").module((4,), generator=g), "mup",
             base=spec(16, "ntk").module((4,), generator=g))
    p = plan(spec(64, "standard").module((4,), generator=g), "mup",
             base=spec(16, "standard").module((4,), generator=g))
    assert {q.width.role for q in p.params.values()} >= {"input", "output"}
