"""Benchmark: a kernel tiled into a Zarr store against the same kernel in memory.

Network: ``Dense(512, W_std=1.5, b_std=0.05) - ReLU`` three times, then ``Dense(1)``;
inputs ``N x 784`` float32 standard normal; ``K(X, X)`` (NNGP and NTK). Modes:

- ``in-memory``: ``net.kernel(x)`` (the anchor);
- ``tiled``: ``ntkit.tiles.compute(net, x, store=..., tile=T)`` in this process;
- ``dask-2``: the same with ``executor`` a 2-worker Dask LocalCluster (one thread per
  worker process, ``cores // 2`` torch threads each); cluster start-up is not timed.

Each tiled repeat writes a fresh store (store creation, input fingerprints, writes and the
read-back checksums are all timed). Each mode runs in a fresh Python process; its peak memory
is that process's resident high-water mark (``VmHWM``; for dask-2 the largest worker's is
given too). Run on an otherwise idle machine:

    python bench/tiles.py            # N = 20000, tile 2048
    python bench/tiles.py --quick    # N = 2000, tile 512 (a smoke test; timings are noisy)
    python bench/tiles.py --n 60000 --modes tiled,dask-2 --repeats 1   # beyond memory
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

MODES = ("in-memory", "tiled", "dask-2")


def _net():
    from ntkit import layers as L

    hidden = [l for _ in range(3) for l in (L.Dense(512, W_std=1.5, b_std=0.05), L.ReLU())]
    return L.serial(*hidden, L.Dense(1, b_std=None))


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _one(mode: str, n: int, tile: int, repeats: int) -> dict:
    """Time one mode in this (fresh) process; print a JSON line."""
    import torch

    from ntkit import tiles

    net = _net()
    x = torch.randn(n, 784, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    extra = {}
    if mode == "in-memory":
        net.kernel(x[:256], progress=False)  # warm-up

        def run():
            net.kernel(x, progress=False)
        cleanup = None
    else:
        executor, cleanup = None, None
        if mode == "dask-2":
            from distributed import Client, LocalCluster

            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            executor = Client(cluster)

            def cleanup():
                hwm = executor.run(_hwm_mb)
                extra["worker_peak_mb"] = max(hwm.values())
                executor.close()
                cluster.close()
        with tempfile.TemporaryDirectory() as d:  # warm-up (and workers' imports)
            tiles.compute(net, x[:256], store=f"{d}/w.zarr", tile=128, executor=executor,
                          progress=False)

        def run():
            with tempfile.TemporaryDirectory() as d:
                tiles.compute(net, x, store=f"{d}/k.zarr", tile=tile, executor=executor,
                              progress=False)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    if cleanup is not None:
        cleanup()
    return {"mode": mode, "n": n, "seconds": statistics.median(times), "times": times,
            "peak_mb": _hwm_mb(), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 2000, tile 512")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated, from " + ", ".join(MODES))
    parser.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.n or (2000 if args.quick else 20000)
    tile = args.tile or (512 if args.quick else 2048)
    if args.one:
        print(json.dumps(_one(args.one, n, tile, args.repeats)))
        return
    modes = args.modes.split(",")
    if not modes or not set(modes) <= set(MODES):
        parser.error(f"--modes must be a comma-separated subset of {', '.join(MODES)}")
    rows = []
    for mode in modes:
        out = subprocess.run([sys.executable, __file__, "--one", mode, "--n", str(n),
                              "--tile", str(tile), "--repeats", str(args.repeats)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    anchor = rows[0]
    print(f"3-layer ReLU MLP (width 512), N = {n} x 784 float32, NNGP + NTK, tile {tile}, "
          f"median of {args.repeats}; anchor: {anchor['mode']} = {anchor['seconds']:.3f} s")
    print(f"{'mode':<10} {'N':>6} {'seconds':>9} {'vs ' + anchor['mode']:>13} {'peak MB':>9} "
          f"{'worker peak MB':>15}")
    for r in rows:
        over = f"{100 * (r['seconds'] / anchor['seconds'] - 1):+.1f}%"
        worker = f"{r['worker_peak_mb']:.0f}" if "worker_peak_mb" in r else "-"
        print(f"{r['mode']:<10} {r['n']:>6} {r['seconds']:>9.3f} {over:>13} "
              f"{r['peak_mb']:>9.0f} {worker:>15}")


if __name__ == "__main__":
    main()
