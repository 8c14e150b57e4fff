"""Train every architecture of ``space.py`` on scikit-learn's digits; write ``table.csv``.

Protocol (fixed; stored in every row so that a table never mixes two protocols):

- data: the 1797 8x8 digits, pixels standardised with the training split's per-pixel mean and
  standard deviation (1 where a pixel is constant); one fixed permutation (NumPy seed 0) puts
  the first ``N_TRAIN = 200`` examples in the training split and the last ``N_TEST = 797`` in
  the test split;
- training: Adam (learning rate 1e-3, PyTorch defaults otherwise), cross-entropy, minibatches of
  32 reshuffled every epoch, ``EPOCHS = 5`` epochs (a short budget: the ranking
  rewards architectures that learn fast, and spreads them widely), float32, one thread;
- seeds 0, 1 and 2: the seed draws the initial parameters (``space.build(spec, seed=)``) and the
  minibatch order;
- the figure: test accuracy (percent) after the last epoch, in eval mode.

Row by row: a row is appended and flushed as soon as every seed of an architecture are trained;
a rerun skips every spec already in the file (same protocol), so an interrupted build resumes.

    python bench/nas/build.py [--limit N] [--out bench/nas/table.csv]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from space import build, key, space  # noqa: E402

N_TRAIN = 200
N_TEST = 797
EPOCHS = 5
BATCH = 32
LR = 1e-3
SEEDS = (0, 1, 2)
FIELDS = ("spec", "kind", "depth", "width", "act", "skip", "norm", "params",
          *(f"acc_seed{s}" for s in SEEDS), "acc_mean", "seconds", "n_train", "epochs")


def digits_split(n_train: int = N_TRAIN) -> tuple[torch.Tensor, ...]:
    """``(x_train (n_train, 64), y_train, x_test (797, 64), y_test)``, float32 / int64."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(y))
    tr, te = perm[:n_train], perm[-N_TEST:]
    mean, std = x[tr].mean(0), x[tr].std(0)
    std[std == 0] = 1.0
    x = (x - mean) / std
    as_x = lambda idx: torch.tensor(x[idx], dtype=torch.float32)  # noqa: E731
    as_y = lambda idx: torch.tensor(y[idx], dtype=torch.long)  # noqa: E731
    return as_x(tr), as_y(tr), as_x(te), as_y(te)


def train_accuracy(spec: dict, seed: int, data, *, epochs: int = EPOCHS) -> float:
    """Test accuracy (percent) of ``spec`` trained under the protocol with ``seed``."""
    x_train, y_train, x_test, y_test = data
    net = build(spec, seed=seed)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(y_train), generator=g)
        for i in range(0, len(order), BATCH):
            idx = order[i:i + BATCH]
            if len(idx) < 2:  # BatchNorm needs two examples
                continue
            loss = nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(x_test).argmax(1)
    return 100.0 * float((pred == y_test).double().mean())


def build_table(out: Path, *, limit: int | None = None, epochs: int = EPOCHS,
                n_train: int = N_TRAIN, log=print) -> int:
    """Append the missing rows of the first ``limit`` specs to ``out``; the number trained."""
    specs = space()[:limit]
    done = set()
    if out.exists():
        with out.open(newline="") as f:
            for row in csv.DictReader(f):
                if (int(row["n_train"]), int(row["epochs"])) != (n_train, epochs):
                    raise SystemExit(f"{out} was built with another protocol: {row}")
                done.add(row["spec"])
    data = digits_split(n_train)
    new = out.exists()
    trained = 0
    with out.open("a", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        if not new:
            writer.writeheader()
        for i, spec in enumerate(specs):
            if key(spec) in done:
                continue
            t = time.perf_counter()
            accs = [train_accuracy(spec, s, data, epochs=epochs) for s in SEEDS]
            seconds = time.perf_counter() - t
            params = sum(p.numel() for p in build(spec, seed=0).parameters())
            per_seed = {f"acc_seed{s}": f"{a:.2f}" for s, a in zip(SEEDS, accs, strict=True)}
            writer.writerow({"spec": key(spec), **spec, "params": params, **per_seed,
                             "acc_mean": f"{np.mean(accs):.3f}", "seconds": f"{seconds:.2f}",
                             "n_train": n_train, "epochs": epochs})
            f.flush()
            trained += 1
            log(f"[{i + 1}/{len(specs)}] {key(spec)}  acc {accs}  {seconds:.1f} s")
    return trained


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=None, help="only the first N specs")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("table.csv"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t = time.perf_counter()
    n = build_table(args.out, limit=args.limit)
    total = len(space())
    print(f"trained {n} architectures in {time.perf_counter() - t:.1f} s; "
          f"the space has {total}")


if __name__ == "__main__":
    main()
