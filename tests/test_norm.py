"""LayerNorm and Dropout (``layers/_norm.py``) and the Myrtle networks (``_myrtle.py``)."""

from __future__ import annotations

import pytest
import torch

from _contract import Case, KernelContract, image_inputs, inputs
from ntkit import layers as L  # noqa: N812 - the documented alias

pytestmark = pytest.mark.usefixtures("single_thread")


def _conv(w, **kw):
    return L.Conv(w, (3, 3), W_std=1.3, b_std=0.2, **kw)


# LayerNorm's twin subtracts the channel mean and divides by the sample standard deviation:
# both differ from the limit by O(1/width) in the mean over twins (~0.1-1% at width 1024),
# allowed as a bias of 2%. Dropout's twin is exact in the mean (the masks are independent of
# the weights), so no bias allowance.
CASES = [
    Case("dense-layernorm-relu",
         lambda w: L.serial(L.Dense(w, W_std=1.3, b_std=0.4), L.LayerNorm(), L.ReLU()),
         nngp_bias=0.02, ntk_bias=0.02),
    Case("dense-relu-dropout",
         lambda w: L.serial(L.Dense(w, W_std=1.3, b_std=0.4), L.ReLU(), L.Dropout(0.3))),
    Case("conv-layernorm-relu-gap",
         lambda w: L.serial(_conv(w), L.LayerNorm(), L.ReLU(), L.GlobalAvgPool()),
         nngp_bias=0.02, ntk_bias=0.02, inputs=image_inputs),
    Case("conv-layernorm-spatial-relu-flatten",
         lambda w: L.serial(_conv(w), L.LayerNorm(spatial=True), L.ReLU(), L.Flatten()),
         nngp_bias=0.02, ntk_bias=0.02, inputs=image_inputs),
    Case("conv-relu-dropout-avgpool-flatten",
         lambda w: L.serial(_conv(w), L.ReLU(), L.Dropout(0.25), L.AvgPool((2, 2)),
                            L.Flatten()),
         inputs=image_inputs),
]


class TestNormContract(KernelContract):
    @pytest.fixture(params=CASES, ids=repr)
    def case(self, request):
        return request.param


def test_layernorm_closed_form():
    # After Dense: K / sqrt(K11 K22), a correlation matrix (unit diagonal), for the NTK too.
    x, x2 = inputs()
    net = L.serial(L.Dense(5, W_std=1.3, b_std=0.4), L.LayerNorm(eps=0.0))
    dense = L.Dense(5, W_std=1.3, b_std=0.4).kernel(x, x2)
    k = net.kernel(x, x2)
    scale = (dense.cov1[:, None] * dense.cov2[None, :]).sqrt()
    torch.testing.assert_close(k.nngp, dense.nngp / scale, rtol=1e-14, atol=0)
    torch.testing.assert_close(k.ntk, dense.ntk / scale, rtol=1e-14, atol=0)


def test_layernorm_spatial_divides_by_mean_variance():
    # Over channels and positions: one norm per example, the mean of its same-position
    # variances; over channels only: one per position.
    x = image_inputs((2, 4, 4))[0]
    conv = _conv(3).kernel(x)
    v = conv.cov1.reshape(6, 16, 16).diagonal(dim1=1, dim2=2)  # (6, 16)
    spatial = L.serial(_conv(3), L.LayerNorm(spatial=True, eps=0.0)).kernel(x).nngp
    per_pos = L.serial(_conv(3), L.LayerNorm(eps=0.0)).kernel(x).nngp
    k = conv.nngp.reshape(6, 6, 16, 16)
    m = v.mean(1)
    torch.testing.assert_close(spatial.reshape(6, 6, 16, 16),
                               k / (m[:, None] * m[None, :]).sqrt()[:, :, None, None],
                               rtol=1e-14, atol=0)
    want = k / (v[:, None, :, None] * v[None, :, None, :]).sqrt()
    torch.testing.assert_close(per_pos.reshape(6, 6, 16, 16), want, rtol=1e-14, atol=0)


def test_dropout_scales_only_the_diagonal():
    # Off-diagonal entries (different examples, or positions) keep their covariance; the
    # same example at the same position gets 1 / (1 - rate), in NNGP, NTK and cov1.
    x, x2 = image_inputs((2, 4, 4))
    base = L.serial(_conv(3), L.ReLU(), _conv(3))
    drop = L.serial(base, L.Dropout(0.2))
    k0, k = base.kernel(x), drop.kernel(x)
    factor = torch.ones(6, 6, 16, 16, dtype=torch.float64)
    idx = torch.arange(6)
    factor[idx, idx] += torch.eye(16, dtype=torch.float64) * 0.25
    for name in ("nngp", "ntk"):
        want = getattr(k0, name).reshape(6, 6, 16, 16) * factor
        torch.testing.assert_close(getattr(k, name).reshape(6, 6, 16, 16), want, rtol=1e-15,
                                   atol=0)
    cross = drop.kernel(x, x2)
    torch.testing.assert_close(cross.nngp, base.kernel(x, x2).nngp, rtol=0, atol=0)


def test_dropout_twin_is_reproducible_and_scaled():
    m = L.serial(L.Dense(2000), L.Dropout(0.25)).module(
        (3,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m2 = L.serial(L.Dense(2000), L.Dropout(0.25)).module(
        (3,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.ones(1, 3, dtype=torch.float64)
    a, b = m(x), m2(x)
    assert torch.equal(a, b)  # the same seed, the same masks
    # 2000 units, 25% dropped: the kept fraction has standard deviation ~1%; 6% is 6 of them.
    dense = m[0](x)
    kept = (a != 0).double().mean()
    assert abs(float(kept) - 0.75) < 0.06
    torch.testing.assert_close(a[a != 0], dense[a != 0] / 0.75, rtol=1e-15, atol=0)
    m.eval()
    assert torch.equal(m(x), dense)  # eval dropout is the identity: the same Dense computation


@pytest.mark.parametrize("depth, convs", [(5, 4), (7, 6), (10, 9)])
def test_myrtle_structure(depth, convs):
    # Shankar et al.: conv layers (2+1+1, 2+2+2, 3+3+3) plus the final Dense make `depth`
    # layers; two 2x2 pools, then the global pool.
    net = L.myrtle(depth, width=16)
    names = [type(layer).__name__ for layer in net.layers]
    assert names.count("Conv") == convs and names.count("ReLU") == convs
    assert names.count("AvgPool") == 2 and names[-2:] == ["GlobalAvgPool", "Dense"]
    assert net.out_shape((3, 32, 32)) == (10,)


def test_myrtle_kernel_on_digit_sized_images():
    # 8x8 images go through both 2x2 pools (8 -> 4 -> 2) and the global pool; the NTK of six
    # distinct images is positive definite.
    x = image_inputs((1, 8, 8))[0]
    k = L.myrtle(5).kernel(x)
    ev = torch.linalg.eigvalsh(k.ntk)
    assert ev.min() > 0
    assert k.nngp.shape == (6, 6)


@pytest.mark.parametrize("make, exc, message", [
    (lambda: L.myrtle(6), ValueError, r"depth must be one of \(5, 7, 10\)"),
    (lambda: L.Dropout(1.0), ValueError, r"rate must be in \[0, 1\)"),
    (lambda: L.Dropout(-0.1), ValueError, r"rate must be >= 0.0"),
    (lambda: L.LayerNorm(spatial=1), TypeError, r"spatial must be True or False"),
])
def test_bad_arguments(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


def test_dropout_output_is_not_gaussian():
    with pytest.raises(ValueError, match=r"needs Gaussian pre-activations"):
        L.serial(L.Dense(3), L.Dropout(0.1), L.ReLU()).kernel(inputs()[0])
