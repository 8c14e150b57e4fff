"""Benchmark section: kernel ridge regression at scale (``ntkit.solve.krr``).

Kernel: the NTK of a 2-hidden-layer ReLU network, ``Dense(b_std=0.1) - ReLU - Dense(b_std=0.1)
- ReLU - Dense(b_std=0.1)`` (W_std = 1, NTK parametrization), float64. Data: ``x`` standard
normal ``(N, d)``, target ``sin(2 x.u) + (x.v)^2 / 2`` (``u``, ``v`` random unit vectors) plus
noise of standard deviation 0.1; 2 000 test points. Ridge ``lambda = 1e-5`` per example
(FALKON's convention: exact ``(K + lambda N I)``; scikit-learn's ``Ridge(alpha=lambda N)``).

:func:`krr_table` (``N = 20 000``, ``d = 50``), each row timed from scratch (landmarks given,
kernel evaluations included), with the anchors from the same run:

- ``exact``: Cholesky of the ``N x N`` kernel, the reference for RMSE gaps and speed-ups;
- ``sklearn``: ``Nystroem(kernel="precomputed")`` fitted on ``k(C, C)`` and applied to
  ``k(X, C)`` (both from our kernel), then ``Ridge(alpha=lambda N, fit_intercept=False)``.
  A ``Nystroem(kernel=callable)`` evaluates the callable once per pair of rows in Python
  (2e7 calls here), so the kernel enters as precomputed blocks instead;
- ``nystrom_direct``: one streamed pass accumulating ``K_nM^T K_nM``, then Cholesky;
- ``nystrom_pcg``: FALKON streaming ``k(X_block, C)`` every iteration (memory
  ``O(block M + M^2)``), and ``nystrom_pcg kept``: the same with ``max_memory`` large
  enough to keep ``K_nM`` between iterations;

then the test-RMSE gap to the exact solve for uniform and RLS landmarks at 1 000, 2 000 and
4 000 (``nystrom_direct``; FALKON converges to the same estimator).

:func:`krr_large`: ``N = 1 000 000``, ``d = 20``, ``M = 4096`` (``--large``), or any ``--n``:
wall time and peak memory (``VmHWM``) of ``nystrom_pcg`` and ``nystrom_direct`` (run one
``--methods`` per process for each one's own peak).

    python bench/_features_krr.py [--n 20000] [--landmarks 1000,2000,4000] [--large]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from _common import matmul_seconds, status_kb
from ntkit import layers as L
from ntkit.solve import krr
from ntkit.solve._landmarks import as_kernel_fn

NET = L.serial(L.Dense(1, b_std=0.1), L.ReLU(), L.Dense(1, b_std=0.1), L.ReLU(),
               L.Dense(1, b_std=0.1))
RIDGE = 1e-5


def problem(n: int, d: int, n_test: int = 2000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u, v = torch.randn(2, d, generator=g, dtype=torch.float64)
    u, v = u / u.norm(), v / v.norm()
    x = torch.randn(n + n_test, d, generator=g, dtype=torch.float64)
    f = torch.sin(2 * x @ u) + (x @ v) ** 2 / 2
    y = f + 0.1 * torch.randn(n + n_test, generator=g, dtype=torch.float64)
    return x[:n], y[:n], x[n:], f[n:]


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _sklearn(x, y, centers, x_test):
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import Ridge

    kernel = as_kernel_fn(NET)
    ny = Nystroem(kernel="precomputed", n_components=len(centers))
    ny.fit(kernel(centers, centers).numpy())
    ridge = Ridge(alpha=RIDGE * len(x), fit_intercept=False)
    ridge.fit(ny.transform(kernel(x, centers).numpy()), y.numpy())
    return torch.from_numpy(ridge.predict(ny.transform(kernel(x_test, centers).numpy())))


def _rmse(pred, truth) -> float:
    return float(((pred - truth) ** 2).mean().sqrt())


def krr_table(*, n: int = 20_000, d: int = 50, landmarks=(1000, 2000, 4000),
              exact: bool = True) -> list[dict]:
    """Print and return the rows described in the module docstring."""
    mm = matmul_seconds(torch.float64)
    print(f"\n## krr: N={n}, d={d}, NTK of 2-hidden-layer ReLU, ridge {RIDGE:g} per example; "
          f"yardstick 4096^3 float64 matmul {mm:.2f} s, torch threads "
          f"{torch.get_num_threads()}")
    x, y, xt, ft = problem(n, d)
    rows = []
    ref = None
    if exact:
        model, t = _timed(lambda: krr(NET, x, y, method="exact", ridge=RIDGE))
        ref = model.predict(xt)
        rows.append(dict(method="exact", m=n, seconds=t, rmse=_rmse(ref, ft)))
    m = landmarks[0]
    centers = krr(NET, x, y, method="nystrom_direct", landmarks=m, ridge=RIDGE,
                  random_state=0).centers  # the landmarks every route below shares
    direct, t = _timed(lambda: krr(NET, x, y, method="nystrom_direct", landmarks=centers,
                                   ridge=RIDGE))
    p_direct = direct.predict(xt)
    rows.append(dict(method="nystrom_direct", m=m, seconds=t, rmse=_rmse(p_direct, ft)))
    p_sk, t = _timed(lambda: _sklearn(x, y, centers, xt))
    rows.append(dict(method="sklearn Nystroem+Ridge", m=m, seconds=t, rmse=_rmse(p_sk, ft),
                     vs_direct=_rel(p_sk, p_direct)))
    for name, mem in (("nystrom_pcg", 0), ("nystrom_pcg kept", 1 << 33)):
        model, t = _timed(lambda mem=mem: krr(NET, x, y, landmarks=centers, ridge=RIDGE,
                                              tol=1e-10, max_iter=200, max_memory=mem,
                                              progress=False))
        p = model.predict(xt)
        rows.append(dict(method=name, m=m, seconds=t, rmse=_rmse(p, ft), its=model.iterations,
                         vs_direct=_rel(p, p_direct), vs_sklearn=_rel(p, p_sk)))
    print(f"{'method':24} {'M':>6} {'fit s':>8} {'x exact':>8} {'test RMSE':>10} "
          f"{'its':>4} {'vs direct':>10} {'vs sklearn':>10}")
    for r in rows:
        speed = f"{rows[0]['seconds'] / r['seconds']:.1f}" if exact else "-"
        print(f"{r['method']:24} {r['m']:>6} {r['seconds']:>8.2f} {speed:>8} "
              f"{r['rmse']:>10.5f} {r.get('its', ''):>4} {_fmt(r.get('vs_direct'))} "
              f"{_fmt(r.get('vs_sklearn'))}")
    if ref is not None:
        base = _rmse(ref, ft)
        print(f"\ntest-RMSE gap to exact ({base:.5f}), nystrom_direct, landmarks seed 0:")
        print(f"{'M':>6} {'uniform':>10} {'rls':>10}")
        for m in landmarks:
            gaps = [_rmse(krr(NET, x, y, method="nystrom_direct", landmarks=m,
                              sampling=s, ridge=RIDGE, random_state=0).predict(xt), ft) - base
                    for s in ("uniform", "rls")]
            print(f"{m:>6} {gaps[0]:>10.5f} {gaps[1]:>10.5f}")
            rows.append(dict(method="gap", m=m, uniform=gaps[0], rls=gaps[1]))
    return rows


class _TreeRSS:
    """The largest total resident memory (KiB) of this process and its children, sampled
    every 0.2 s in a thread (worker processes report nothing to their parent themselves)."""

    def __init__(self):
        import threading

        self.peak = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        me = os.getpid()
        while True:
            total = 0
            for pid in [me] + _children(me):
                try:
                    total += status_kb("VmRSS", pid)
                except (OSError, ValueError):
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.2)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(p) for p in f.read().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def krr_large(*, n: int = 1_000_000, d: int = 20, m: int = 4096, max_iter: int = 30,
              methods=("nystrom_direct", "nystrom_pcg"), executor=None) -> list[dict]:
    """Wall time and peak memory at large ``n`` (``max_iter`` caps FALKON; the time per
    iteration is printed so that a capped run extrapolates). ``executor="processes"``: the
    blocks run in a pool of single-threaded worker processes; the peak memory is then the
    largest total resident memory of this process and its workers, sampled (``_TreeRSS``)."""
    x, y, xt, ft = problem(n, d)
    print(f"\n## krr large: N={n}, d={d}, M={m}, torch threads {torch.get_num_threads()}, "
          f"inputs resident {status_kb('VmRSS') / 2**20:.2f} GiB")
    rows = []
    sampler = _TreeRSS() if executor == "processes" else None
    for method in methods:
        model, t = _timed(lambda method=method: krr(
            NET, x, y, method=method, landmarks=m, ridge=RIDGE, tol=1e-6, max_iter=max_iter,
            random_state=0, progress=True, executor=executor))
        peak = status_kb("VmHWM") / 2**20
        if executor == "processes":
            peak = max(peak, sampler.peak / 2**20)
        rows.append(dict(method=method, seconds=t, its=model.iterations,
                         rmse=_rmse(model.predict(xt), ft), peak_gib=peak))
        r = rows[-1]
        passes = (r["its"] or 0) + 1 if method == "nystrom_pcg" else 1
        print(f"{method:16} fit {t:8.1f} s  iterations {r['its']!s:>4}  "
              f"({t / passes:.1f} s per pass over K_nM)  test RMSE {r['rmse']:.5f}  "
              f"peak RSS so far {r['peak_gib']:.2f} GiB"
              + (" (this process + workers)" if executor == "processes" else ""))
    return rows


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def _fmt(v) -> str:
    return f"{v:>10.2e}" if v is not None else f"{'':>10}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--d", type=int, default=None)
    p.add_argument("--landmarks", default="1000,2000,4000")
    p.add_argument("--large", action="store_true", help="N = 1e6, d = 20, M = 4096")
    p.add_argument("--max-iter", type=int, default=30)
    p.add_argument("--executor", default=None, help="--large: e.g. 'processes'")
    p.add_argument("--methods", default="nystrom_direct,nystrom_pcg",
                   help="--large: run one per process for each one's own peak memory")
    a = p.parse_args(argv)
    if a.large:
        krr_large(n=a.n or 1_000_000, d=a.d or 20, max_iter=a.max_iter,
                  methods=tuple(a.methods.split(",")), executor=a.executor)
    else:
        krr_table(n=a.n or 20_000, d=a.d or 50,
                  landmarks=tuple(int(v) for v in a.landmarks.split(",")))


if __name__ == "__main__":
    main()
