"""ntkit.parametrize.coord_check and lr_sweep: muP's activations are flat in width where SP's
readout blows up (Yang et al. 2022, TP5 §D.1); the sweep's bookkeeping against a direct
computation; bad inputs."""

import math

import matplotlib
import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy, mse_loss

from ntkit.parametrize import coord_check, lr_sweep, plan

matplotlib.use("Agg")


def mlp3(w, d=16, k=10):
    """3 hidden layers, as in the issue's acceptance."""
    return nn.Sequential(nn.Linear(d, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
                         nn.Linear(w, w), nn.ReLU(), nn.Linear(w, k))


def classification(n=64, d=16, k=10):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


# Widths 64..1024 (the 64..4096 is in bench/parametrize.py: width 4096 alone costs
# ~10 s per seed on one core). lr 3e-3 (Adam): large enough that the learned part of the
# readout dominates its random init after a few steps, small enough that SP's widest runs do
# not saturate within 5 steps. 3 seeds: the readout's init (and its width-64 bias) varies by
# ~30% between seeds, which alone moves a 2-seed slope by ~0.05.
WIDTHS = [64, 128, 256, 512, 1024]
SETTINGS = dict(steps=5, lr=3e-3, optimizer="adam", seeds=3)


@pytest.fixture(scope="module")
def checks():
    data = classification()
    return {p: coord_check(mlp3, WIDTHS, data, parametrization=p,
                           generator=torch.Generator().manual_seed(1), **SETTINGS)
            for p in ("mup", "sp")}


def test_mup_activations_flat_in_width_sp_readout_blows_up(checks):
    mup, sp = checks["mup"], checks["sp"]
    assert mup.modules == sp.modules == ("0", "1", "2", "3", "4", "5", "6")
    for t in range(SETTINGS["steps"] + 1):
        print(f"step {t}: muP", {k: round(v, 3) for k, v in mup.slopes(t).items()})
        print(f"step {t}: SP ", {k: round(v, 3) for k, v in sp.slopes(t).items()})
    for t in range(SETTINGS["steps"] + 1):
        slopes = mup.slopes(t)
        assert all(abs(v) < 0.1 for v in slopes.values()), (t, slopes)
    # SP trained by Adam: every readout entry moves by ~lr, so the readout's output moves by
    # ~lr * width (TP5 §D.1): slope ~1 after the first step, still > 0.3 after five.
    for t in range(1, SETTINGS["steps"] + 1):
        assert sp.slopes(t)["6"] > 0.3, (t, sp.slopes(t))
    # At init both are the same network at the base width; the readout's init shrinks like
    # width^-1/2 under muP (multiplier 1/n, init std of the base width) where SP keeps it
    # O(1), but its width-independent bias dominates at these widths: both slopes are small.
    assert torch.allclose(mup.l1[0, :, 0], sp.l1[0, :, 0])


def test_record_against_direct_forward_pass(checks):
    # Step 0 of width 128, seed 0, recomputed by hand: the same seed draw, plan and init.
    seed = int(torch.randint(2**62, (3,), generator=torch.Generator().manual_seed(1))[0])
    model = mlp3(128)
    plan(model, "mup", base=mlp3(64)).apply_(model, generator=torch.Generator().manual_seed(seed))
    x, y = classification()
    h = x
    want = []
    for layer in model:
        h = layer(h)
        want.append(float(h.detach().abs().mean()))
    got = checks["mup"].l1[1, 0, 0]
    # The same float32 forward pass (recorded in float64): rounding only.
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=0)
    assert checks["mup"].loss[1, 0, 0] == pytest.approx(float(cross_entropy(model(x), y).detach()),
                                                        rel=1e-6)
    frame = checks["mup"].to_frame()
    assert len(frame) == 5 * 3 * 6 * 7
    row = frame[(frame.width == 128) & (frame.seed == 0) & (frame.step == 0)
                & (frame.module == "2")]
    assert float(row.l1.iloc[0]) == pytest.approx(want[2], rel=1e-6)
    fig = checks["mup"].plot(steps=[0, 5])
    assert len(fig.axes) == 2


def test_lr_sweep_bookkeeping_against_direct_training():
    def mlp(w):
        return nn.Sequential(nn.Linear(4, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(),
                             nn.Linear(w, 1))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(48, 4, generator=g)
    y = torch.sin(x[:, :1]) + 0.3 * x[:, 1:2]
    lrs = [2.0**-2, 2.0**-6, 2.0**-4, 2.0**9]   # unsorted on purpose; 2^9 diverges under SGD
    sweep = lr_sweep(mlp, [32, 16], lrs, (x, y), parametrization="mup", steps=6,
                     optimizer="sgd", seeds=2, generator=torch.Generator().manual_seed(4))
    assert sweep.widths == (16, 32) and sweep.lrs == (2.0**-6, 2.0**-4, 2.0**-2, 2.0**9)
    assert sweep.loss.shape == (2, 4, 2)
    assert bool(torch.isinf(sweep.loss[:, 3]).all())          # diverged: recorded as inf
    # Each entry against a training loop written out here (same seeds, plan, optimizer).
    seeds = torch.randint(2**62, (2,), generator=torch.Generator().manual_seed(4)).tolist()
    direct = torch.empty(2, 3, 2, dtype=torch.float64)
    for i, w in enumerate((16, 32)):
        for j, lr in enumerate(sweep.lrs[:3]):
            for s, seed in enumerate(seeds):
                model = mlp(w)
                p = plan(model, "mup", base=mlp(16))
                p.apply_(model, generator=torch.Generator().manual_seed(seed))
                opt = torch.optim.SGD(p.param_groups(lr, optimizer="sgd"))
                for _ in range(6):
                    opt.zero_grad()
                    mse_loss(model(x), y).backward()
                    opt.step()
                with torch.no_grad():
                    direct[i, j, s] = float(mse_loss(model(x), y))
    # Same float32 operations in the same order; 1e-5 allows for a different summation
    # order inside the library's forward pass (two paths, not one).
    torch.testing.assert_close(sweep.loss[:, :3], direct, rtol=1e-5, atol=0)
    best = {w: sweep.lrs[int(direct[i].mean(1).argmin())] for i, w in enumerate((16, 32))}
    assert sweep.optimal_lr == best
    assert set(best.values()) <= set(sweep.lrs[:3])
    frame = sweep.to_frame()
    assert len(frame) == 16 and math.isinf(frame.loss.max())
    assert len(sweep.plot().axes) == 1


def test_bad_inputs():
    data = classification(n=8)
    base = dict(parametrization="mup", steps=1, lr=1e-3)
    for widths in ([0, 64], [-8], [], [64.0, 128], 64, [64, 64]):
        with pytest.raises(ValueError, match="widths"):
            coord_check(mlp3, widths, data, **base)
    with pytest.raises(ValueError, match="unknown parametrization"):
        coord_check(mlp3, [8, 16], data, parametrization="mu-p-typo", steps=1, lr=1e-3)
    with pytest.raises(ValueError, match="steps"):
        coord_check(mlp3, [8, 16], data, parametrization="mup", steps=0, lr=1e-3)
    with pytest.raises(ValueError, match="lr"):
        coord_check(mlp3, [8, 16], data, parametrization="mup", steps=1, lr=-1.0)
    with pytest.raises(ValueError, match="optimizer"):
        coord_check(mlp3, [8, 16], data, optimizer="rmsprop", **base)
    with pytest.raises(ValueError, match="data"):
        coord_check(mlp3, [8, 16], (data[0], data[1][:3]), **base)
    with pytest.raises(ValueError, match="finite"):
        coord_check(mlp3, [8, 16], (data[0] * float("nan"), data[1]), **base)
    with pytest.raises(ValueError, match="batch_size"):
        coord_check(mlp3, [8, 16], data, batch_size=9, **base)
    with pytest.raises(ValueError, match="modules"):
        coord_check(mlp3, [8, 16], data, modules=["7"], **base)
    with pytest.raises(TypeError, match="nn.Module"):
        coord_check(lambda w: None, [8, 16], data, **base)
    cc = coord_check(mlp3, [8], data, **base)
    with pytest.raises(ValueError, match="two widths"):
        cc.slopes()
    with pytest.raises(ValueError, match="step"):
        coord_check(mlp3, [8, 16], data, **base).slopes(2)
    sweep = dict(parametrization="mup", steps=1)
    for lrs in ([], 1e-3, [1e-3, 0.0], [float("inf")]):
        with pytest.raises(ValueError, match="lrs"):
            lr_sweep(mlp3, [8, 16], lrs, data, **sweep)
    with pytest.raises(ValueError, match="widths"):
        lr_sweep(mlp3, [0], [1e-3], data, **sweep)
    with pytest.raises(ValueError, match="unknown parametrization"):
        lr_sweep(mlp3, [8, 16], [1e-3], data, parametrization="nope", steps=1)
