"""Benchmark: empirical NTK strategies against the torch.func tutorial's two methods.

Models (docs/benchmarks.md, "Empirical"): MLP 784-512-512-10 (ReLU) and a CNN (three
``Conv2d(., 32, 3, padding=1)`` + ReLU on 1x8x8 inputs, flatten, ``Linear(2048, 10)``);
inputs standard normal, float32, ``K(X, X)`` with ``outputs="trace"`` and ``"full"``.
Methods: ntkit's ``auto`` (the strategy it picked in brackets), ``structured``,
``jacobian`` and ``ntk_vp``; and the torch.func "Neural Tangent Kernels" tutorial's
Jacobian contraction (``vmap(jacrev)`` + ``einsum``) and NTK-vector products
(``vmap(vmap(vjp -> jvp))`` over pairs of examples), written here as the tutorial writes them.

Each row runs in a fresh Python process: one call on 4 examples (libraries, threads), then
one call on all N examples that gives the peak memory and warms up (the process's first
touch of its memory costs page faults, several times more on a virtual machine), then
``--repeats`` timed calls, whose median is reported (the warm-up call's time instead when it
takes over 20 s). Peak memory is the process's resident high-water mark (``VmHWM`` of
``/proc/self/status``) during the full-size warm-up call minus its resident size just before
it, i.e. what the method itself allocated (torch's CPU allocations are invisible to
tracemalloc). A method whose estimated memory
exceeds ``--max-gb`` is skipped (the tutorial's NTK-vector products vmap over all
``N1 N2 K`` pairs at once and need ``N1 N2 K P`` numbers). The anchor is the median time of
one 4096x4096 float32 matmul in the same run; ``ratio`` is seconds / matmul seconds, which
compares across machines. neural-tangents 0.6.5 (JAX, jit, CPU) on the reference machine
(matmul 0.8 s), N = 256: MLP full 0.12 s (structured), CNN full 1.9 s, CNN trace 0.63 s.
Last, ``auto`` against the tutorial's faster method: how many times faster, and at most how
many times faster its implementation could be: the FLOPs that its products and
convolutions execute (counted once more under torch's FlopCounterMode, after the timings)
at the anchor's rate would take the whole time.

    python bench/empirical_ntk.py [--quick] [--n 64,256] [--repeats 3] [--models MLP,CNN]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap
from torch.utils.flop_counter import FlopCounterMode

import ntkit
from _common import matmul_seconds, status_kb
from ntkit.empirical import empirical_ntk
from ntkit.empirical._ntk import choose_strategy

METHODS = ("auto", "structured", "jacobian", "ntk_vp", "tutorial-jacobian", "tutorial-ntk-vp")


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, 10))


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 10))


MODELS = {"MLP": (mlp, (784,)), "CNN": (cnn, (1, 8, 8))}


# --- the torch.func tutorial's two methods, as the tutorial writes them -------------------

def tutorial_jacobian(net: nn.Module, x1, x2, compute: str):
    params = {k: v.detach() for k, v in net.named_parameters()}

    def fnet_single(params, x):
        return functional_call(net, params, (x.unsqueeze(0),)).squeeze(0)

    jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x1)
    jac1 = [j.flatten(2) for j in jac1.values()]
    jac2 = vmap(jacrev(fnet_single), (None, 0))(params, x2)
    jac2 = [j.flatten(2) for j in jac2.values()]
    expr = {"full": "Naf,Mbf->NMab", "trace": "Naf,Maf->NM"}[compute]
    result = torch.stack([torch.einsum(expr, j1, j2) for j1, j2 in zip(jac1, jac2,
                                                                         strict=True)])
    return result.sum(0)


def tutorial_ntk_vp(net: nn.Module, x1, x2, compute: str):
    params = {k: v.detach() for k, v in net.named_parameters()}

    def fnet_single(params, x):
        return functional_call(net, params, (x.unsqueeze(0),)).squeeze(0)

    def get_ntk(x1, x2):
        def func_x1(params):
            return fnet_single(params, x1)

        def func_x2(params):
            return fnet_single(params, x2)

        output, vjp_fn = vjp(func_x1, params)

        def get_ntk_slice(vec):
            vjps = vjp_fn(vec)
            _, jvps = jvp(func_x2, (params,), vjps)
            return jvps

        basis = torch.eye(output.numel(), dtype=output.dtype).view(output.numel(), -1)
        return vmap(get_ntk_slice)(basis)

    result = vmap(vmap(get_ntk, (None, 0)), (0, None))(x1, x2)
    return result if compute == "full" else torch.einsum("NMKK->NM", result)


# --- one row, in a fresh process --------------------------------------------------------

def _call(method: str, net: nn.Module, x: torch.Tensor, outputs: str):
    if method == "tutorial-jacobian":
        return tutorial_jacobian(net, x, x, outputs)
    if method == "tutorial-ntk-vp":
        return tutorial_ntk_vp(net, x, x, outputs)
    return empirical_ntk(net, x, strategy=method, outputs=outputs)


def _child(spec: str) -> None:
    model, n, outputs, method, repeats = spec.split(",")
    make, shape = MODELS[model]
    torch.manual_seed(0)
    net = make()
    x = torch.randn(int(n), *shape, generator=torch.Generator().manual_seed(1))
    _call(method, net, x[:4], outputs)  # load libraries, start threads
    before = status_kb("VmRSS")
    t = time.perf_counter()
    _call(method, net, x, outputs)  # the peak memory, and a warm-up of the first touch
    warm = time.perf_counter() - t
    peak = (status_kb("VmHWM") - before) * 1024
    times = []
    for _ in range(int(repeats) if warm <= 20 else 0):
        t = time.perf_counter()
        _call(method, net, x, outputs)
        times.append(time.perf_counter() - t)
    picked, flops = "", None
    if method == "auto":
        costs = choose_strategy(net, x, outputs=outputs)
        picked = min(costs, key=costs.get)
        flops = counted_flops(lambda: _call(method, net, x, outputs))
    print(json.dumps({"seconds": statistics.median(times) if times else warm, "peak": peak,
                      "picked": picked, "flops": flops}))


def counted_flops(fn) -> float:
    """Multiply-adds x 2 of the matrix products and convolutions that ``fn()`` runs (torch's
    FlopCounterMode, which leaves out the in-place ``addmm_`` and ``baddbmm_`` that the
    structured strategy accumulates its products with; they are counted here). At the
    anchor's rate, a floor for the time of that implementation."""
    aten = torch.ops.aten

    def addmm_(out, a, b, *args, **kwargs):
        return 2 * a[0] * a[1] * b[1]

    def baddbmm_(out, a, b, *args, **kwargs):
        return 2 * a[0] * a[1] * a[2] * b[2]

    with FlopCounterMode(display=False, custom_mapping={aten.addmm_: addmm_,
                                                        aten.baddbmm_: baddbmm_}) as counter:
        fn()
    return float(counter.get_total_flops())


def _estimated_bytes(model: str, n: int, outputs: str, method: str) -> float:
    make, _ = MODELS[model]
    sizes = [q.numel() for q in make().parameters()]
    p = sum(sizes)
    k = 10
    if method == "tutorial-ntk-vp":
        return 4.0 * n * n * k * p
    if method == "tutorial-jacobian":  # both Jacobians, and one parameter's in the making
        return 4.0 * n * k * (2 * p + max(sizes))
    return 1.5 * 2**30  # ntkit's strategies: 1 GiB working-memory budget by default


def _row(model: str, n: int, outputs: str, method: str, repeats: int, timeout: float,
         max_bytes: float) -> dict:
    need = _estimated_bytes(model, n, outputs, method)
    if need > max_bytes:
        return {"skipped": f"needs ~{need / 2**30:.0f} GB"}
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", f"{model},{n},{outputs},{method},{repeats}"],
            check=True, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"skipped": f"over {timeout:.0f} s"}
    except subprocess.CalledProcessError as e:
        return {"skipped": "failed: " + (e.stderr.strip().splitlines() or ["?"])[-1][:60]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: N = 16, one repeat, 120 s per row")
    parser.add_argument("--n", default="64,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per row")
    parser.add_argument("--max-gb", type=float, default=20.0,
                        help="skip methods estimated to need more memory than this")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.child)
    sizes = [16] if args.quick else [int(v) for v in args.n.split(",")]
    repeats = 1 if args.quick else args.repeats
    timeout = 120.0 if args.quick else args.timeout
    methods = args.methods.split(",")

    matmul = matmul_seconds()
    print(f"ntkit {ntkit.__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, float32")
    print(f"anchor: one 4096x4096 float32 matmul: {matmul:.3f} s "
          f"({2 * 4096**3 / matmul / 1e9:.0f} GFLOP/s)")
    print()
    header = (f"{'model':<5} {'N':>4} {'outputs':<7} {'method':<28} {'seconds':>9} "
              f"{'peak MB':>8} {'ratio':>8}")
    print(header)
    print("-" * len(header))
    rate = 2 * 4096**3 / matmul
    found = {}
    for model in args.models.split(","):
        for n in sizes:
            for outputs in ("trace", "full"):
                for method in methods:
                    r = _row(model, n, outputs, method, repeats, timeout,
                             args.max_gb * 2**30)
                    found[model, n, outputs, method] = r
                    name = method + (f" [{r['picked']}]" if r.get("picked") else "")
                    if "skipped" in r:
                        print(f"{model:<5} {n:>4} {outputs:<7} {name:<28} "
                              f"{'skipped: ' + r['skipped']:>27}", flush=True)
                        continue
                    print(f"{model:<5} {n:>4} {outputs:<7} {name:<28} {r['seconds']:>9.3f} "
                          f"{r['peak'] / 2**20:>8.1f} {r['seconds'] / matmul:>8.3f}",
                          flush=True)
    print()
    print("neural-tangents 0.6.5 structured, N=256, matmul 0.8 s: MLP full 0.12 s (ratio "
          "0.15), CNN full 1.9 s (2.4), CNN trace 0.63 s (0.79)")
    _speedups(found, rate)


def _speedups(found: dict, rate: float) -> None:
    """``auto`` against the tutorial's faster method, and the most that ``auto``'s
    implementation could reach: the tutorial's time over the time of ``auto``'s counted
    FLOPs at the anchor's rate (every product at the speed of the 4096^2 matmul, and
    nothing else costing time)."""
    lines = []
    for (model, n, outputs, method), r in found.items():
        if method != "auto" or "seconds" not in r:
            continue
        tutorial = [found.get((model, n, outputs, m), {}).get("seconds")
                    for m in ("tutorial-jacobian", "tutorial-ntk-vp")]
        tutorial = [t for t in tutorial if t is not None]
        if not tutorial:
            continue
        best = min(tutorial)
        line = f"{model} N={n} {outputs}: {best / r['seconds']:.2f}x faster than the tutorial"
        if r.get("flops"):
            floor = r["flops"] / rate
            line += (f"; its {r['flops']:.3g} FLOPs take {floor:.3f} s at the anchor's "
                     f"rate, so at most {best / floor:.2f}x")
        lines.append(line)
    if lines:
        print()
        print("auto against the tutorial's faster method:")
        for line in lines:
            print("  " + line)


if __name__ == "__main__":
    main()
