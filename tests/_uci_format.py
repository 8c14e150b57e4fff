"""Small UCI set folders written by tests, in the format of ``ntkit.datasets.load_uci``."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_set(root: Path, name: str = "toy", *, n: int = 12, d: int = 2, classes: int = 2,
               split=None, folds=None, fich1: str | None = None) -> Path:
    """A set folder in the Fernandez-Delgado format (see ../shared/data/uci-dev/README.md):
    ``NAME.txt`` metadata, ``NAME_R.dat`` (header, then index, features, label per line), and
    the index files ``conxuntos.dat`` (train, validation) and ``conxuntos_kfold.dat`` (4 x
    train, test)."""
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d))
    y = np.arange(n) % classes
    split = split or (np.arange(n // 2), np.arange(n // 2, n))
    folds = folds or [(np.flatnonzero(np.arange(n) % 4 != i), np.flatnonzero(np.arange(n) % 4 == i))
                      for i in range(4)]
    (folder / f"{name}.txt").write_text(
        f"n_entradas= {d}\nn_clases= {classes}\nn_arquivos= 1\n"
        f"fich1= {fich1 or f'{name}_R.dat'}\nn_patrons1= {n}\n"
        f"n_patrons_entrena= {len(split[0])}\nn_patrons_valida= {len(split[1])}\n"
        f"n_conxuntos= 1\n")
    rows = ["\t" + "\t".join([f"f{j + 1}" for j in range(d)] + ["clase"])]
    rows += [f"{i + 1}\t" + "\t".join(f"{v:.6f}" for v in x[i]) + f"\t{y[i]}" for i in range(n)]
    (folder / f"{name}_R.dat").write_text("\n".join(rows) + "\n")

    def line(idx):
        return " ".join(str(int(i)) for i in idx) + " \n"

    (folder / "conxuntos.dat").write_text(line(split[0]) + line(split[1]))
    (folder / "conxuntos_kfold.dat").write_text("".join(line(a) + line(b) for a, b in folds))
    return folder
