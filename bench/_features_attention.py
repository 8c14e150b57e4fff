"""Benchmark sections for linear attention and SNNK features (called by ``bench/features.py``).

``attention_table``: ``LinearAttention`` (FAVOR+, m = 128, orthogonal) against softmax
attention, ``F.scaled_dot_product_attention`` with the same projections (the anchor, measured
in the same run), float32, batch 1, embed 64, 4 heads (head_dim 16), sequence lengths 1k ...
64k. Time: median of ``repeats`` forward passes (one for the long softmax runs). Peak memory:
the rise of the process's peak resident set over the call (``/proc/self/clear_refs`` resets
the peak; Linux). Softmax runs while its predicted time (the previous length's x 4) stays
under ``softmax_cap_s`` and its peak under ``memory_cap_gib``; the row says where it stopped.
The last line fits ``time ~ L^p`` for both.

``snnk_table``: error against the closed form, computed in the same run, for m = 64 ... 16384:
relative Frobenius error of the ReLU-SNNK kernel on 500 inputs (closed form from
``ntkit.layers``), of the FAVOR+ estimate of ``exp(x . y)``, of an SNNK layer's output against
``cos(Linear(x))``, and of LinearAttention's output against softmax attention; with the fitted
slope of log error vs log m (``-0.5`` for an unbiased Monte Carlo estimate).

    python bench/_features_attention.py [--max-len 65536] [--softmax-cap 60] [--quick]
"""

from __future__ import annotations

import argparse
import math
import time
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from _common import median_time, status_kb
from ntkit.features import FAVORFeatures, LinearAttention, SNNKFeatures, SNNKLayer

EMBED, HEADS, M = 64, 4, 128


def _exact_rss() -> None:
    """Make glibc return freed blocks to the system (fixed mmap threshold, trim now), so that
    the resident set tracks live tensors: otherwise its dynamic threshold keeps blocks up to
    32 MiB mapped after they are freed and a second call's peak looks like zero."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 1 << 16)   # M_MMAP_THRESHOLD
    libc.malloc_trim(0)


def _peak_mib(fn) -> tuple[float, float, object]:
    """(seconds, MiB, result): one call's time, its rise of the peak resident set, and what
    it returned."""
    _exact_rss()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")   # reset VmHWM to the current resident set
    base = status_kb("VmRSS")
    t = time.perf_counter()
    out = fn()
    sec = time.perf_counter() - t
    return sec, (status_kb("VmHWM") - base) / 1024, out


def attention_table(lengths=None, *, repeats: int = 3, softmax_cap_s: float = 60.0,
                    memory_cap_gib: float = 8.0) -> list[tuple]:
    """Print and return rows ``(L, linear s, linear MiB, causal s, softmax s, softmax MiB)``."""
    lengths = lengths or [1024 * 2**i for i in range(7)]
    torch.manual_seed(0)
    attn = LinearAttention(EMBED, HEADS, n_components=M, random_state=0)
    causal = LinearAttention(EMBED, HEADS, n_components=M, causal=True, random_state=0)
    causal.load_state_dict(attn.state_dict())

    def softmax(x):
        q, k, v = (attn._heads(p(x)) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)
        return attn.out_proj(out.transpose(1, 2).reshape(x.shape))

    print(f"attention: batch 1, embed {EMBED}, {HEADS} heads, m = {M}, float32, torch threads "
          f"{torch.get_num_threads()}; softmax = F.scaled_dot_product_attention, cap "
          f"{softmax_cap_s:.0f} s / {memory_cap_gib:.0f} GiB")
    print(f"{'L':>6} {'linear s':>9} {'MiB':>7} {'causal s':>9} {'softmax s':>10} {'MiB':>7} "
          f"{'soft/lin':>8} {'rel err':>8}")
    rows, last_soft = [], None
    with torch.no_grad():
        for n in lengths:
            x = torch.randn(1, n, EMBED, generator=torch.Generator().manual_seed(n))
            reps = repeats if n <= 8192 else 1
            lin_s = median_time(partial(attn, x), reps)
            _, lin_mib, got = _peak_mib(partial(attn, x))
            cau_s = median_time(partial(causal, x), reps)
            soft_s = soft_mib = err = None
            note = ""
            if last_soft is not None and last_soft * 4 > softmax_cap_s:
                note = f"softmax skipped: predicted {last_soft * 4:.0f} s > cap"
            else:
                soft_s, soft_mib, want = _peak_mib(partial(softmax, x))
                if soft_mib > memory_cap_gib * 1024:
                    note = f"softmax peak {soft_mib / 1024:.1f} GiB > cap"
                if soft_s < 5:
                    soft_s = median_time(partial(softmax, x), reps)
                err = float((got - want).norm() / want.norm())
                last_soft = soft_s
            rows.append((n, lin_s, lin_mib, cau_s, soft_s, soft_mib))

            def fmt(v, spec):
                return format(v, spec) if v is not None else "-"
            ratio = fmt(None if soft_s is None else soft_s / lin_s, "8.1f")
            print(f"{n:>6} {lin_s:9.3f} {lin_mib:7.0f} {cau_s:9.3f} {fmt(soft_s, '10.3f')} "
                  f"{fmt(soft_mib, '7.0f')} {ratio:>8} {fmt(err, '8.3f')}  {note}")
    for name, col in (("linear", 1), ("causal", 3), ("softmax", 4)):
        pts = [(r[0], r[col]) for r in rows if r[col] is not None and r[0] >= 4096]
        if len(pts) >= 2:
            p = np.polyfit(np.log([a for a, _ in pts]), np.log([b for _, b in pts]), 1)[0]
            print(f"time exponent (L >= 4096) {name}: {p:.2f}")
    return rows


def _slope(ms, errs) -> float:
    return float(np.polyfit(np.log(ms), np.log(errs), 1)[0])


def snnk_table(ms=None, *, seeds: int = 3) -> list[tuple]:
    """Print and return rows ``(method, m, mean relative error)`` and the fitted slopes."""
    ms = ms or [64, 256, 1024, 4096, 16384]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 10, generator=g, dtype=torch.float64)
    xs = 0.25 * x / math.sqrt(10) * 3          # norms ~0.75 for the exponential kernels
    torch.manual_seed(0)
    lin = torch.nn.Linear(10, 32, dtype=torch.float64)
    xa = torch.randn(1, 256, EMBED, generator=g, dtype=torch.float64)

    def relu_snnk(m, s):
        phi = SNNKFeatures(m, activation="relu", random_state=s).fit(x)
        k = phi.exact_kernel(x)            # the anchor: closed form, same run
        return float((phi(x) @ phi(x).T - k).norm() / k.norm())

    def favor(m, s):
        phi = FAVORFeatures(m, orthogonal=True, random_state=s).fit(xs)
        k = torch.exp(xs @ xs.T)
        return float((phi(xs) @ phi(xs).T - k).norm() / k.norm())

    def layer(m, s):
        snnk = SNNKLayer.from_linear(lin, activation="cos", n_components=m, random_state=s)
        want = snnk.exact(xs)
        return float((snnk(xs) - want).norm() / want.norm())

    def attention(m, s):
        torch.manual_seed(1)
        attn = LinearAttention(EMBED, HEADS, n_components=m, random_state=s,
                               dtype=torch.float64)
        q, k, v = (attn._heads(p(xa)) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        want = attn.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
                             .reshape(xa.shape))
        return float((attn(xa) - want).norm() / want.norm())

    methods = {"ReLU-SNNK kernel (N=500, d=10)": relu_snnk,
               "FAVOR+ exp kernel (orth., |x|~0.75)": favor,
               "SNNK layer cos(Linear 10->32)": layer,
               "LinearAttention vs softmax (L=256)": attention}
    print(f"relative error vs m (mean of {seeds} seeds; anchor: closed form in the same run)")
    print(f"{'method':<38} " + " ".join(f"{m:>8}" for m in ms) + f" {'slope':>7}")
    rows = []
    with torch.no_grad():
        for name, fn in methods.items():
            errs = [sum(fn(m, s) for s in range(seeds)) / seeds for m in ms]
            rows += [(name, m, e) for m, e in zip(ms, errs, strict=True)]
            print(f"{name:<38} " + " ".join(f"{e:8.4f}" for e in errs)
                  + f" {_slope(ms, errs):7.2f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-len", type=int, default=65536)
    parser.add_argument("--softmax-cap", type=float, default=60.0, help="seconds")
    parser.add_argument("--quick", action="store_true", help="L <= 4096, m <= 4096")
    args = parser.parse_args()
    top = 4096 if args.quick else args.max_len
    attention_table([n for n in (1024 * 2**i for i in range(7)) if n <= top],
                    softmax_cap_s=args.softmax_cap)
    snnk_table([64, 256, 1024, 4096] if args.quick else None)


if __name__ == "__main__":
    main()
