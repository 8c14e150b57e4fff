"""ntkit.apps.active: selection methods against bmdal-reg 3.0.2 and brute force, memory,
bad input, and the active-learning loop."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from ntkit.apps.active import loop, plot_curves, select
from ntkit.solve import JitterWarning


def _pool(n=300, p=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Uneven feature scales so that distances and variances have no near ties.
    return torch.randn(n, p, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2.0, p)


LABELED = list(range(0, 300, 15))  # 20 labeled rows


@pytest.fixture
def bmdal(monkeypatch):
    pytest.importorskip("bmdal_reg", reason="bmdal-reg 3.0.2 is the reference for the "
                        "selection methods (pip install bmdal-reg --no-deps)")
    # bmdal-reg 3.0.2 still uses np.Inf, removed in NumPy 2.
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)
    from bmdal_reg.bmdal.algorithms import select_batch
    from bmdal_reg.bmdal.feature_data import TensorFeatureData

    def run(x, labeled, b, method, transforms=(), **config):
        """bmdal-reg's selection on train = x[labeled], pool = the rest, mapped to row
        indices of x."""
        rest = torch.tensor([i for i in range(x.shape[0]) if i not in set(labeled)])
        train = x[labeled]
        if not labeled:
            # bmdal-reg cannot hold an empty training set: give it one row and P-mode, in
            # which the training set is not used.
            train, config = x[:1], config | {"sel_with_train": False}
        data = {"train": TensorFeatureData(train), "pool": TensorFeatureData(x[rest])}
        idx, _ = select_batch(b, [None], data, None, "linear", list(transforms), method,
                              verbosity=0, **config)
        return rest[idx].tolist()

    return run


# Index equality below compares two computation paths; it is safe because the pools are
# Gaussian with distinct feature scales: the gaps between competing scores are many orders of
# magnitude above float64 round-off (no ties).

def test_maxvar_without_labels_is_bmdal_maxdiag(bmdal):
    x = _pool()
    ours = select(x, 10, method="maxvar")
    assert sorted(ours.tolist()) == sorted(bmdal(x, [], 10, "maxdiag"))


def test_maxvar_with_labels_is_maxdiag_of_the_posterior_kernel(bmdal):
    x, sigma = _pool(), 0.5
    ours = select(x, 10, method="maxvar", labeled=LABELED, sigma2=sigma**2)
    ref = bmdal(x, LABELED, 10, "maxdiag", [("train", [sigma])])
    assert sorted(ours.tolist()) == sorted(ref)


def test_maxdet_is_bmdal_maxdet_tp_mode(bmdal):
    x = _pool()
    ours = select(x, 8, method="maxdet", labeled=[3, 50])  # 2 + 8 < 12 features: full rank
    assert ours.tolist() == bmdal(x, [3, 50], 8, "maxdet", sel_with_train=True)
    ours = select(x, 10, method="maxdet")
    assert ours.tolist() == bmdal(x, [], 10, "maxdet", sel_with_train=False)


def test_coding_rate_is_bmdal_maxdet_with_noise(bmdal):
    # log det(I + K/s2) = log det(K + s2 I) - |S| log s2: the same greedy picks.
    x = _pool()
    ours = select(x, 30, method="coding_rate", labeled=LABELED, sigma2=0.3**2)
    assert ours.tolist() == bmdal(x, LABELED, 30, "maxdet", sel_with_train=True,
                                  maxdet_sigma=0.3)


@pytest.mark.parametrize("labeled", [[], LABELED])
def test_lcmd_is_bmdal_lcmd_tp_mode(bmdal, labeled):
    x = _pool()
    ours = select(x, 25, method="lcmd", labeled=labeled)
    assert ours.tolist() == bmdal(x, labeled, 25, "lcmd", sel_with_train=True)


def test_kmeanspp_draws_as_bmdal_with_the_same_seed(bmdal):
    # Randomized: with labeled points every pick is torch.multinomial over the pool's squared
    # distances, so the same seed (global RNG there, a Generator here) gives the same picks.
    # Without labeled points bmdal-reg draws the first pick from NumPy's global RNG, which a
    # torch.Generator cannot reproduce; that case is checked for its distribution below.
    x = _pool()
    for seed in range(3):
        torch.manual_seed(seed)
        ref = bmdal(x, LABELED, 15, "kmeanspp", sel_with_train=True)
        ours = select(x, 15, method="kmeanspp", labeled=LABELED,
                      generator=torch.Generator().manual_seed(seed))
        assert ours.tolist() == ref


def test_kmeanspp_second_pick_follows_squared_distance():
    # Pool {0, 1, 3} on a line, first pick uniform; second pick j given first i has
    # probability d(i, j)^2 / sum_k d(i, k)^2. Exact law of the ordered pair vs 6000 draws:
    # each cell's binomial standard error is <= sqrt(.25 / 6000) = 0.0065; 0.03 is > 4.5 se.
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    counts: dict[tuple, int] = {}
    for _ in range(6000):
        pair = tuple(select(x, 2, method="kmeanspp", generator=g).tolist())
        counts[pair] = counts.get(pair, 0) + 1
    for i, j in itertools.permutations(range(3), 2):
        d = {k: (x[i, 0] - x[k, 0]).item() ** 2 for k in range(3)}
        p = d[j] / sum(d.values()) / 3
        assert abs(counts.get((i, j), 0) / 6000 - p) < 0.03


def _brute_force_greedy(k, labeled, n, s2):
    chosen = list(labeled)
    for _ in range(n):
        best, best_val = None, -math.inf
        for j in range(k.shape[0]):
            if j in chosen:
                continue
            s = chosen + [j]
            val = torch.logdet(torch.eye(len(s), dtype=k.dtype) + k[s][:, s] / s2).item()
            if val > best_val:
                best, best_val = j, val
        chosen.append(best)
    return chosen[len(labeled):]


@pytest.mark.parametrize("labeled", [[], [0, 5]])
def test_coding_rate_is_brute_force_greedy_log_det(labeled):
    x = _pool(14, 3, seed=1)  # more picks than the rank: the noise keeps it well posed
    k = x @ x.T
    for s2 in (0.05, 2.0):
        ours = select(k, 6, method="coding_rate", labeled=labeled, sigma2=s2, gram=True)
        assert ours.tolist() == _brute_force_greedy(k, labeled, 6, s2)


def test_inputs_features_gram_and_callable_agree():
    x = _pool(80, 10)
    k = x @ x.T
    k0 = k.clone()
    for method in ("maxvar", "coding_rate", "maxdet", "lcmd"):
        a = select(x, 5, method=method, labeled=[1, 2])
        b = select(k, 5, method=method, labeled=[1, 2], gram=True)
        c = select(lambda u, v: u @ v.T, 5, method=method, labeled=[1, 2], pool=x)
        assert a.tolist() == b.tolist() == c.tolist(), method
    assert torch.equal(k, k0)  # the kernel matrix is read, never written


class _Shapes(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


@pytest.mark.parametrize("method", ["coding_rate", "maxdet", "maxvar", "lcmd", "kmeanspp"])
def test_memory_is_pool_times_batch(method):
    # From features (P, p), no tensor bigger than the input or the factor P * (m + b) may
    # be created; a (P, P) kernel would be 9e6 entries.
    pool, p, m, b = 3000, 24, 5, 15
    x = _pool(pool, p)
    with _Shapes() as rec:
        select(x, b, method=method, labeled=list(range(m)), generator=torch.Generator())
    assert 0 < rec.numel <= pool * max(p, m + b)


def test_duplicate_points_jitter_with_a_warning():
    x = _pool(20, 3)
    x = torch.cat([x, x])  # every point twice; rank 3
    with pytest.warns(JitterWarning, match="duplicate"):
        out = select(x, 6, method="maxdet")
    assert len(set(out.tolist())) == 6
    with pytest.warns(JitterWarning, match="labeled points"):  # x[0] == x[20], both labeled
        out = select(x, 2, method="maxdet", labeled=[0, 20])
    assert 0 not in out.tolist() and 20 not in out.tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # noise > 0: no jitter needed
        assert len(set(select(x, 6, method="coding_rate").tolist())) == 6


def test_random_is_uniform_over_candidates():
    g = torch.Generator().manual_seed(0)
    x = _pool(10, 2)
    out = select(x, 10 - 3, method="random", labeled=[0, 4, 9], generator=g)
    assert sorted(out.tolist()) == [1, 2, 3, 5, 6, 7, 8]


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(n=11), ValueError, "more than the 10 unlabeled"),
    (dict(n=9, labeled=[0, 1]), ValueError, "more than the 8 unlabeled"),
    (dict(method="maxent"), ValueError, "method must be one of"),
    (dict(labeled=[3, 10]), ValueError, r"labeled indices must lie in \[0, 10\)"),
    (dict(labeled=[-1]), ValueError, "labeled indices"),
    (dict(labeled=[2, 2]), ValueError, "repeated"),
    (dict(labeled=[0.5]), TypeError, "integer"),
    (dict(sigma2=0.0), ValueError, "sigma2 must be > 0"),
    (dict(sigma2=float("nan")), ValueError, "sigma2 must be finite"),
    (dict(n=0), ValueError, "n must be a positive integer"),
])
def test_bad_arguments(kwargs, exc, match):
    args = dict(n=2, method="coding_rate") | kwargs
    n = args.pop("n")
    with pytest.raises(exc, match=match):
        select(_pool(10, 3), n, **args)


def test_bad_inputs():
    x = _pool(10, 3)
    x[4, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        select(x, 2, method="lcmd")
    with pytest.raises(ValueError, match="square and symmetric"):
        select(torch.eye(4), 2, method="maxdet")
    with pytest.raises(ValueError, match="gram=True must be"):
        select(_pool(10, 3), 2, method="maxdet", gram=True)
    with pytest.raises(ValueError, match="pass its inputs as pool"):
        select(lambda a, b: a @ b.T, 2, method="maxdet")
    with pytest.raises(ValueError, match=r"must return a \(10, 1\)"):
        select(lambda a, b: a @ a.T, 2, method="maxdet", pool=_pool(10, 3))
    with pytest.raises(TypeError, match="floating-point"):
        select(torch.ones(5, 2, dtype=torch.int64), 2, method="maxdet")
    with pytest.raises(ValueError, match="empty"):
        select(torch.ones(0, 2), 1, method="maxdet")


def _least_squares(a, b):
    w = torch.linalg.lstsq(a, b[:, None]).solution
    return lambda z: (z @ w)[:, 0]


def test_loop_reaches_the_noise_floor_of_a_linear_teacher(tmp_path):
    # y = x . w + noise (sd 0.1), least squares on the labels: once the labeled set spans
    # the 5 features, the test RMSE is the noise sd up to the estimation error,
    # sd * sqrt(1 + p / (m - p)) ~ 0.1 * 1.1 at m = 38 labels; 0.15 leaves room for the draw.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 5, generator=g, dtype=torch.float64)
    y = x @ torch.arange(1.0, 6.0, dtype=torch.float64) + 0.1 * torch.randn(
        500, generator=g, dtype=torch.float64)
    curves = {}
    for method in ("random", "coding_rate", "lcmd"):
        c = loop(_least_squares, x[:400], y[:400], rounds=3, batch=12, method=method,
                 test=(x[400:], y[400:]), initial=2, generator=g)
        assert c.n_labeled == (2, 14, 26, 38)
        assert len(set(c.labeled)) == 38 and c.method == method
        assert c.rmse[0] > 1.0 > 0.15 > c.rmse[-1] > 0.05  # 2 labels < 5 features: bad fit
        curves[method] = [c]
    pytest.importorskip("matplotlib")
    plot_curves(curves).savefig(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_loop_bad_input():
    x = _pool(20, 3)
    with pytest.raises(ValueError, match="one label per pool point"):
        loop(_least_squares, x, x[:10, 0], rounds=1, batch=2, method="random", test=(x, x[:, 0]))
    with pytest.raises(ValueError, match="exceed the pool of 20"):
        loop(_least_squares, x, x[:, 0], rounds=5, batch=4, method="random", test=(x, x[:, 0]))
    with pytest.raises(ValueError, match="test labels"):
        loop(_least_squares, x, x[:, 0], rounds=1, batch=2, method="random",
             test=(x, x[:3, 0]))
