"""Section of ``bench/features.py``: random features of arc-cosine, NNGP and NTK kernels.

On ``N = 500`` standard normal inputs of dimension 16 (float64), for each family and each
feature count ``m`` (256 ... 16384, doubling): the relative Frobenius error
``||Phi Phi^T - K||_F / ||K||_F`` against the exact kernel (root mean square over ``draws``
independent maps), the fitted log-log slope of that error against ``m``, and the time of
``transform`` (the map already fitted) next to the time of the exact ``K(X, X)``, the anchor
measured in the same run (``arc_cosine_kernel`` or ``ntkit.layers``). The exact kernel is
``O(N^2 d)``; a map is ``O(N m d)`` for one layer and ``O(N m^2)`` per further layer, and
holds ``O(m^2)`` random numbers per further layer, so composed maps stop at ``m = 8192``
(``16384^2`` float64 numbers would be 2 GiB).

The NTK sketch runs three ways: as built now (one shared tree of TensorSRHTs for all degrees,
each degree an equal share of ``m``), with the paper's final SRHT (``sketch_dim = m / 4``),
and, as the anchor of both, the previous construction (one tree per degree,
``bench/_sketch_previous.py``), all in the same run; a table gives the time ratios. With
biases (depth 1: one polynomial; depth 2, 3: layer by layer) it is compared with NTK random
features of the same network (``NTKFeatures``) at the same ``m`` in a last table.

For the NTK sketch the error does not fall below the error of its polynomial (``poly``,
relative to ``F(1)``, printed with it): Zandieh et al. 2021 report downstream accuracy
(CIFAR-10 CNTK, Table 1; UCI regression RMSE, Table 2, with ``m = 8192`` features in the
commands of their repository's README), not a kernel error we could compare with; the table
gives ours at ``m = 8192``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from _common import median_time
from _sketch_previous import PreviousNTKSketch
from ntkit import layers as L
from ntkit.features import (
    ArcCosineFeatures,
    NNGPFeatures,
    NTKFeatures,
    NTKSketch,
    arc_cosine_kernel,
)

__all__ = ["random_features"]

W_STD, B_STD = 1.4, 0.1


def _net(depth: int, b_std: float):
    return L.serial(*[L.Dense(1, W_std=W_STD, b_std=b_std), L.ReLU()] * depth,
                    L.Dense(1, W_std=W_STD, b_std=b_std))


def _families() -> list[tuple]:
    """``(name, make(m, seed), exact(x), largest m)``."""
    out = []
    for order in (0, 1, 2):
        out.append((f"arccos order {order}",
                    lambda m, s, o=order: ArcCosineFeatures(m, order=o, random_state=s),
                    lambda x, o=order: arc_cosine_kernel(x, order=o), 16384))
    out.append(("NNGP depth 1", lambda m, s: NNGPFeatures(m, depth=1, W_std=W_STD, b_std=B_STD,
                                                          random_state=s),
                lambda x: _net(1, B_STD).kernel(x, get="nngp").nngp, 16384))
    out.append(("NNGP depth 2", lambda m, s: NNGPFeatures(m, depth=2, W_std=W_STD, b_std=B_STD,
                                                          random_state=s),
                lambda x: _net(2, B_STD).kernel(x, get="nngp").nngp, 8192))
    for depth in (1, 2):
        out.append((f"NTK RF depth {depth}",
                    lambda m, s, d=depth: NTKFeatures(m, depth=d, W_std=W_STD, b_std=B_STD,
                                                      random_state=s),
                    lambda x, d=depth: _net(d, B_STD).kernel(x, get="ntk").ntk,
                    16384 if depth == 1 else 8192))
    for depth in (1, 2):
        exact = lambda x, d=depth: _net(d, 0.0).kernel(x, get="ntk").ntk  # noqa: E731
        out.append((f"sketch prev. d{depth}",
                    lambda m, s, d=depth: PreviousNTKSketch(m, depth=d, W_std=W_STD, degree=8,
                                                            random_state=s), exact, 16384))
        out.append((f"NTK sketch depth {depth}",
                    lambda m, s, d=depth: NTKSketch(m, depth=d, W_std=W_STD, degree=8,
                                                    random_state=s), exact, 16384))
        out.append((f"sketch+SRHT d{depth}",
                    lambda m, s, d=depth: NTKSketch(m, depth=d, W_std=W_STD, degree=8,
                                                    sketch_dim=m // 4, random_state=s),
                    exact, 16384))
    for depth in (1, 2, 3):  # depth >= 2: the layer-by-layer sketch
        out.append((f"sketch bias d{depth}",
                    lambda m, s, d=depth: NTKSketch(m, depth=d, W_std=W_STD, b_std=B_STD,
                                                    degree=8, random_state=s),
                    lambda x, d=depth: _net(d, B_STD).kernel(x, get="ntk").ntk, 16384))
    out.append(("NTK RF depth 3", lambda m, s: NTKFeatures(m, depth=3, W_std=W_STD, b_std=B_STD,
                                                           random_state=s),
                lambda x: _net(3, B_STD).kernel(x, get="ntk").ntk, 8192))
    return out


def _sketch_ratios(rows: list[dict]) -> None:
    """The NTK sketch's rows against the previous construction's, and with biases against NTK
    random features, same depth and ``m``."""
    print("\n## NTK sketch against the previous construction (one tree per degree), same run")
    print(f"{'variant':<20} {'m':>6} {'error / prev.':>14} {'time / prev.':>13}")
    prev = {(r["family"][-1], r["m"]): r for r in rows
            if r["family"].startswith("sketch prev.") and "m" in r}
    for r in rows:
        if "m" in r and (r["family"].startswith("NTK sketch") or "SRHT" in r["family"]):
            p = prev[r["family"][-1], r["m"]]
            print(f"{r['family']:<20} {r['m']:>6} {r['error'] / p['error']:>14.3f} "
                  f"{r['transform_s'] / p['transform_s']:>13.3f}")
    print("\n## NTK sketch with biases (layer by layer at depth >= 2) against NTK random "
          "features of the same network, same run")
    print(f"{'variant':<20} {'m':>6} {'error / RF':>11} {'time / RF':>10}")
    rf = {(r["family"][-1], r["m"]): r for r in rows
          if r["family"].startswith("NTK RF") and "m" in r}
    for r in rows:
        if "m" in r and r["family"].startswith("sketch bias") and (r["family"][-1], r["m"]) in rf:
            p = rf[r["family"][-1], r["m"]]
            print(f"{r['family']:<20} {r['m']:>6} {r['error'] / p['error']:>11.3f} "
                  f"{r['transform_s'] / p['transform_s']:>10.3f}")


def random_features(*, quick: bool = False, repeats: int = 3, draws: int = 2) -> list[dict]:
    """Print the table of this section and return its rows."""
    n, d = 500, 16
    x = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ms = [256 * 2**i for i in range(4 if quick else 7)]
    draws = 1 if quick else draws
    repeats = 1 if quick else repeats
    print(f"\n## Random features: N = {n}, d = {d}, float64, error = RMS over {draws} draw(s) "
          f"of ||Phi Phi^T - K||_F / ||K||_F; times: median of {repeats}")
    print(f"{'family':<20} {'m':>6} {'rel. error':>11} {'transform s':>12} {'exact K s':>10} "
          f"{'ratio':>7}  note")
    rows = []
    for name, make, exact, largest in _families():
        k = exact(x)
        t_exact = median_time(lambda exact=exact: exact(x), repeats)
        errs, used = [], []
        for m in (m for m in ms if m <= largest):
            maps = [make(m, 1000 * m + s).fit(x) for s in range(draws)]
            err = math.sqrt(np.mean([
                float(torch.linalg.matrix_norm(f @ f.T - k) / torch.linalg.matrix_norm(k)) ** 2
                for f in (phi(x) for phi in maps)]))
            t_map = median_time(lambda phi=maps[0]: phi(x), repeats)
            note = f"poly {maps[0].poly_error_:.4f}" if hasattr(maps[0], "poly_error_") else ""
            print(f"{name:<20} {m:>6} {err:>11.5f} {t_map:>12.4f} {t_exact:>10.4f} "
                  f"{t_map / t_exact:>7.2f}  {note}")
            rows.append(dict(family=name, m=m, error=err, transform_s=t_map, exact_s=t_exact))
            errs.append(err)
            used.append(m)
            del maps
        slope = np.polyfit(np.log(used), np.log(errs), 1)[0]
        print(f"{name:<20} {'slope':>6} {slope:>11.3f}   (log-log fit over m = {used[0]}..."
              f"{used[-1]})")
        rows.append(dict(family=name, slope=float(slope)))
    _sketch_ratios(rows)
    return rows
