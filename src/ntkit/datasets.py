"""Built-in data: scikit-learn's bundled sets, which need no download, and the UCI folder format.

The UCI format is that of Fernández-Delgado et al., "Do we Need Hundreds of Classifiers to
Solve Real World Classification Problems?" (JMLR 15, 2014), as used by Arora et al. (ICLR 2020).
Generators: :func:`shortcut` (Hermann et al., ICLR 2024; defined in ``ntkit._shortcut``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._paths import read_regular
from ._shortcut import ShortcutData as ShortcutData
from ._shortcut import shortcut as shortcut

__all__ = ["UCI_MAX_BYTES", "Split", "UCIDataset", "UCIFormatError", "load_digits", "load_uci",
           "shortcut", "ShortcutData"]

UCI_MAX_BYTES = {"metadata": 1 << 20, "data": 256 << 20, "index": 64 << 20}
"""Largest file :func:`load_uci` reads, by kind. The 45 development sets' largest data file is
under 2 MB and the largest of the 121 sets of Fernandez-Delgado et al. is tens of MB; the bounds
keep a crafted folder (a link to ``/dev/zero``, a huge file) from exhausting memory."""


class Split(NamedTuple):
    """A train/test split: inputs ``(N, d)`` and integer labels ``(N,)``."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def load_digits(*, n_train: int = 1000, seed: int = 0, dtype: torch.dtype = torch.float64,
                scaling: str = "pixel") -> Split:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes) as ``(N, 64)`` inputs.

    ``scaling="pixel"`` (default): pixels are standardised with the training split's mean and
    standard deviation (constant pixels become 0). ``scaling="image"``: each image's raw
    intensities are centred on their own mean, which keeps the spatial structure that
    per-pixel standardisation distorts (it magnifies the rarely inked border pixels); use it
    for convolutional networks on the images ``x.reshape(-1, 1, 8, 8)``. Either way each image
    is then scaled to norm ``sqrt(64)``, so that the input kernel ``x . x' / d`` has unit
    diagonal. The split is stratified and fixed by ``seed``.

    Example:
        >>> s = load_digits(n_train=1000)
        >>> s.x_train.shape, s.x_test.shape, int(s.y_train.max())
        (torch.Size([1000, 64]), torch.Size([797, 64]), 9)
    """
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    if scaling not in ("pixel", "image"):
        raise ValueError(f"scaling must be 'pixel' or 'image'; got {scaling!r}")
    x, y = _sk_digits(return_X_y=True)
    if not 10 <= n_train <= len(x) - 10:
        raise ValueError(f"n_train must be between 10 and {len(x) - 10}; got {n_train}")
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, train_size=n_train, stratify=y,
                                              random_state=seed)
    mean, std = x_tr.mean(0), x_tr.std(0)
    std[std == 0] = 1.0

    def prep(a: np.ndarray) -> Tensor:
        a = (a - mean) / std if scaling == "pixel" else a - a.mean(1, keepdims=True)
        a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(min=1e-12) * np.sqrt(a.shape[1])
        return torch.tensor(a, dtype=dtype)

    return Split(prep(x_tr), torch.tensor(y_tr), prep(x_te), torch.tensor(y_te))


class UCIFormatError(ValueError):
    """A UCI data set folder that does not follow the format; the message names the set."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"UCI data set {name!r}: {problem}")
        self.name = name
        self.problem = problem


@dataclass(frozen=True)
class UCIDataset:
    """One UCI classification set with its validation split and its 4 cross-validation folds.

    **Fields:** ``name``; ``x`` ``(N, d)`` float64 features (standardized as shipped); ``y``
    ``(N,)`` int64 labels in ``0 .. n_classes - 1``; ``train``, ``validation`` 1-D int64 index
    arrays into ``x`` (the hyper-parameter split, ``conxuntos.dat``); ``folds`` a list of 4
    ``(train, test)`` index-array pairs (``conxuntos_kfold.dat``).
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    n_classes: int
    train: np.ndarray
    validation: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]

    @property
    def n(self) -> int:
        """Number of samples ``N``."""
        return int(self.x.shape[0])

    @property
    def n_features(self) -> int:
        """Number of features ``d``."""
        return int(self.x.shape[1])


def _member(folder: Path, relative: str, name: str, what: str) -> Path:
    """``folder / relative``, refused unless it stays inside ``folder``: ``relative`` comes from
    the set's own files, which must not make the loader read elsewhere."""
    if not relative or PurePath(relative).is_absolute() or ".." in PurePath(relative).parts:
        raise UCIFormatError(name, f"{what} {relative!r} must be a relative path inside the set "
                                   f"folder, without '..'")
    path = folder / relative
    # A symlink (of the file or of a folder on the way) may point anywhere: resolve and compare.
    if not path.resolve().is_relative_to(folder.resolve()):
        raise UCIFormatError(name, f"{what} {relative!r} resolves outside the set folder")
    return path


def _read_text(path: Path, name: str, kind: str) -> str:
    """The text of the regular file ``path``, at most ``UCI_MAX_BYTES[kind]`` bytes (see
    :func:`ntkit._paths.read_regular`); every failure is a ``UCIFormatError`` of set ``name``."""
    try:
        return read_regular(path, limit=UCI_MAX_BYTES[kind], what=f"{kind} file {path.name}",
                            encoding="utf-8")
    except FileNotFoundError:
        raise UCIFormatError(name, f"missing {kind} file {path.name}") from None
    except OSError as err:
        raise UCIFormatError(name, f"cannot open {kind} file {path.name}: "
                                   f"{err.strerror}") from None
    except ValueError as err:
        raise UCIFormatError(name, str(err)) from None


def _uci_metadata(folder: Path, name: str) -> dict[str, str]:
    path = _member(folder, f"{name}.txt", name, "metadata file")
    meta = {}
    for line in _read_text(path, name, "metadata").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            meta[key.strip()] = value.strip()
    return meta


def _meta_int(meta: dict[str, str], key: str, name: str) -> int:
    if key not in meta:
        raise UCIFormatError(name, f"metadata has no {key}= line")
    try:
        return int(meta[key])
    except ValueError:
        raise UCIFormatError(name, f"metadata {key}= is not an integer: {meta[key]!r}") from None


def _index_lines(path: Path, name: str, n_lines: int, n: int) -> list[np.ndarray]:
    lines = [line for line in _read_text(path, name, "index").splitlines() if line.strip()]
    if len(lines) != n_lines:
        raise UCIFormatError(name, f"{path.name} has {len(lines)} lines; expected {n_lines}")
    out = []
    for i, line in enumerate(lines):
        try:
            idx = np.array([int(v) for v in line.split()], dtype=np.int64)
        except ValueError:
            raise UCIFormatError(name, f"{path.name} line {i + 1} has a non-integer "
                                       f"index") from None
        if idx.size == 0:
            raise UCIFormatError(name, f"{path.name} line {i + 1} is empty")
        if idx.min() < 0 or idx.max() >= n:
            bad = int(idx[(idx < 0) | (idx >= n)][0])
            raise UCIFormatError(name, f"{path.name} line {i + 1}: index {bad} out of range "
                                       f"0..{n - 1}")
        if np.unique(idx).size != idx.size:
            raise UCIFormatError(name, f"{path.name} line {i + 1} repeats an index")
        out.append(idx)
    return out


def _disjoint(a: np.ndarray, b: np.ndarray, name: str, what: str) -> None:
    shared = np.intersect1d(a, b).size
    if shared:
        raise UCIFormatError(name, f"{what} share {shared} indices (a sample used both to fit "
                                   f"and to evaluate)")


def load_uci(folder) -> UCIDataset:
    """Read one UCI set folder ``NAME/`` (``NAME.txt``, ``NAME_R.dat``, ``conxuntos.dat``,
    ``conxuntos_kfold.dat``; see ``../shared/data/uci-dev/README.md``).

    **Arguments:** ``folder``, the path of the set's folder; its last component is the name.

    **Returns:** a :class:`UCIDataset` with ``x`` ``(N, d)``, ``y`` ``(N,)``, the
    train/validation indices and 4 folds.

    **Raises:** :class:`UCIFormatError` (a ``ValueError`` naming the set) for a missing file, a
    data shape that disagrees with the metadata, a wrong column count, a non-numeric entry, a
    label outside ``0 .. n_clases - 1``, an index out of range or repeated within a line, a
    wrong number of index lines, train and validation (or a fold's train and test) indices that
    overlap, a path in the metadata (``fich1=``) or a file that leads outside the folder, a file
    that is not a regular file, or one larger than :data:`UCI_MAX_BYTES`.
    """
    folder = Path(folder)
    name = folder.name
    if not folder.is_dir():
        raise UCIFormatError(name, f"not a folder: {folder}")
    meta = _uci_metadata(folder, name)
    d = _meta_int(meta, "n_entradas", name)
    n_classes = _meta_int(meta, "n_clases", name)
    n = _meta_int(meta, "n_patrons1", name)
    if d <= 0 or n_classes <= 0 or n <= 0:
        raise UCIFormatError(name, "metadata n_entradas, n_clases and n_patrons1 must be "
                                   "positive")
    data_path = _member(folder, meta.get("fich1", f"{name}_R.dat"), name, "fich1=")
    text = _read_text(data_path, name, "data")
    rows = [line.split() for line in text.splitlines()[1:] if line.strip()]
    if len(rows) != n:
        raise UCIFormatError(name, f"{data_path.name} has {len(rows)} samples; metadata "
                                   f"n_patrons1= says {n}")
    for i, row in enumerate(rows):
        if len(row) != d + 2:
            raise UCIFormatError(name, f"{data_path.name} sample {i + 1} has {len(row)} "
                                       f"columns; expected {d + 2} (index, {d} features, label)")
    try:
        table = np.array([[float(v) for v in row[1:]] for row in rows], dtype=np.float64)
    except ValueError:
        raise UCIFormatError(name, f"{data_path.name} has a non-numeric entry") from None
    if not np.isfinite(table).all():
        raise UCIFormatError(name, f"{data_path.name} has a NaN or infinite entry")
    x, labels = table[:, :-1], table[:, -1]
    y = labels.astype(np.int64)
    if not np.array_equal(y, labels) or y.min() < 0 or y.max() >= n_classes:
        raise UCIFormatError(name, f"{data_path.name} has a label outside 0..{n_classes - 1}")
    split = _member(folder, "conxuntos.dat", name, "index file")
    train, validation = _index_lines(split, name, 2, n)
    _disjoint(train, validation, name, "conxuntos.dat: the train and validation lines")
    kfold = _member(folder, "conxuntos_kfold.dat", name, "index file")
    k = _index_lines(kfold, name, 8, n)
    folds = [(k[2 * i], k[2 * i + 1]) for i in range(4)]
    for i, (tr, te) in enumerate(folds):
        _disjoint(tr, te, name, f"conxuntos_kfold.dat fold {i + 1}: the train and test lines "
                                f"{2 * i + 1} and {2 * i + 2}")
    return UCIDataset(name=name, x=np.ascontiguousarray(x), y=y, n_classes=n_classes,
                      train=train, validation=validation, folds=folds)
