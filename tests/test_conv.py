"""Convolution, pooling and Flatten (``layers/_conv.py``, ``_pool.py``, ``_shape.py``).

Closed forms on tiny inputs written out by hand, the spatial kernel against Monte Carlo from
the finite twins position by position, identities between layouts and layers, and the whole
kernel contract (``_contract.py``) on image networks of every padding, stride and pooling mode.
"""

from __future__ import annotations

import pytest
import torch

from _contract import Case, KernelContract, image_inputs
from _reference import mean_and_se
from ntkit import layers as L  # noqa: N812 - the documented alias

pytestmark = pytest.mark.usefixtures("single_thread")


def _seq_inputs():
    return image_inputs((2, 7))


def _small_inputs():
    return image_inputs((2, 4, 4))


def _big_inputs():
    return image_inputs((2, 6, 6))


def _std_head():
    return L.Dense(1, W_std=0.8, b_std=0.2, parametrization="standard")


def _conv(w, f=(3, 3), **kw):
    kw.setdefault("W_std", 1.3)
    kw.setdefault("b_std", 0.2)
    return L.Conv(w, f, **kw)


# Image networks end in Flatten or a global pool, so that the Monte Carlo of the contract
# (outputs F of shape (N, m)) sees every position: Flatten the same-position covariances,
# GlobalAvgPool all pairs of positions. Networks with a hidden-to-hidden convolution cost
# 9 width^2 per position: the residual case (conv-relu-conv) uses widths 8 and 128 (the
# same factor 16 between them, so the same expected error ratio of 4), four times the seeds,
# and 4x4 images.
CASES = [
    Case("conv-same-relu-flatten",
         lambda w: L.serial(_conv(w), L.ReLU(), L.Flatten()), inputs=image_inputs),
    Case("conv-valid-stride2-relu-gap",
         lambda w: L.serial(_conv(w, padding="VALID", strides=2), L.ReLU(), L.GlobalAvgPool()),
         inputs=_big_inputs),
    Case("conv-circular-2x3-relu-gsp",
         lambda w: L.serial(_conv(w, (2, 3), padding="CIRCULAR", b_std=None), L.ReLU(),
                            L.GlobalSumPool()),
         inputs=image_inputs),
    Case("conv-relu-avgpool-same-stride2-flatten",
         lambda w: L.serial(_conv(w), L.ReLU(), L.AvgPool((2, 2), strides=2, padding="SAME"),
                            L.Flatten()),
         inputs=image_inputs),
    Case("conv-relu-sumpool-circular-gap",
         lambda w: L.serial(_conv(w, strides=(1, 2)), L.ReLU(),
                            L.SumPool((3, 2), padding="CIRCULAR"), L.GlobalAvgPool()),
         inputs=image_inputs),
    Case("conv-standard-relu-gap",
         lambda w: L.serial(_conv(w, parametrization="standard"), L.ReLU(), L.GlobalAvgPool()),
         head=_std_head, inputs=image_inputs),
    Case("conv1d-same-relu-avgpool-flatten",
         lambda w: L.serial(_conv(w, (3,)), L.ReLU(), L.AvgPool((2,)), L.Flatten()),
         inputs=_seq_inputs),
    Case("conv-residual-gap",
         lambda w: L.serial(_conv(w), L.FanOut(2),
                            L.parallel(L.serial(L.ReLU(), _conv(w, W_std=1.1)), L.Identity()),
                            L.FanInSum(), L.ReLU(), L.AvgPool((2, 2)), L.Flatten()),
         widths=(8, 128), seed_factor=4, inputs=_small_inputs),
]


class TestConvContract(KernelContract):
    @pytest.fixture(params=CASES, ids=repr)
    def case(self, request):
        return request.param


# --------------------------------------------------------------------------------------------
# Closed forms against an independent reference: patches by torch's unfold.


def _patches(x, f, strides, padding):
    """``(N, C |F|, P_out)`` input patches of a 2-D convolution, padded like JAX."""
    import math

    import numpy as np
    import torch.nn.functional as F

    pad = []
    for size, k, s in zip(x.shape[2:], f, strides, strict=True):
        if padding == "VALID":
            pad.append((0, 0))
            continue
        out = math.ceil(size / s)
        total = max((out - 1) * s + k - size, 0)
        pad.append((total // 2, total - total // 2))
    mode = "wrap" if padding == "CIRCULAR" else "constant"
    xp = torch.from_numpy(np.pad(x.numpy(), [(0, 0), (0, 0)] + pad, mode=mode))
    return F.unfold(xp, f, stride=strides)


@pytest.mark.parametrize("padding, f, strides", [
    ("SAME", (3, 3), (1, 1)), ("SAME", (2, 3), (2, 1)), ("VALID", (3, 2), (1, 2)),
    ("CIRCULAR", (3, 3), (2, 2)), ("CIRCULAR", (4, 2), (1, 1)),
])
def test_conv_full_kernel_is_patch_gram(padding, f, strides):
    # One Conv: K(x, p; x', p') = W^2 / (C |F|) patch(x, p) . patch(x', p') + b^2, and the
    # first layer's Theta = K. Reference from torch's unfold on numpy-padded inputs shares no
    # code with the window sums; rounding only (sums of ~20 products).
    x, x2 = image_inputs((3, 5, 6))
    k = L.Conv(4, f, strides=strides, padding=padding, W_std=1.3, b_std=0.4).kernel(x, x2)
    a, b = _patches(x, f, strides, padding), _patches(x2, f, strides, padding)
    fan = a.shape[1]
    want = 1.69 * torch.einsum("icp,jcq->ijpq", a, b) / fan + 0.16
    out = k.nngp.shape[2:4]
    torch.testing.assert_close(k.nngp.reshape(want.shape), want, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(k.ntk.reshape(want.shape), want, rtol=1e-13, atol=1e-14)
    assert k.shape1 == (6, 4) + tuple(out)


def test_spatial_output_monte_carlo():
    # A network ending in a convolution returns every pair of output positions,
    # (N1, N2, H, W, H, W); compared entry by entry with the channel covariance of 256 finite
    # twins of width 256 (each twin's mean over its channels is itself an average). The ReLU
    # acts on exactly Gaussian units (one random layer on fixed inputs), so the twins' mean is
    # unbiased at any width: 6 standard errors, which are < 5% of the kernel.
    x = image_inputs((2, 4, 4))[0]
    net = L.serial(_conv(256, strides=(1, 2)), L.ReLU(), _conv(256, (2, 2), padding="CIRCULAR"))
    exact = net.kernel(x, get="nngp").nngp
    samples = []
    for seed in range(256):
        model = net.module((2, 4, 4), generator=torch.Generator().manual_seed(seed),
                           dtype=torch.float64)
        with torch.no_grad():
            f = model(x)
        samples.append(torch.einsum("achw,bcxy->abhwxy", f, f) / f.shape[1])
    mean, se = mean_and_se(torch.stack(samples))
    assert exact.shape == mean.shape == (6, 6, 4, 2, 4, 2)
    assert float(((mean - exact).abs() / (6 * se)).max()) <= 1.0
    assert float((6 * se).max()) < 0.05 * float(exact.abs().max())


# --------------------------------------------------------------------------------------------
# Identities between layouts, dimensions and layers.


def _net(tail, f=(3, 3)):
    return L.serial(_conv(5, f), L.ReLU(), _conv(5, f, strides=2, padding="CIRCULAR"),
                    L.ReLU(), *tail, L.Flatten(), L.Dense(1, W_std=0.8, b_std=0.2))


def test_diagonal_and_full_layout_agree():
    # A network ending in Flatten runs in the diagonal layout; a 1x1 average pool (the
    # identity) before Flatten forces the full one throughout. Same numbers, up to rounding.
    x, x2 = image_inputs((2, 6, 6))
    diag, full = _net(()), _net((L.AvgPool((1, 1)),))
    assert "SpatialDiagonal" not in repr(diag.plan(True)[0])
    for a, b in ((x, None), (x, x2)):
        kd, kf = diag.kernel(a, b), full.kernel(a, b)
        torch.testing.assert_close(kd.nngp, kf.nngp, rtol=1e-14, atol=0)
        torch.testing.assert_close(kd.ntk, kf.ntk, rtol=1e-14, atol=0)


def test_layout_drops_to_diagonal_after_last_pool():
    # Only the layers after the last pooling run in the diagonal layout.
    net = L.serial(_conv(3), L.ReLU(), L.AvgPool((2, 2)), _conv(3), L.ReLU(), L.Flatten())
    planned = repr(net.plan(True)[0])
    assert planned.index("AvgPool") < planned.index("SpatialDiagonal") < planned.index("Flatten")
    assert "SpatialDiagonal" not in repr(L.serial(_conv(3), L.GlobalAvgPool()).plan(True)[0])


def test_conv1d_equals_conv2d_on_one_row():
    # Sequences (N, C, L) are images (N, C, 1, L): same kernels with filters (k,) and (1, k),
    # for every padding, with pooling and strides.
    x, x2 = image_inputs((2, 7))

    def net(f, w, s):
        return L.serial(_conv(4, f, padding="CIRCULAR"), L.ReLU(), _conv(4, f, strides=s),
                        L.ReLU(), L.AvgPool(w, padding="SAME"), _conv(4, f, padding="VALID"),
                        L.ReLU(), L.GlobalAvgPool(), L.Dense(1))

    one, two = net((3,), (2,), (2,)), net((1, 3), (1, 2), (1, 2))
    for a, b in ((x, None), (x, x2)):
        k1 = one.kernel(a, b)
        k2 = two.kernel(a[:, :, None], None if b is None else b[:, :, None])
        torch.testing.assert_close(k1.nngp, k2.nngp, rtol=1e-14, atol=0)
        torch.testing.assert_close(k1.ntk, k2.ntk, rtol=1e-14, atol=0)


def test_global_pools_and_flatten_closed_forms():
    # GlobalAvgPool: mean over all pairs of positions of the Conv kernel; GlobalSumPool: P^2
    # times it; Flatten: mean over the same-position entries.
    x = image_inputs((2, 4, 5))[0]
    conv = _conv(3)
    k = conv.kernel(x).nngp.reshape(6, 6, 20, 20)
    gap = L.serial(conv, L.GlobalAvgPool()).kernel(x).nngp
    gsp = L.serial(conv, L.GlobalSumPool()).kernel(x).nngp
    flat = L.serial(conv, L.Flatten()).kernel(x).nngp
    torch.testing.assert_close(gap, k.mean((2, 3)), rtol=1e-14, atol=0)
    torch.testing.assert_close(gsp, 400 * k.mean((2, 3)), rtol=1e-14, atol=0)
    torch.testing.assert_close(flat, k.diagonal(dim1=2, dim2=3).mean(-1), rtol=1e-14, atol=0)


def test_avgpool_closed_form():
    # AvgPool(2x2, stride 1, VALID): K'(p, p') = 1/16 sum over both windows.
    x = image_inputs((1, 4, 4))[0]
    conv = _conv(3)
    k = conv.kernel(x).nngp
    pooled = L.serial(conv, L.AvgPool((2, 2))).kernel(x).nngp
    want = torch.zeros(6, 6, 3, 3, 3, 3, dtype=torch.float64)
    for a in range(2):
        for b in range(2):
            for c in range(2):
                for d in range(2):
                    want += k[:, :, a:a + 3, b:b + 3, c:c + 3, d:d + 3] / 16
    torch.testing.assert_close(pooled, want, rtol=1e-14, atol=1e-15)


# --------------------------------------------------------------------------------------------
# Blocks and the memory budget.


def _cnn():
    return L.serial(_conv(8), L.ReLU(), L.AvgPool((2, 2)), _conv(8), L.ReLU(),
                    L.GlobalAvgPool(), L.Dense(1))


def test_blocked_equals_unblocked_exactly():
    # Every pair's entries are computed by the same elementwise operations whatever the block
    # (the input Gram over 3 channels included), and diagonal blocks are mirrored from their
    # upper triangle: bit-for-bit equal.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(11, 3, 6, 6, generator=g, dtype=torch.float64)
    x2 = torch.randn(5, 3, 6, 6, generator=g, dtype=torch.float64)
    net = _cnn()
    for b in (None, x2):
        whole = net.kernel(x, b, batch_size=64)
        for bs in (1, 4, 7):
            part = net.kernel(x, b, batch_size=bs)
            assert torch.equal(part.nngp, whole.nngp) and torch.equal(part.ntk, whole.ntk)


def test_memory_budget_splits_a_run_that_would_not_fit():
    # Unblocked, this run (8x8 images: 4096 covariances per pair before the pool) is
    # estimated at ~250 MB; a budget that fits blocks of 5 inputs (~50 MB) gets blocks of 5,
    # with the same result bit for bit.
    from ntkit.layers._compute import _block_size, peak_estimate

    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 1, 8, 8, generator=g, dtype=torch.float64)
    net = _cnn()
    planned, full = net.plan(True)
    peak = peak_estimate(planned, x, None, need_ntk=True, diagonal=False, full=full)[0]
    budget = int(peak(5)) + 1
    assert peak(24) > 4 * budget
    with pytest.raises(ValueError, match=r"batch_size=24 needs about .* over max_memory"):
        net.kernel(x, batch_size=24, max_memory=budget)
    bs = _block_size(planned, x, None, need_ntk=True, diagonal=False, full=full,
                     batch_size=None, max_memory=budget)
    assert bs == 5
    budgeted = net.kernel(x, max_memory=budget)
    whole = net.kernel(x, batch_size=24)
    assert torch.equal(budgeted.nngp, whole.nngp) and torch.equal(budgeted.ntk, whole.ntk)


def test_memory_budget_too_small_says_so_before_starting():
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"max_memory='10kB' \(.*\) cannot hold the "
                                         r"computation: .* one pair of inputs about"):
        _cnn().kernel(x, max_memory="10kB")


_EXPECTED = r"max_memory must be a positive number of bytes \(int\) or a string such as '512MiB'"


@pytest.mark.parametrize("value, exc, message", [
    ("4 parsecs", ValueError, _EXPECTED + r".*got '4 parsecs'"),
    ("-1GB", ValueError, _EXPECTED + r".*got '-1GB'"),
    (0, ValueError, _EXPECTED + r".*got 0"),
    (True, TypeError, _EXPECTED + r".*got True"),
    ([1], TypeError, _EXPECTED + r".*got \[1\]"),
])
def test_bad_max_memory(value, exc, message):
    with pytest.raises(exc, match=message):
        _cnn().kernel(torch.randn(2, 1, 4, 4, dtype=torch.float64), max_memory=value)


# --------------------------------------------------------------------------------------------
# The finite twins.


@pytest.mark.parametrize("padding, mode", [("SAME", "zeros"), ("CIRCULAR", "circular")])
def test_conv_module_matches_torch_padding_for_odd_filters(padding, mode):
    # For odd filters at stride 1, JAX's SAME split equals torch's symmetric padding.
    layer = L.Conv(4, (3, 5), padding=padding, W_std=1.3, b_std=0.4)
    m = layer.module((2, 6, 7), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = torch.nn.Conv2d(2, 4, (3, 5), padding=(1, 2), padding_mode=mode).double()
    with torch.no_grad():
        ref.weight.copy_(m.weight * m.weight_scale)
        ref.bias.copy_(m.bias * m.bias_scale)
    x = image_inputs((2, 6, 7))[0]
    torch.testing.assert_close(m(x), ref(x), rtol=1e-13, atol=1e-14)


# --------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("net, shape, message", [
    (L.Conv(3, (5, 5), padding="VALID"), (2, 4, 6),
     r"filter of size 5 is larger than the unpadded input of size 4 .*padding='VALID'"),
    (L.serial(L.Conv(3, (3, 3)), L.AvgPool((5, 2))), (2, 4, 4),
     r"pooling window \(5, 2\) is larger than the image \(4, 4\)"),
    (L.serial(L.Conv(3, (3, 3)), L.GlobalAvgPool(), L.AvgPool((2, 2))), (2, 4, 4),
     r"acts on channels-first inputs \(channels, \*spatial\); got per-example shape \(3,\)"),
    (L.Conv(3, (3, 3)), (2, 7),
     r"has a 2-D filter and acts on per-example inputs \(channels, height, width\), channels "
     r"first \(NCHW\); got per-example shape \(2, 7\): add a channel axis"),
    (L.Conv(3, (3,)), (2, 4, 4),
     r"has a 1-D filter and acts on per-example inputs \(channels, length\)"),
    (L.serial(L.Conv(3, (3, 3)), L.Dense(2)), (2, 4, 4),
     r"Dense acts on inputs of shape \(N, features\); got per-example shape \(3, 4, 4\): "
     r"flatten them first"),
    (L.serial(L.Conv(3, (3, 3)), L.AvgPool((2,))), (2, 4, 4),
     r"has a 1-D window; got per-example shape \(3, 4, 4\)"),
], ids=["filter-too-large", "window-too-large", "pool-after-flat", "conv2d-on-sequence",
        "conv1d-on-image", "dense-on-image", "pool-dims"])
def test_shape_errors(net, shape, message):
    x = torch.ones(2, *shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        net.kernel(x)
    with pytest.raises(ValueError, match=message):
        net.module(shape)


def test_conv_on_fully_connected_inputs_says_so():
    with pytest.raises(ValueError, match=r"acts on per-example inputs \(channels, height, "
                                         r"width\).*got per-example shape \(4,\)"):
        L.serial(L.Conv(3, (3, 3)), L.Flatten()).kernel(torch.ones(2, 4, dtype=torch.float64))


@pytest.mark.parametrize("make, exc, message", [
    (lambda: L.Conv(3, 3), ValueError, r"filter_shape must be a tuple of 1 \(sequences\) or 2"),
    (lambda: L.Conv(3, (3, 0)), ValueError, r"filter_shape must be a positive integer; got 0"),
    (lambda: L.Conv(3, (3, 3), strides=(1, 2, 3)), ValueError,
     r"strides must have 2 entries \(one per spatial axis\)"),
    (lambda: L.Conv(3, (3, 3), padding="same"), ValueError,
     r"padding must be one of \('SAME', 'VALID', 'CIRCULAR'\); got 'same'"),
    (lambda: L.Conv(0, (3, 3)), ValueError, r"out_channels must be a positive integer"),
    (lambda: L.Conv(3, (3, 3), parametrization="mup"), ValueError, r"parametrization must be"),
    (lambda: L.AvgPool(2), ValueError, r"window_shape must be a tuple of 1 or 2 positive ints"),
    (lambda: L.AvgPool((2, 2), padding="FULL"), ValueError, r"padding must be one of"),
])
def test_bad_layer_arguments(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


def test_pool_needs_the_full_layout():
    # Called directly on a same-position kernel, a pooling layer refuses instead of guessing.
    from ntkit import Kernel

    k = Kernel.from_inputs(torch.ones(2, 1, 4, 4, dtype=torch.float64), diagonal_spatial=True)
    with pytest.raises(ValueError, match=r"needs the full \(N1, N2, \*S, \*S\) kernel"):
        L.AvgPool((2, 2)).kernel_fn(k)
