"""ntkit.apps.nas against independent computations on a tiny model, and the bench/nas pipeline
(build -> table.csv -> correlate) end to end on five architectures."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ntkit.apps import nas

BENCH = Path(__file__).resolve().parents[1] / "bench" / "nas"


def make(seed: int, act=nn.Tanh) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(3, 5), act(), nn.Linear(5, 2))


def inputs(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.arange(n) % 3


def explicit_ntk(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``sum_a J_a J_a^T`` from one backward pass per example and output unit."""
    net = net.double()
    rows = []
    for xi in x:
        out = net(xi[None])[0]
        per_out = []
        for a in range(out.shape[0]):
            grads = torch.autograd.grad(out[a], list(net.parameters()), retain_graph=True)
            per_out.append(torch.cat([g.reshape(-1) for g in grads]))
        rows.append(torch.stack(per_out))
    J = torch.stack(rows)  # (N, outputs, P)
    return torch.einsum("iap,jap->ij", J, J)


def centred(M: torch.Tensor) -> torch.Tensor:
    n = M.shape[0]
    H = torch.eye(n, dtype=M.dtype) - 1.0 / n
    return H @ M @ H


# Tolerances: the same kernel by two contraction orders in float64 agrees to ~1e-14
# relative; the condition number of this (6, 6) kernel (~1e2..1e4) loses at most that factor.
@pytest.mark.parametrize("metric", ["ntk_cond", "ntk_trace", "ntk_fro", "lga"])
def test_ntk_metrics_match_explicit_kernel(metric):
    x, y = inputs()
    K = explicit_ntk(make(0), x)
    evals = torch.linalg.eigvalsh(K)
    Y = nn.functional.one_hot(y).double()
    Kc, Lc = centred(K), centred(Y @ Y.T)
    expected = {"ntk_cond": -float(evals[-1] / evals[0]),
                "ntk_trace": float(K.trace()),
                "ntk_fro": float(torch.sqrt((K**2).sum())),
                "lga": float((Kc * Lc).sum() / (Kc.norm() * Lc.norm()))}[metric]
    got = nas.score(make, x, y, metric=metric)
    assert got.mean == pytest.approx(expected, rel=1e-9)
    assert got.per_seed == (got.mean,) and got.std == 0.0 and got.seeds == (0,)


def test_naswot_matches_hamming_kernel():
    x, _ = inputs(8)
    net = make(0, nn.ReLU).double()
    codes = (x @ net[0].weight.T + net[0].bias > 0).double()  # (8, 5) ReLU input signs
    hamming = (codes[:, None, :] != codes[None, :, :]).sum(-1).double()
    K_H = codes.shape[1] - hamming
    sign, logdet = torch.linalg.slogdet(K_H)
    expected = float(logdet) if sign > 0 else -math.inf
    got = nas.score(lambda s: make(s, nn.ReLU), x, metric="naswot").mean
    assert got == pytest.approx(expected, rel=1e-12)


def test_params_and_flops_hand_counts():
    x, _ = inputs()
    assert nas.score(make, x, metric="params").mean == 3 * 5 + 5 + 5 * 2 + 2
    # FlopCounterMode: 2 m n k per matrix product, bias additions and tanh not counted
    assert nas.score(make, x, metric="flops").mean == 2 * (3 * 5 + 5 * 2)


def test_seed_and_minibatch_average():
    x, _ = inputs(7)  # batch_size 3: batches [0:3], [3:6]; example 6 is dropped
    got = nas.score(make, x, metric="ntk_trace", seeds=(0, 1), batch_size=3)
    per_seed = [np.mean([float(explicit_ntk(make(s), x[b]).trace())
                         for b in (slice(0, 3), slice(3, 6))]) for s in (0, 1)]
    assert got.per_seed == pytest.approx(per_seed, rel=1e-12)
    assert got.mean == pytest.approx(np.mean(per_seed), rel=1e-12)
    assert got.std == pytest.approx(np.std(per_seed), rel=1e-9)
    assert got.seeds == (0, 1) and got.seconds > 0


def test_module_reinitialised_per_seed():
    x, _ = inputs()
    module = make(7)
    # reset_parameters in module order draws what construction drew after the same seed
    by_module = nas.score(module, x, metric="ntk_fro", seeds=(3,))
    by_factory = nas.score(make, x, metric="ntk_fro", seeds=(3,))
    assert by_module.mean == pytest.approx(by_factory.mean, rel=1e-12)
    as_given = nas.score(module, x, metric="ntk_fro", seeds=None)
    assert as_given.mean == pytest.approx(float(explicit_ntk(make(7), x).norm()), rel=1e-12)
    assert as_given.seeds is None


def test_batchnorm_uses_the_scored_batch_and_training_moves_lga():
    x, y = inputs(12)

    def bn(seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))

    # After calibration BatchNorm's output on the batch has per-unit mean 0, so about half
    # of the ReLU inputs are positive (1/2 +- a few units of 72)
    net = bn(0).double()
    nas._calibrate_batchnorm(net, x)
    frac = float((net[1](net[0](x)) > 0).double().mean())
    assert 0.3 < frac < 0.7
    before = nas.score(bn, x, y, metric="lga").mean
    after = nas.score(bn, x, y, metric="lga", train_steps=30, lr=0.5).mean
    assert after > before  # fitting the labels aligns the kernel with them


def test_bad_inputs():
    x, y = inputs()
    with pytest.raises(ValueError, match="metric must be one of"):
        nas.score(make, x, metric="synflow")
    with pytest.raises(ValueError, match="length of x"):
        nas.score(make, x, y[:4], metric="lga")
    with pytest.raises(ValueError, match="needs labels y"):
        nas.score(make, x, metric="lga")
    with pytest.raises(ValueError, match="model wide-mlp failed on inputs x of shape"):
        nas.score(make, torch.randn(6, 4), metric="ntk_trace", name="wide-mlp")
    with pytest.raises(ValueError, match="batch_size"):
        nas.score(make, x, metric="params", batch_size=7)
    with pytest.raises(ValueError, match="seeds"):
        nas.score(make, x, metric="params", seeds=())
    with pytest.raises(ValueError, match="NaN"):
        nas.score(make, x.clone().fill_(math.nan), metric="params")
    with pytest.raises(ValueError, match="hooked activation"):
        nas.score(lambda s: nn.Linear(3, 2), x, metric="naswot")

    class Bare(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3, 2))

        def forward(self, x):
            return x @ self.w

    with pytest.raises(TypeError, match="reset_parameters"):
        nas.score(Bare(), x, metric="params", seeds=(0,))


@pytest.fixture
def bench_modules():
    sys.path.insert(0, str(BENCH))
    try:
        import build
        import correlate
        import space
        yield build, correlate, space
    finally:
        sys.path.remove(str(BENCH))


def test_space_is_large_and_valid(bench_modules):
    _, _, space = bench_modules
    specs = space.space()
    assert len(specs) >= 150 and len({space.key(s) for s in specs}) == len(specs)
    for spec in specs[:: len(specs) // 12]:
        assert space.build(spec, seed=0)(torch.randn(2, 64)).shape == (2, 10)


def test_build_table_correlate_pipeline(bench_modules, tmp_path, capsys):
    build, correlate, _ = bench_modules
    out = tmp_path / "table.csv"
    assert build.build_table(out, limit=5, epochs=1, log=lambda s: None) == 5
    assert build.build_table(out, limit=5, epochs=1, log=lambda s: None) == 0  # resumes
    rows = correlate.load_table(out)
    assert len(rows) == 5 and all(0 <= float(r["acc_mean"]) <= 100 for r in rows)
    assert all(int(r["params"]) > 0 for r in rows)
    correlate.main(["--table", str(out), "--plots", str(tmp_path / "plots"), "--n-boot", "20"])
    text = capsys.readouterr().out
    assert all(name in text for name in correlate.SCORES)
    assert len(list((tmp_path / "plots").glob("*.png"))) == len(correlate.SCORES)


def test_rank_correlation_and_bootstrap(bench_modules):
    from scipy.stats import kendalltau, spearmanr

    _, correlate, _ = bench_modules
    rng = np.random.default_rng(1)
    n = 300
    a, b = rng.standard_normal(n), rng.standard_normal(n)
    c = correlate.rank_correlations(a, b, n_boot=400)
    assert c["tau"] == pytest.approx(kendalltau(a, b).statistic, abs=1e-15)
    assert c["rho"] == pytest.approx(spearmanr(a, b).statistic, abs=1e-15)
    # Under independence tau is asymptotically normal with variance 2(2n+5) / (9n(n-1))
    # (Kendall 1938); the bootstrap half-width should match 1.96 of its sd to within the
    # Monte Carlo error of 400 resamples' 2.5 % quantiles (~10 %) plus finite-n effects
    half = 1.96 * math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1)))
    assert (c["tau_hi"] - c["tau_lo"]) / 2 == pytest.approx(half, rel=0.25)
    assert c["tau_lo"] < 0 < c["tau_hi"] and c["rho_lo"] < 0 < c["rho_hi"]
    mono = correlate.rank_correlations(a, 2 * a + 1, n_boot=50)
    assert [mono["tau"], mono["tau_lo"], mono["tau_hi"]] == pytest.approx([1.0] * 3, abs=1e-12)
    nan = correlate.rank_correlations(np.where(a > 1, np.nan, a), b, n_boot=10)
    assert nan["n"] == int((a <= 1).sum())
