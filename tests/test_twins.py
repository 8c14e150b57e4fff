"""The finite twins read like torch's own modules: ``ConvModule`` as ``nn.Conv1d/2d``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ntkit import layers as L


def _conv_module(filter_shape, *, strides=None, padding="SAME", parametrization="ntk",
                 in_channels=3, seed=0):
    return L.ConvModule(in_channels, 4, filter_shape, strides=strides or (1,) * len(filter_shape),
                        padding=padding, W_std=1.7, b_std=0.3, parametrization=parametrization,
                        generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _as_torch(m: L.ConvModule) -> nn.Module:
    """A torch convolution built from ``m``'s public attributes only, with its scaled
    parameters."""
    cls = {1: nn.Conv1d, 2: nn.Conv2d}[len(m.kernel_size)]
    conv = cls(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
               dilation=m.dilation, groups=m.groups, bias=m.bias is not None,
               padding_mode=m.padding_mode, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(m.weight * m.weight_scale)
        if m.bias is not None:
            conv.bias.copy_(m.bias * m.bias_scale)
    return conv


# torch notes that an even filter with "same" pads a copy of the input: as ours does.
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("padding", ["SAME", "VALID", "CIRCULAR"])
@pytest.mark.parametrize("filter_shape", [(3, 3), (2, 4), (5,), (4,)])
@pytest.mark.parametrize("parametrization", ["ntk", "standard"])
def test_conv_module_attributes_describe_it_as_torch_does(padding, filter_shape,
                                                          parametrization):
    # Stride 1: torch's "same" (even filters included: the extra zero after) and "valid"
    # are JAX's; the torch convolution pads inside, ours before, so the sums agree to
    # rounding (float64, a few ulps of the largest activation).
    m = _conv_module(filter_shape, padding=padding, parametrization=parametrization)
    x = torch.randn(2, 3, *(7,) * len(filter_shape), dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    ours, theirs = m(x), _as_torch(m)(x)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    fan_in = 3 * math.prod(filter_shape)
    if parametrization == "ntk":
        assert m.weight_scale == pytest.approx(1.7 / math.sqrt(fan_in), rel=1e-15)
        assert m.bias_scale == 0.3
    else:
        assert m.weight_scale == m.bias_scale == 1.0


@pytest.mark.parametrize("size, lo, hi", [(8, 0, 1), (7, 1, 1)])
def test_conv_module_pads_as_jax_at_larger_strides(size, lo, hi):
    # Stride 2, filter 3, SAME: ceil(size / 2) outputs from max((out - 1) * 2 + 3 - size, 0)
    # zeros, the extra one after (jax.lax.padtype_to_pads): size 8 -> (0, 1), 7 -> (1, 1).
    m = _conv_module((3,), strides=(2,))
    x = torch.randn(1, 3, size, dtype=torch.float64)
    assert torch.equal(m.pad(x), F.pad(x, [lo, hi]))
    assert m(x).shape == (1, 4, -(-size // 2))
    ref = F.conv1d(F.pad(x, [lo, hi]), m.weight * m.weight_scale, m.bias * m.bias_scale,
                   stride=2)
    assert torch.allclose(m(x), ref, rtol=0, atol=0)  # the same operations in the same order


def test_dense_and_conv_twins_draw_and_scale_alike():
    # A 1x1 convolution at a single position is a dense layer: the same draws from the same
    # seed (weight then bias) and the same scales give the same outputs.
    for parametrization in ("ntk", "standard"):
        conv = _conv_module((1,), parametrization=parametrization, seed=5)
        dense = L.DenseModule(3, 4, W_std=1.7, b_std=0.3, parametrization=parametrization,
                              generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        x = torch.randn(6, 3, dtype=torch.float64)
        assert torch.equal(conv.weight.reshape(4, 3), dense.weight)
        assert torch.equal(conv.bias, dense.bias)
        assert (conv.weight_scale, conv.bias_scale) == (dense.weight_scale, dense.bias_scale)
        assert torch.allclose(conv(x[:, :, None])[:, :, 0], dense(x), rtol=1e-14, atol=1e-14)


def test_pooling_twin_pads_like_the_conv_twin():
    # One padding rule for both twins: a SumPool twin equals a convolution with an all-ones
    # filter over the same padded input (per channel).
    x = torch.randn(2, 1, 7, 6, dtype=torch.float64)
    for padding in ("SAME", "CIRCULAR"):
        pool = L.SumPool((3, 2), strides=2, padding=padding).build((1, 7, 6), None,
                                                                   torch.float64)
        conv = L.ConvModule(1, 1, (3, 2), strides=(2, 2), padding=padding, W_std=1.0,
                            b_std=None, parametrization="standard", dtype=torch.float64)
        with torch.no_grad():
            conv.weight.fill_(1.0)
        assert torch.allclose(pool(x), conv(x), rtol=1e-14, atol=1e-14)
