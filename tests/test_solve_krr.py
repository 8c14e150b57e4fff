"""ntkit.solve.krr: FALKON against the direct Nyström solve, scikit-learn's Nystroem + Ridge and
the exact solve; landmark quality; the Dask and process-pool routes; bad input."""

from __future__ import annotations

import pickle

import pytest
import torch

from ntkit import layers as L
from ntkit.solve import krr, sample_landmarks
from ntkit.solve._landmarks import as_kernel_fn

# The NTK of a 2-hidden-layer ReLU network, the kernel of the benchmark.
NET = L.serial(L.Dense(1, b_std=0.1), L.ReLU(), L.Dense(1, b_std=0.1), L.ReLU(),
               L.Dense(1, b_std=0.1))


def _data(n: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] + 0.1 * torch.randn(n, generator=g,
                                                                          dtype=torch.float64)
    return x, y


def _rel(a, b) -> float:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return float((a - b).norm() / b.norm())


def test_falkon_equals_direct_landmark_solve_and_sklearn():
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import Ridge

    n, ridge = 3000, 1e-4
    x, y = _data(n, 10)
    fal = krr(NET, x, y, landmarks=200, ridge=ridge, tol=1e-12, max_memory=1 << 30,
              progress=False, random_state=0)
    direct = krr(NET, x, y, method="nystrom_direct", landmarks=fal.centers, ridge=ridge)
    # Both solve the same 200 x 200 system; CG to a 1e-12 residual leaves ~1e-11 in the
    # predictions (measured 9e-11): 1e-6 is the acceptance bound.
    assert _rel(fal.predict(x), direct.predict(x)) < 1e-6
    assert fal.residuals[-1] <= 1e-12 and fal.iterations < 100
    # scikit-learn: phi = K(x, C) K_CC^-1/2 and Ridge minimises ||phi w - y||^2 + alpha ||w||^2,
    # i.e. ||K_nM a - y||^2 + alpha a^T K_MM a with w = K_MM^1/2 a: alpha = lambda n. Its
    # SVD-based K_CC^-1/2 (clipped at 1e-12) differs from our Cholesky route by round-off
    # amplified by cond(K_CC); 1e-4 is the acceptance bound.
    c = fal.centers
    kernel = as_kernel_fn(NET)
    ny = Nystroem(kernel="precomputed", n_components=len(c)).fit(kernel(c, c).numpy())
    phi = ny.transform(kernel(x, c).numpy())
    sk = Ridge(alpha=ridge * n, fit_intercept=False).fit(phi, y.numpy())
    assert _rel(fal.predict(x), sk.predict(phi)) < 1e-4


def test_sklearn_nystroem_with_our_kernel_as_its_callable():
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import Ridge

    n, ridge = 60, 1e-3
    x, y = _data(n, 3, seed=1)
    kernel = as_kernel_fn(NET)

    def pair(a, b):  # scikit-learn calls a kernel callable on one pair of rows at a time
        return float(kernel(torch.from_numpy(a)[None], torch.from_numpy(b)[None]))

    centers = x[:8]
    ny = Nystroem(kernel=pair, n_components=8).fit(centers.numpy())
    phi = ny.transform(x.numpy())
    sk = Ridge(alpha=ridge * n, fit_intercept=False).fit(phi, y.numpy())
    ours = krr(NET, x, y, landmarks=centers, ridge=ridge, tol=1e-12, progress=False)
    assert _rel(ours.predict(x), sk.predict(phi)) < 1e-4  # as above


def test_all_points_as_landmarks_is_the_exact_solve():
    # With C = X the Nyström space is the whole RKHS span: the estimators coincide, and the
    # exact one is checked against a dense solve of (K + lambda n I) alpha = y.
    n, ridge = 150, 1e-3
    x, y = _data(n, 4, seed=2)
    exact = krr(NET, x, y, method="exact", ridge=ridge)
    k = NET.kernel(x, get="ntk").ntk
    dense = k @ torch.linalg.solve(k + ridge * n * torch.eye(n, dtype=k.dtype), y)
    assert _rel(exact.predict(x), dense) < 1e-10  # two direct solves of a cond ~1e3 system
    fal = krr(NET, x, y, landmarks=x, ridge=ridge, tol=1e-12, progress=False)
    assert _rel(fal.predict(x), exact.predict(x)) < 1e-6


def test_rmse_gap_to_exact_shrinks_with_landmarks():
    x, y = _data(1500, 5, seed=3)
    xt, yt = _data(500, 5, seed=4)
    ridge = 1e-4
    rmse = lambda m: float(((m.predict(xt) - yt) ** 2).mean().sqrt())  # noqa: E731
    base = rmse(krr(NET, x, y, method="exact", ridge=ridge))
    for sampling in ("uniform", "rls"):
        gaps = [rmse(krr(NET, x, y, method="nystrom_direct", landmarks=m, sampling=sampling,
                         ridge=ridge, random_state=0)) - base for m in (10, 40, 160)]
        # Seeded; the gap falls by a factor ~3-10 per 4x landmarks here, far above the
        # spread between seeds.
        assert gaps[0] > gaps[1] > gaps[2] > -1e-3, (sampling, gaps)


def test_rls_finds_an_isolated_cluster_that_uniform_misses():
    # 995 points in a tight cluster and 5 far away: the isolated points carry large ridge
    # leverage scores, so RLS takes some of them, while 10 uniform draws from 1000 points
    # miss all 5 with probability (995/1000)^10 ~ 0.95.
    g = torch.Generator().manual_seed(5)
    x = torch.cat([0.01 * torch.randn(995, 3, generator=g, dtype=torch.float64),
                   torch.randn(5, 3, generator=g, dtype=torch.float64) * 3 + 10])
    rbf = as_kernel_fn(lambda a, b: torch.exp(-torch.cdist(a, b) ** 2))
    hits = sum(int((sample_landmarks(rbf, x, 10, sampling="rls",
                                     generator=torch.Generator().manual_seed(s)) >= 995).sum())
               for s in range(5))
    assert hits >= 10  # each run should take (nearly) all 5: their scores are ~1, the rest ~0


def test_kept_blocks_give_the_same_answer():
    x, y = _data(400, 3, seed=6)
    a = krr(NET, x, y, landmarks=40, ridge=1e-3, tol=1e-12, progress=False, random_state=0,
            max_memory=0)
    b = krr(NET, x, y, landmarks=40, ridge=1e-3, tol=1e-12, progress=False, random_state=0,
            max_memory=1 << 20, block_size=64)
    assert _rel(b.predict(x), a.predict(x)) < 1e-9  # same system, sums in another order


def test_dask_local_cluster_gives_the_local_answer():
    from distributed import Client, LocalCluster

    x, y = _data(400, 3, seed=7)
    local = krr(NET, x, y, landmarks=40, ridge=1e-3, tol=1e-12, block_size=50,
                progress=False, random_state=0)
    # Threads, not processes: the same scatter/map/gather route without a torch import per
    # worker (~20 s here). What a worker process would receive must survive pickling:
    kernel = pickle.loads(pickle.dumps(as_kernel_fn(NET)))
    assert _rel(kernel(x[:5], x[:7]), NET.kernel(x[:5], x[:7], get="ntk").ntk) < 1e-15
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        remote = krr(NET, x, y, landmarks=40, ridge=1e-3, tol=1e-12, block_size=50,
                     executor=client, progress=False, random_state=0)
    assert torch.equal(remote.landmark_indices, local.landmark_indices)
    assert _rel(remote.predict(x), local.predict(x)) < 1e-9  # only the sum order differs


def test_bad_input():
    x, y = _data(50, 3)
    with pytest.raises(ValueError, match="ridge"):
        krr(NET, x, y, ridge=-1.0)
    with pytest.raises(ValueError, match="landmarks.*N=50"):
        krr(NET, x, y, landmarks=51)
    with pytest.raises(ValueError, match="landmarks.*N=50"):
        krr(NET, x, y, landmarks=torch.randn(60, 3, dtype=torch.float64))
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="X contains"):
        krr(NET, bad, y, landmarks=10)
    bad = y.clone()
    bad[0] = float("nan")
    with pytest.raises(ValueError, match="y contains"):
        krr(NET, x, bad, landmarks=10)
    with pytest.raises(ValueError, match="y must have shape"):
        krr(NET, x, y[:-1], landmarks=10)
    with pytest.raises(ValueError, match="method"):
        krr(NET, x, y, method="falkon")
    with pytest.raises(ValueError, match="sampling"):
        krr(NET, x, y, landmarks=10, sampling="kmeans")
    with pytest.raises(TypeError, match="kernel"):
        krr("ntk", x, y)


def test_unreachable_scheduler_is_a_clear_error_not_a_hang():
    import socket
    import time

    with socket.socket() as s:  # a port that nothing listens on: bound, then closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    x, y = _data(50, 3)
    start = time.perf_counter()
    with pytest.raises(TimeoutError, match=f"executor: no Dask scheduler answered at "
                                           f"'tcp://127.0.0.1:{port}'"):
        krr(NET, x, y, landmarks=10, executor=f"tcp://127.0.0.1:{port}", timeout=1.0,
            progress=False)
    assert time.perf_counter() - start < 20


def test_estimators_nystrom_pcg_with_all_landmarks_is_their_ridge():
    # With every training point a landmark, the Nyström estimator is kernel ridge and the
    # estimators' ridge conventions agree (alpha * mean diag K = lambda n): the two solvers'
    # predictions match up to FALKON's tolerance (1e-8 on the residual, cond ~1e6 here).
    from ntkit.estimators import NNGPRegressor, NTKClassifier

    x, y = _data(120, 3, seed=8)
    x, y = x.numpy(), y.numpy()
    kw = dict(depth=2, b_std=0.1, alpha=1e-3)
    ridge = NNGPRegressor(solver="ridge", **kw).fit(x, y)
    fal = NNGPRegressor(solver="nystrom_pcg", n_landmarks=500, random_state=0, **kw).fit(x, y)
    assert _rel(torch.from_numpy(fal.predict(x)), torch.from_numpy(ridge.predict(x))) < 1e-5
    labels = (y > 0).astype(int) + (y > 1).astype(int)
    a = NTKClassifier(solver="ridge", **kw).fit(x, labels)
    b = NTKClassifier(solver="nystrom_pcg", n_landmarks=120, random_state=0, **kw).fit(x, labels)
    assert _rel(torch.from_numpy(b.decision_function(x)),
                torch.from_numpy(a.decision_function(x))) < 1e-5
    assert b.krr_.centers.shape == (120, 3)
