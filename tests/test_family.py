import pytest
import torch

import ntkit as nk
from ntkit import layers as L
from ntkit.family import fc_kernel_family


def _net(depth, width, act=None):
    act = act or L.ReLU()
    hidden = [l for _ in range(depth) for l in (L.Dense(width, W_std=1.5, b_std=0.1), act)]
    return L.serial(*hidden, L.Dense(1, W_std=1.5, b_std=0.1))


@pytest.fixture
def x():
    return torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("act", [L.ReLU(), L.Erf(), L.GELU()], ids=repr)
def test_every_depth_matches_the_layer_networks(x, act, single_thread):
    fam = fc_kernel_family(x, max_depth=3, activation=act, W_std=1.5, b_std=0.1)
    for depth in range(4):
        k = _net(depth, 8, act).kernel(x)
        # Same arithmetic in a different order (the family multiplies the T_i at the end):
        # agreement to a few ulps of the largest entry.
        assert torch.allclose(fam.ntk(depth, 0), k.ntk, rtol=1e-13, atol=0)
        # The same NNGP recursion by two implementations: vectorised and scalar arcsin / exp
        # (Erf, GELU) may round differently by an ulp per layer, depending on the CPU's
        # instruction set (seen: 2e-16 at depth 3 for Erf); entries are >= 1e-3 of the
        # largest, so 1e-14 relative is ~15 ulps per layer of margin.
        torch.testing.assert_close(fam.nngp(depth), k.nngp, rtol=1e-14, atol=0)


def test_rectangular_family_is_a_block_of_the_square_one(x):
    fam = fc_kernel_family(x, max_depth=2)
    rect = fc_kernel_family(x[:2], x[2:], max_depth=2)
    for fix, theta in rect.ntks(2):
        assert torch.allclose(theta, fam.ntk(2, fix)[:2, 2:], rtol=1e-13, atol=0)


def test_frozen_layers_match_wide_twins_with_frozen_parameters(x, single_thread):
    # The NTK with the bottom `fix` Dense layers frozen is the empirical NTK of a wide twin
    # whose bottom `fix` DenseModules have requires_grad=False. Its relative fluctuation is
    # ~2.5/sqrt(width) per initialisation (tests/test_empirical.py); 4 seeds at width 2048
    # give ~0.03, so 0.08 leaves room, while the neighbouring fix differs by > 0.2 here.
    depth, width = 2, 2048
    fam = fc_kernel_family(x, max_depth=depth, W_std=1.5, b_std=0.1)
    for fix in range(depth + 1):
        emp = torch.zeros(5, 5, dtype=torch.float64)
        for seed in range(4):
            model = _net(depth, width).module((3,), dtype=torch.float64,
                                               generator=torch.Generator().manual_seed(seed))
            dense = [m for m in model.modules() if isinstance(m, L.DenseModule)]
            for m in dense[:fix]:
                m.requires_grad_(False)
            emp += nk.empirical_ntk(model, x) / 4
        want = fam.ntk(depth, fix)
        err = torch.linalg.norm(emp - want) / torch.linalg.norm(want)
        assert err < 0.08, (fix, err)
        for other in {max(fix - 1, 0), min(fix + 1, depth)} - {fix}:
            off = torch.linalg.norm(emp - fam.ntk(depth, other)) / torch.linalg.norm(want)
            assert off > 0.2, (fix, other, off)


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_depth=-1), "max_depth"),
    (dict(max_depth=1, activation=torch.relu), "activation"),
])
def test_bad_arguments(x, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fc_kernel_family(x, **kwargs)


def test_bad_depth_and_fix(x):
    fam = fc_kernel_family(x, max_depth=2)
    with pytest.raises(ValueError, match="depth"):
        fam.ntk(3)
    with pytest.raises(ValueError, match="fix"):
        fam.ntk(1, fix=2)
