"""Masked positions (``spec.kernel(..., mask_constant=c)``, ``L.input_mask``,
``L.masked_forward``): Monte Carlo of the masked finite twin against the masked kernel,
masking a token against deleting it, and the errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from ntkit import layers as L  # noqa: N812 - the convention of docs/conventions.md
from ntkit.empirical import empirical_ntk

F64 = torch.float64
PAD = -5.0
IN_SHAPE = (2, 6)  # (channels, positions)


def _x(n=4, seed=60):
    """Sequences of 6 tokens with some padded: example 0 its last token, example 1 tokens 1
    and 3, example 3 its first."""
    x = torch.randn(n, *IN_SHAPE, dtype=F64, generator=torch.Generator().manual_seed(seed))
    x[0, :, 5] = PAD
    x[1, :, [1, 3]] = PAD
    if n > 3:
        x[3, :, 0] = PAD
    return x


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _net(width, heads, *, readout=False, **attention):
    layers = [L.Conv(width, (1,), b_std=0.3), L.ReLU(),
              L.SelfAttention(heads, n_chan_key=width, n_chan_val=width, n_chan_out=width,
                              b_std=0.2, **attention), L.GlobalAvgPool()]
    return L.serial(*layers, *([L.Dense(1)] if readout else []))


class _Masked(nn.Module):
    """A twin that masks its own inputs (so that empirical_ntk can slice the batch)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        mask = (x == PAD).all(1)
        return L.masked_forward(self.inner, x.masked_fill(mask[:, None], 0.0), mask)


@pytest.mark.parametrize("attention", [dict(), dict(pos_emb_type="sum", val_pos_emb=True)],
                         ids=["softmax", "softmax-embeddings"])
def test_masked_twin_nngp_matches_the_masked_kernel_as_width_grows(attention):
    # 20 twins at 16 and 256 channels (seeds 0-19): measured 0.16 -> 0.024 (softmax) and
    # 0.15 -> 0.030 (with embeddings); the Monte Carlo error of 20 twins of width w goes
    # like 1/sqrt(20 w). The bound 0.07 is over twice the wide error; it must also shrink.
    x = _x()
    x0, mask = L.input_mask(x, PAD)
    errors = []
    for width in (16, 256):
        net = _net(width, 4, **attention)
        acc = 0.0
        for seed in range(20):
            model = net.module(IN_SHAPE, generator=torch.Generator().manual_seed(seed),
                               dtype=F64)
            with torch.no_grad():
                f = L.masked_forward(model, x0, mask)
            acc = acc + f @ f.T / f.shape[1]
        errors.append(_rel(acc / 20, net.kernel(x, mask_constant=PAD).nngp))
    assert errors[1] < 0.07 and errors[1] < errors[0], errors


def test_masked_twin_ntk_matches_the_masked_kernel_as_width_grows():
    # Mean empirical NTK of 6 twins at 32 and 256 channels (concatenated embeddings, a
    # read-out): measured 0.41 -> 0.023. The bound 0.08 is 3.5 times the wide error.
    x = _x()
    errors = []
    for width, heads in ((32, 4), (256, 16)):
        net = _net(width, heads, readout=True, pos_emb_type="concat")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = sum(empirical_ntk(_Masked(net.module(IN_SHAPE, dtype=F64,
                                                       generator=torch.Generator().manual_seed(s))),
                                    x, strategy="jacobian") for s in range(6)) / 6
        errors.append(_rel(est, net.kernel(x, mask_constant=PAD).ntk))
    assert errors[1] < 0.08 and errors[1] < errors[0], errors


@pytest.mark.parametrize("attention", [
    dict(),
    dict(attention_mechanism="relu", W_key_std=2.0),
    dict(linear_scaling=False, attention_mechanism="identity"),
], ids=["softmax", "relu", "identity-sqrt"])
def test_masking_a_token_is_deleting_it(attention):
    # Without positional embeddings attention is permutation-equivariant, so a masked token
    # anywhere must act as if the sequence were shorter: the masked kernel of a pair equals
    # the unmasked kernel of their unpadded tokens (pairs of equal length), and the masked
    # kernel of those tokens padded at the end instead (pairs of any lengths). Same formula
    # on other arrays: only rounding differs (1e-12 relative).
    x = _x()
    net = _net(8, 2, **attention)
    k = net.kernel(x, mask_constant=PAD)
    short = [x[i][:, ~(x[i] == PAD).all(0)] for i in range(len(x))]

    def padded(t, n):
        return torch.cat([t, torch.full((2, n - t.shape[1]), PAD, dtype=F64)], 1)[None]

    equal = 0
    for i in range(len(x)):
        for j in range(len(x)):
            n = max(short[i].shape[1], short[j].shape[1])
            moved = net.kernel(padded(short[i], n), padded(short[j], n), mask_constant=PAD)
            torch.testing.assert_close(k.nngp[i, j], moved.nngp[0, 0], rtol=1e-12, atol=0)
            torch.testing.assert_close(k.ntk[i, j], moved.ntk[0, 0], rtol=1e-12, atol=0)
            if short[i].shape == short[j].shape:
                equal += 1
                ref = net.kernel(short[i][None], short[j][None])
                torch.testing.assert_close(k.nngp[i, j], ref.nngp[0, 0], rtol=1e-12, atol=0)
                torch.testing.assert_close(k.ntk[i, j], ref.ntk[0, 0], rtol=1e-12, atol=0)
    assert equal == 6  # the diagonal and the pair (0, 3) of 5 tokens each, both ways


def test_masked_positions_of_a_spatial_output_are_zero_and_the_rest_as_deleted():
    # Ending at the attention layer: queries at masked positions give zero covariances
    # (neural-tangents remasks), unmasked ones those of the shortened sequence; trailing
    # padding keeps the positions, so summed positional embeddings agree too.
    x = _x()
    net = L.serial(L.Conv(8, (1,), b_std=0.3), L.Erf(),
                   L.SelfAttention(2, b_std=0.4, pos_emb_type="sum",
                                   pos_emb_decay_fn=lambda d: torch.exp(-d)))
    k = net.kernel(x[:1], mask_constant=PAD)
    assert float(k.nngp[0, 0, 5].abs().max()) == 0.0 and float(k.ntk[0, 0, :, 5].abs().max()) == 0
    short = net.kernel(x[:1, :, :5])
    torch.testing.assert_close(k.nngp[0, 0, :5, :5], short.nngp[0, 0], rtol=1e-12, atol=0)
    torch.testing.assert_close(k.ntk[0, 0, :5, :5], short.ntk[0, 0], rtol=1e-12, atol=0)


def test_masked_twin_is_the_twin_of_the_deleted_sequence():
    # The same parameters on a padded sequence (masked) and on its unpadded tokens: the
    # pooled outputs agree up to rounding (1e-12 relative; float64).
    x = _x()
    x0, mask = L.input_mask(x, PAD)
    model = _net(16, 2).module(IN_SHAPE, generator=torch.Generator().manual_seed(3), dtype=F64)
    with torch.no_grad():
        masked = L.masked_forward(model, x0, mask)
        for i in range(len(x)):
            alone = model(x[i][:, ~mask[i]][None])
            torch.testing.assert_close(masked[i], alone[0], rtol=1e-12, atol=1e-14)


def test_blocks_diagonal_rectangular_and_nan_padding_agree():
    # The same masked kernel whatever the block size, from its diagonal, from a rectangle
    # whose second batch has its own masks, and with NaN as the padding value.
    x = _x()
    net = _net(8, 2, pos_emb_type="concat")
    k = net.kernel(x, mask_constant=PAD)
    tol = dict(rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(net.kernel(x, mask_constant=PAD, batch_size=1).ntk, k.ntk, **tol)
    torch.testing.assert_close(net.kernel(x, mask_constant=PAD, diagonal=True).nngp,
                               k.nngp.diagonal(), **tol)
    rect = net.kernel(x[:2], x[1:], mask_constant=PAD)
    torch.testing.assert_close(rect.nngp, k.nngp[:2, 1:], **tol)
    torch.testing.assert_close(rect.ntk, k.ntk[:2, 1:], **tol)
    xn = torch.where(x == PAD, torch.nan, x)
    torch.testing.assert_close(net.kernel(xn, mask_constant=float("nan")).nngp, k.nngp, **tol)
    assert net.kernel(x.numpy(), mask_constant=PAD).nngp.shape == (4, 4)


def test_bad_masks_raise_clear_errors():
    x = _x()
    net = _net(8, 2)
    partial = x.clone()
    partial[2, 0, 4] = PAD
    with pytest.raises(ValueError, match=r"x1\[2\] at position \(4,\).*some channels only"):
        net.kernel(partial, mask_constant=PAD)
    everything = x.clone()
    everything[1] = PAD
    with pytest.raises(ValueError, match=r"x2\[1\] has every position masked"):
        net.kernel(x, everything, mask_constant=PAD)
    with pytest.raises(ValueError, match="no positions to mask"):
        L.ReLU().kernel(torch.ones(2, 3, dtype=F64), mask_constant=0.0)
    with pytest.raises(ValueError, match=r"Conv.*does not support masked inputs"):
        L.serial(L.Conv(4, (3,)), L.SelfAttention(2)).kernel(x, mask_constant=PAD)
    with pytest.raises(ValueError, match="Flatten.*does not support masked inputs"):
        L.serial(L.SelfAttention(2), L.Flatten()).kernel(x, mask_constant=PAD)
    with pytest.raises(TypeError, match="mask_constant must be a real number"):
        net.kernel(x, mask_constant="pad")
    with pytest.raises(ValueError, match="mask_constant must be finite"):
        net.kernel(x, mask_constant=float("inf"))
    # A NaN that is not padding (the mask value is -5) is still bad input.
    stray = x.clone()
    stray[2, 1, 2] = torch.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        net.kernel(stray, mask_constant=PAD)
    x0, mask = L.input_mask(x, PAD)
    model = _net(8, 2).module(IN_SHAPE, dtype=F64)
    with pytest.raises(ValueError, match=r"mask must have shape \(N, \*positions\)"):
        L.masked_forward(model, x0, mask[:, :4])
    with pytest.raises(TypeError, match="mask must be a boolean"):
        L.masked_forward(model, x0, torch.where(mask, torch.nan, 0.0))
    with pytest.raises(TypeError, match="floating-point"):
        L.input_mask(np.ones((2, 2, 3), dtype=np.int64), 1)
