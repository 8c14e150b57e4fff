"""Score every architecture of ``table.csv`` with every metric of ``ntkit.apps.nas``; print the
rank correlation of each score with the mean test accuracy.

Scoring protocol: the first ``N_SCORE = 128`` training examples of ``build.digits_split()``
(never the test split), in two minibatches of 64, seeds 0 and 1 (a network per seed from
``space.build``), float64. ``lga`` is scored at initialisation; ``lga@20`` after 20 SGD steps
(learning rate 0.05, cross-entropy) on the same examples, as Mok et al. (CVPR 2022) score LGA
after a little training. NASWOT hooks the four activations of the space (``Sin`` included).

Kendall's tau (tau-b) and Spearman's rho are :func:`scipy.stats.kendalltau` and
:func:`scipy.stats.spearmanr`; their 95 % intervals are percentile bootstraps over
architectures (``N_BOOT = 1000`` resamples, NumPy seed 0). An architecture whose score fails
(a NaN after training, an error) is left out of that metric's correlation and counted.
``cost`` is the mean wall time of one score call per architecture (both seeds, both
minibatches).

    python bench/nas/correlate.py [--table bench/nas/table.csv] [--plots DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build import digits_split  # noqa: E402
from space import Sin, build  # noqa: E402

from ntkit.apps import nas  # noqa: E402

N_SCORE = 128
BATCH = 64
SEEDS = (0, 1)
N_BOOT = 1000
TRAIN_STEPS = 20
TRAIN_LR = 0.05
# name -> (metric, train_steps)
SCORES = {"ntk_cond": ("ntk_cond", 0), "ntk_trace": ("ntk_trace", 0),
          "ntk_fro": ("ntk_fro", 0), "lga": ("lga", 0), f"lga@{TRAIN_STEPS}": ("lga", TRAIN_STEPS),
          "naswot": ("naswot", 0), "params": ("params", 0), "flops": ("flops", 0)}


def load_table(path: Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def score_table(rows: list[dict], *, names=tuple(SCORES), n_score: int = N_SCORE,
                batch: int = BATCH, seeds=SEEDS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (scores (A,), seconds (A,))}`` over the ``A`` rows; a failed score is NaN."""
    x, y, _, _ = digits_split()
    x, y = x[:n_score], y[:n_score]
    out = {}
    for name in names:
        metric, steps = SCORES[name]
        values, seconds = [], []
        for row in rows:
            spec = json.loads(row["spec"])
            t = time.perf_counter()
            try:
                s = nas.score(lambda seed, spec=spec: build(spec, seed=seed), x, y,
                              metric=metric, seeds=seeds, batch_size=batch, train_steps=steps,
                              lr=TRAIN_LR, activations=nas.NASWOT_ACTIVATIONS + (Sin,),
                              name=row["spec"])
                values.append(s.mean)
            except (ValueError, RuntimeError):
                values.append(math.nan)
            seconds.append(time.perf_counter() - t)
        out[name] = (np.asarray(values), np.asarray(seconds))
    return out


def rank_correlations(score: np.ndarray, acc: np.ndarray, *, n_boot: int = N_BOOT,
                      seed: int = 0) -> dict[str, float]:
    """Kendall's tau-b and Spearman's rho of ``score`` against ``acc`` (NaN scores dropped),
    each with a percentile-bootstrap 95 % interval over resampled architectures."""
    from scipy.stats import kendalltau, spearmanr

    keep = ~np.isnan(score)
    s, a = score[keep], acc[keep]
    rng = np.random.default_rng(seed)
    taus, rhos = [], []
    for _ in range(n_boot):
        idx = rng.integers(0, len(s), len(s))
        taus.append(kendalltau(s[idx], a[idx]).statistic)
        rhos.append(spearmanr(s[idx], a[idx]).statistic)
    taus, rhos = np.asarray(taus), np.asarray(rhos)
    return {"tau": float(kendalltau(s, a).statistic),
            "tau_lo": float(np.nanpercentile(taus, 2.5)),
            "tau_hi": float(np.nanpercentile(taus, 97.5)),
            "rho": float(spearmanr(s, a).statistic),
            "rho_lo": float(np.nanpercentile(rhos, 2.5)),
            "rho_hi": float(np.nanpercentile(rhos, 97.5)),
            "n": int(keep.sum())}


def scatter(name: str, score: np.ndarray, acc: np.ndarray, kinds: list[str], path: Path,
            tau: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for kind, marker in (("mlp", "o"), ("cnn", "s")):
        m = np.asarray([k == kind for k in kinds]) & np.isfinite(score)
        ax.scatter(score[m], acc[m], s=12, marker=marker, label=kind, alpha=0.7)
    ax.set_xlabel(f"{name} (higher = predicted better)")
    ax.set_ylabel("mean test accuracy (%)")
    ax.set_title(f"{name}: Kendall tau = {tau:.2f}")
    if name in ("params", "flops", "ntk_trace", "ntk_fro"):
        ax.set_xscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", type=Path, default=Path(__file__).with_name("table.csv"))
    p.add_argument("--plots", type=Path, default=Path(__file__).with_name("plots"))
    p.add_argument("--limit", type=int, default=None, help="only the first N rows")
    p.add_argument("--n-boot", type=int, default=N_BOOT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = load_table(args.table)[:args.limit]
    if len(rows) < 3:
        raise SystemExit(f"{args.table} has {len(rows)} rows; correlations need at least 3")
    acc = np.asarray([float(r["acc_mean"]) for r in rows])
    kinds = [json.loads(r["spec"])["kind"] for r in rows]
    scores = score_table(rows)
    args.plots.mkdir(parents=True, exist_ok=True)
    print(f"{len(rows)} architectures; accuracy {acc.min():.1f} .. {acc.max():.1f} %; "
          f"bootstrap {args.n_boot} resamples")
    print(f"{'metric':<10} {'tau':>6} {'95% CI':>16} {'rho':>6} {'95% CI':>16} "
          f"{'failed':>6} {'cost/arch':>10}")
    for name, (score, seconds) in scores.items():
        c = rank_correlations(score, acc, n_boot=args.n_boot)
        print(f"{name:<10} {c['tau']:6.3f} [{c['tau_lo']:6.3f}, {c['tau_hi']:6.3f}] "
              f"{c['rho']:6.3f} [{c['rho_lo']:6.3f}, {c['rho_hi']:6.3f}] "
              f"{len(rows) - c['n']:6d} {seconds.mean():9.3f}s")
        scatter(name, score, acc, kinds, args.plots / f"{name.replace('@', '_at')}.png",
                c["tau"])
    print(f"scatter plots in {args.plots}")


if __name__ == "__main__":
    main()
