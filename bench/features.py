"""Benchmark of ``ntkit.features``: one section per family of approximations, each printing its
own table with the anchor (the exact computation) measured in the same run.

Sections (each a function in its own module ``bench/_features_*.py``):

- ``random_features`` (``_features_rf.py``): arc-cosine, NNGP and NTK random features and the
  NTK sketch: error against the exact kernel as ``m`` grows, fitted slope, transform time
  against the exact kernel's; the NTK sketch's shared tree and final SRHT against its previous
  construction (one tree per degree, ``_sketch_previous.py``) in the same run.
- ``attention_table``, ``snnk_table`` (``_features_attention.py``): ``LinearAttention`` against
  softmax attention (``F.scaled_dot_product_attention``) from 1k to 64k tokens, and the error of
  SNNK / FAVOR+ / linear attention as ``m`` grows.
- ``krr_table`` (``_features_krr.py``): kernel ridge regression at N = 20 000 by FALKON, the
  direct Nyström solve, scikit-learn's ``Nystroem`` + ``Ridge`` and the exact solve; the
  1 000 000-point run is ``python bench/_features_krr.py --large``.

Run with nothing else busy:

    python bench/features.py [--quick] [--repeats 3] [--draws 2] [--only SECTION ...]
"""

from __future__ import annotations

import argparse

import torch

from _common import matmul_seconds
from _features_attention import attention_table, snnk_table
from _features_krr import krr_table
from _features_rf import random_features

SECTIONS = ["random_features", "attention", "snnk", "krr"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timings: median of this many")
    parser.add_argument("--draws", type=int, default=2, help="independent maps per error")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS,
                        help="run only these sections")
    args = parser.parse_args()
    matmul = matmul_seconds(torch.float64)
    print(f"yardstick: 4096 x 4096 float64 matmul {matmul:.3f} s "
          f"({2 * 4096**3 / matmul / 1e9:.0f} GFLOP/s), torch threads {torch.get_num_threads()}")
    if "random_features" in args.only:
        random_features(quick=args.quick, repeats=args.repeats, draws=args.draws)
    if "attention" in args.only:
        attention_table([1024 * 2**i for i in range(3)] if args.quick else None,
                        repeats=1 if args.quick else args.repeats)
    if "snnk" in args.only:
        snnk_table([64, 256, 1024] if args.quick else None)
    if "krr" in args.only:
        krr_table()


if __name__ == "__main__":
    main()
