"""Benchmark: the structured empirical NTK of a Transformer encoder block against the
Jacobian route.

Model: ``nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=--ff, dropout=0,
batch_first=True)`` on ``(N, 16, 64)`` standard-normal sequences, mean over positions, then
``nn.Linear(64, --outputs)``; float64, ``K(X, X)`` with ``outputs="trace"``. The structured
route factorises ``nn.MultiheadAttention``'s ``in_proj_weight`` (ntkit.empirical's
``MultiheadAttentionHandler``) and every ``nn.Linear`` / ``LayerNorm``; the anchor is
``strategy="jacobian"`` in the same run. Every weight here has a Gram route dearer than its
Jacobian route (the printed FLOP ratio of the two per layer), so any factorisation must
contract per-example gradients ``J`` ``(N, K P)``, ``P`` the model's parameter count; two
floors time that alone for a random ``J``: ``floor J J^T`` as one full product (what
``strategy="jacobian"`` does), ``floor sym`` as the structured route's symmetric product
(``ntkit.empirical._pairs``: BLAS ``syrk`` when torch runs one thread, else torch's
triangle of tiles), half the multiply-adds. ``floor sym`` bounds the speedup that the
structured route can give at this size. The relative difference of the two kernels is
printed too.

    python bench/empirical_attention.py [--n 256] [--ff 256] [--outputs 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

from _common import matmul_seconds, median_time
from ntkit.empirical import _pairs, empirical_ntk

D_MODEL, HEADS, LENGTH = 64, 4, 16


class EncoderBlock(nn.Module):
    """One encoder block, mean-pooled, then a linear read-out of ``k`` outputs."""

    def __init__(self, ff: int, k: int):
        super().__init__()
        self.block = nn.TransformerEncoderLayer(D_MODEL, HEADS, dim_feedforward=ff,
                                                dropout=0.0, batch_first=True)
        self.head = nn.Linear(D_MODEL, k)

    def forward(self, x):
        return self.head(self.block(x).mean(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--ff", type=int, default=256, help="dim_feedforward")
    parser.add_argument("--outputs", type=int, default=1, help="read-out units K")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    # torch warns that vmap has no batching rule for its fused CPU attention (the Jacobian
    # route's per-example gradients loop over examples there): that is the anchor as it is.
    warnings.filterwarnings("ignore", message="There is a performance drop")
    torch.manual_seed(0)
    model = EncoderBlock(args.ff, args.outputs).double().eval()
    x = torch.randn(args.n, LENGTH, D_MODEL, dtype=torch.float64)
    n_params = sum(p.numel() for p in model.parameters())

    kernels = {s: empirical_ntk(model, x, strategy=s) for s in ("jacobian", "structured")}
    # Interleaved (jacobian, structured, jacobian, ...): a machine whose load changes
    # during the run slows both alike.
    runs = {s: [] for s in kernels}
    for _ in range(args.repeats):
        for s in kernels:
            start = time.perf_counter()
            empirical_ntk(model, x, strategy=s)
            runs[s].append(time.perf_counter() - start)
    times = {s: statistics.median(t) for s, t in runs.items()}
    jac = torch.randn(args.n, args.outputs * n_params, dtype=torch.float64)
    times["floor J J^T"] = median_time(lambda: jac @ jac.T, args.repeats)
    state = _pairs.BlockState(args.n, jac, [], [jac.view(args.n, args.outputs, n_params)])
    times["floor sym"] = median_time(
        lambda: _pairs.pair_block(state, state, "trace", args.outputs), args.repeats)
    err = float((kernels["structured"] - kernels["jacobian"]).norm()
                / kernels["jacobian"].norm())

    print(f"encoder block d_model {D_MODEL}, {HEADS} heads, sequence {LENGTH}, "
          f"dim_feedforward {args.ff}, K = {args.outputs}, N = {args.n}, P = {n_params}, "
          f"float64, {torch.get_num_threads()} threads")
    print(f"anchor: 4096x4096 float32 matmul {matmul_seconds():.3f} s")
    # Per pair of examples, a weight used on S rows: Gram route S^2 (2 in + 2 K out + K),
    # Jacobian route 2 K in out (module doc of ntkit.empirical._structured).
    for name, (d_in, d_out) in {"in_proj": (D_MODEL + 1, 3 * D_MODEL),
                                "out_proj": (D_MODEL + 1, D_MODEL),
                                "linear1": (D_MODEL + 1, args.ff),
                                "linear2": (args.ff + 1, D_MODEL)}.items():
        k = args.outputs
        ratio = LENGTH ** 2 * (2 * d_in + 2 * k * d_out + k) / (2 * k * d_in * d_out)
        print(f"  {name:9s} Gram / Jacobian route FLOPs per pair: {ratio:.1f}")
    print(f"{'route':12s} {'seconds':>8s} {'vs jacobian':>12s}")
    for name in ("jacobian", "structured", "floor J J^T", "floor sym"):
        print(f"{name:12s} {times[name]:8.3f} {times['jacobian'] / times[name]:11.2f}x")
    print(f"structured vs jacobian: relative Frobenius difference {err:.2e}")


if __name__ == "__main__":
    main()
