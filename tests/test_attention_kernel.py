"""``L.SelfAttention``: its infinite-width NNGP/NTK against closed forms, against Monte Carlo
over its finite twin at growing width, and its errors."""

from __future__ import annotations

import warnings

import pytest
import torch

from ntkit import layers as L  # noqa: N812 - the convention of docs/conventions.md
from ntkit.empirical import empirical_ntk

F64 = torch.float64
IN_SHAPE = (2, 5)  # (channels, positions)


def _x(n=3, seed=50):
    return torch.randn(n, *IN_SHAPE, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _net(width, heads, **attention):
    """A 1x1 convolution to ``width`` channels (so that the attention's inputs are wide),
    then self-attention of that width."""
    return L.serial(L.Conv(width, (1,)),
                    L.SelfAttention(heads, n_chan_key=width, n_chan_val=width,
                                    n_chan_out=width, **attention))


def _mc_nngp(net, x, nets):
    """Mean over ``nets`` twins of the channel-averaged products ``f_c(x, p) f_c(x', q)``."""
    acc = 0.0
    for seed in range(nets):
        model = net.module(IN_SHAPE, generator=torch.Generator().manual_seed(seed), dtype=F64)
        with torch.no_grad():
            f = model(x)
        acc = acc + torch.einsum("icp,jcq->ijpq", f, f) / f.shape[1]
    return acc / nets


def _rel(a, b):
    return float((a - b).norm() / b.norm())


MC = {
    "softmax-bias": dict(b_std=0.3, W_out_std=1.3, W_key_std=2.0),
    "sum-embeddings-in-values": dict(pos_emb_type="sum", val_pos_emb=True),
    "concat-decaying-embeddings": dict(pos_emb_type="concat",
                                       pos_emb_decay_fn=lambda d: torch.exp(-d / 4)),
}


@pytest.mark.parametrize("name", list(MC))
def test_nngp_matches_monte_carlo_of_the_twin_as_width_grows(name):
    # Linear scaling: the attention weights converge at rate 1/sqrt(width), and the Monte
    # Carlo error of 10 twins shrinks like 1/sqrt(10 width). Measured (seeds 0-9) at 16 and
    # 256 channels: 0.36 -> 0.026, 0.52 -> 0.047, 0.083 -> 0.032 for the three variants.
    # The bound 0.08 is 1.7 times the worst wide error; the error must also shrink.
    x = _x()
    errors = [_rel(_mc_nngp(_net(w, 4, **MC[name]), x, 10),
                   _net(w, 4, **MC[name]).kernel(x).nngp) for w in (16, 256)]
    assert errors[1] < 0.08 and errors[1] < errors[0], errors


def test_identity_attention_with_square_root_scaling_matches_monte_carlo():
    # Independent queries and keys: the logits stay Gaussian, so the output is Gaussian only
    # as heads and widths grow together (the input convolution's width too: the kernel is a
    # product of input kernels). 30 twins at (channels, heads, key width) (16, 4, 16) and
    # (128, 32, 128): measured 0.55 and 0.043 (0.058 with 20 twins of (256, 64, 128)). The
    # bound 0.1 is over twice the wide error; the error must also shrink.
    x = _x()
    errors = []
    for width, heads in ((16, 4), (128, 32)):
        net = L.serial(L.Conv(width, (1,)), L.SelfAttention(
            heads, n_chan_key=width, n_chan_val=8, n_chan_out=width, linear_scaling=False,
            attention_mechanism="identity", pos_emb_type="sum", b_std=0.2))
        errors.append(_rel(_mc_nngp(net, x, 30), net.kernel(x).nngp))
    assert errors[1] < 0.1 and errors[1] < errors[0], errors


def test_ntk_matches_the_twins_empirical_ntk_as_width_grows():
    # Mean empirical NTK of 6 twins (a ReLU layer before, a read-out after) at 32 and 256
    # channels: measured 0.154 -> 0.041. The bound 0.1 is 2.4 times the wide error; the
    # error must also shrink.
    x = _x(n=4)
    errors = []
    for width, heads in ((32, 4), (256, 16)):
        net = L.serial(L.Conv(width, (1,)), L.ReLU(),
                       L.SelfAttention(heads, n_chan_key=width, n_chan_val=width,
                                       n_chan_out=width, pos_emb_type="concat", b_std=0.2),
                       L.GlobalAvgPool(), L.Dense(1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = sum(empirical_ntk(net.module(IN_SHAPE, dtype=F64,
                                               generator=torch.Generator().manual_seed(s)),
                                    x, strategy="jacobian") for s in range(6)) / 6
        errors.append(_rel(est, net.kernel(x).ntk))
    assert errors[1] < 0.1 and errors[1] < errors[0], errors


def test_one_position_is_a_two_layer_linear_network():
    # Softmax over a single key is 1: f = OV_std (x W_V) W_out / sqrt(...) + b_std b, whose
    # NNGP is OV^2 K + b^2 and NTK OV^2 Theta + 2 OV^2 K + b^2 (values, output, bias).
    x = torch.randn(4, 3, 1, dtype=F64, generator=torch.Generator().manual_seed(51))
    base = L.serial(L.Conv(8, (1,), b_std=0.5), L.ReLU())
    ov2, b2 = (1.5 * 0.7) ** 2, 0.3**2
    k0 = base.kernel(x)
    k = L.serial(base, L.SelfAttention(2, W_out_std=1.5, W_value_std=0.7, b_std=0.3)).kernel(x)
    torch.testing.assert_close(k.nngp, ov2 * k0.nngp + b2, rtol=1e-12, atol=0)
    torch.testing.assert_close(k.ntk, ov2 * k0.ntk + 2 * ov2 * k0.nngp + b2, rtol=1e-12,
                               atol=0)


def test_zero_query_key_scale_is_uniform_attention():
    # W_key_std = 0: every logit is 0, softmax is uniform over the P positions, and each
    # output position is OV_std times the mean of the values: K'(p, q) = OV^2 mean K + b^2.
    x = _x()
    base = L.serial(L.Conv(8, (1,)), L.Erf())
    k = L.serial(base, L.SelfAttention(2, W_key_std=0.0, b_std=0.4)).kernel(x)
    pooled = L.serial(base, L.GlobalAvgPool()).kernel(x).nngp
    torch.testing.assert_close(k.nngp, (pooled + 0.16)[:, :, None, None].expand_as(k.nngp),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("attention", [
    dict(pos_emb_type="sum", pos_emb_decay_fn=lambda d: 1 / (1 + d)),
    dict(linear_scaling=False, attention_mechanism="identity", pos_emb_type="concat"),
])
def test_kernel_is_symmetric_psd_and_consistent_across_layouts(attention):
    x = _x(n=4)
    net = L.serial(L.Conv(8, (1,)), L.ReLU(), L.SelfAttention(2, b_std=0.1, **attention))
    k = net.kernel(x)
    for t in (k.nngp, k.ntk):
        flat = t.permute(0, 2, 1, 3).reshape(4 * 5, 4 * 5)  # rows (example, position)
        torch.testing.assert_close(flat, flat.T, rtol=1e-12, atol=1e-12)
        assert float(torch.linalg.eigvalsh(flat)[0]) > -1e-10 * float(flat.diagonal().max())
    rect = net.kernel(x[:2], x[1:])
    torch.testing.assert_close(rect.nngp, k.nngp[:2, 1:], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rect.ntk, k.ntk[:2, 1:], rtol=1e-12, atol=1e-12)
    diag = net.kernel(x, diagonal=True)
    idx = torch.arange(4)
    torch.testing.assert_close(diag.nngp, k.nngp[idx, idx], rtol=1e-12, atol=1e-12)


def test_spec_round_trips_through_json():
    net = L.serial(L.Conv(8, (1,)), L.SelfAttention(2, pos_emb_type="concat", n_chan_pos_emb=3,
                                                    pos_emb_decay_fn=torch.exp, b_std=0.2))
    again = L.from_json(net.to_json())
    x = _x()
    torch.testing.assert_close(again.kernel(x).ntk, net.kernel(x).ntk, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(n_heads=0), ValueError, "n_heads"),
    (dict(n_heads=2, attention_mechanism="sigmoid"), ValueError, "attention_mechanism"),
    (dict(n_heads=2, pos_emb_type="rotary"), ValueError, "pos_emb_type"),
    (dict(n_heads=2, b_std=-1.0), ValueError, "b_std"),
    (dict(n_heads=2, W_key_std=float("nan")), ValueError, "W_key_std"),
    (dict(n_heads=2, linear_scaling=1), TypeError, "linear_scaling"),
    (dict(n_heads=2, pos_emb_decay_fn=3.0), TypeError, "pos_emb_decay_fn"),
    (dict(n_heads=2, pos_emb_type="sum", n_chan_pos_emb=4), ValueError, "n_chan_pos_emb"),
])
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        L.SelfAttention(**kwargs)


def test_bad_inputs_and_the_missing_closed_form_raise():
    with pytest.raises(ValueError, match="channels-first sequences"):
        L.serial(L.Dense(4), L.SelfAttention(2)).kernel(torch.randn(3, 4, dtype=F64))
    softmax = L.serial(L.Conv(4, (1,)), L.SelfAttention(2, linear_scaling=False))
    with pytest.raises(NotImplementedError, match="no closed-form"):
        softmax.kernel(_x())
    out = softmax.module(IN_SHAPE, dtype=F64)(_x())  # the finite twin still works
    assert out.shape == (3, 64, 5) and bool(torch.isfinite(out).all())
