"""ntkit.solve.krr: FALKON against the direct Nyström solve, scikit-learn's Nystroem + Ridge and
the exact solve; landmark quality; the Dask and process-pool routes; bad input."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

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


def _clustered(seed: int):
    # 1800 points in a cluster of radius ~0.5 and 200 spread ten times wider: RLS puts about
    # half its landmarks on the spread points (a tenth of the data), far from uniform.
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([0.3 * torch.randn(1800, 3, generator=g, dtype=torch.float64),
                   2.0 * torch.randn(200, 3, generator=g, dtype=torch.float64)])
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(2000, generator=g, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rls_landmarks_get_the_weighted_preconditioner(seed):
    # Rudi et al. 2018: with RLS landmarks the preconditioner is built on D K_MM D, D =
    # diag(1/sqrt(n p_j)). It changes the CG path, not the system: the answer is the direct
    # solve's (1e-6, the acceptance bound; measured 2e-11 to 5e-11). The same landmarks given
    # as points get the plain preconditioner; measured on these seeds it needs 59 / 58 / 57
    # iterations where the weighted one needs 41 / 29 / 32 (uniform landmarks: 61 / 44 / 50).
    x, y = _clustered(seed)
    kw = dict(ridge=1e-4, tol=1e-10, progress=False)
    weighted = krr(NET, x, y, landmarks=100, sampling="rls", random_state=seed, **kw)
    plain = krr(NET, x, y, landmarks=weighted.centers, **kw)
    direct = krr(NET, x, y, method="nystrom_direct", landmarks=weighted.centers,
                 ridge=kw["ridge"])
    assert bool((weighted.landmark_indices >= 1800).float().mean() > 0.3)  # non-uniform
    assert _rel(weighted.predict(x), direct.predict(x)) < 1e-6
    assert _rel(plain.predict(x), direct.predict(x)) < 1e-6
    assert weighted.iterations <= plain.iterations, (weighted.iterations, plain.iterations)


def test_sampling_probabilities_are_those_of_the_draw():
    # Uniform: 1/N each. RLS: the final level's p_i, an even mixture of normalised scores and
    # 1/N, so every p_i is in [1/(2N), 1/(2N) + 1/2]; the landmarks are those drawn without
    # return_probabilities (the probabilities cost no extra randomness).
    x, _ = _clustered(0)
    k = as_kernel_fn(NET)
    idx, p = sample_landmarks(k, x, 50, generator=torch.Generator().manual_seed(3),
                              return_probabilities=True)
    torch.testing.assert_close(p, torch.full((50,), 1 / 2000, dtype=torch.float64))
    idx, p = sample_landmarks(k, x, 50, sampling="rls", return_probabilities=True,
                              generator=torch.Generator().manual_seed(3))
    same = sample_landmarks(k, x, 50, sampling="rls", generator=torch.Generator().manual_seed(3))
    assert torch.equal(idx, same)
    assert bool((p >= 1 / 4000 * (1 - 1e-12)).all() and (p <= 0.5 + 1 / 4000).all())
    assert float(p.max() / p.min()) > 3  # far from uniform on these data


@dataclass(frozen=True)
class _RBF:
    """A picklable kernel that misbehaves in a worker process: ``"raise"`` raises there,
    ``"die"`` ends the worker abruptly (as the OOM killer would)."""

    parent: int
    fail: str = ""

    def __call__(self, a, b):
        if os.getpid() != self.parent and self.fail == "raise":
            raise ValueError("kernel refused this block")
        if os.getpid() != self.parent and self.fail == "die":
            os._exit(3)
        return torch.exp(-torch.cdist(a, b) ** 2 / 2)


def test_process_pool_gives_the_local_answer_and_clear_errors():
    # The spawned-process route of map_calls: the same blocks summed in another order, so
    # 1e-9 (CG to 1e-12 on a cond ~1e4 system amplifies round-off to ~1e-12).
    x, y = _data(300, 3, seed=9)
    kw = dict(landmarks=30, ridge=1e-3, tol=1e-12, block_size=40, progress=False,
              random_state=0)
    local = krr(NET, x, y, **kw)
    pooled = krr(NET, x, y, executor="processes", **kw)
    assert pooled.iterations > 0 and torch.equal(pooled.landmark_indices, local.landmark_indices)
    assert _rel(pooled.predict(x), local.predict(x)) < 1e-9
    # A worker's exception reaches the caller as itself; a worker that dies is named.
    with pytest.raises(ValueError, match="kernel refused this block"):
        krr(_RBF(os.getpid(), "raise"), x, y, executor="processes", **kw)
    with pytest.raises(RuntimeError, match="executor='processes': a worker process died"):
        krr(_RBF(os.getpid(), "die"), x, y, executor="processes", **kw)


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
