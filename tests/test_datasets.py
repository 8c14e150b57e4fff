import math
import os

import numpy as np
import pytest
import torch

from _uci_format import write_set as _write_set
from ntkit.datasets import UCIFormatError, load_digits, load_uci


def test_digits_shapes_and_normalisation():
    s = load_digits(n_train=1000, seed=0)
    assert s.x_train.shape == (1000, 64) and s.x_test.shape == (797, 64)
    assert s.x_train.dtype == torch.float64
    # Each image is scaled to norm sqrt(64) so that K0 = x.x/d has unit diagonal (to rounding).
    norms = torch.linalg.norm(torch.cat([s.x_train, s.x_test]), dim=1)
    assert torch.allclose(norms, torch.full_like(norms, math.sqrt(64)), rtol=1e-12)
    # Stratified: every class keeps its share of the 1797 images within one example.
    counts = torch.bincount(s.y_train, minlength=10).double()
    total = counts + torch.bincount(s.y_test, minlength=10).double()
    assert (counts - total * 1000 / 1797).abs().max() <= 1.0


def test_digits_seed_changes_split_and_dtype_follows():
    a = load_digits(seed=0, dtype=torch.float32)
    b = load_digits(seed=1, dtype=torch.float32)
    assert a.x_train.dtype == torch.float32
    assert not torch.equal(a.y_train, b.y_train)


@pytest.mark.parametrize("n_train", [0, 5, 1790])
def test_digits_rejects_bad_split(n_train):
    with pytest.raises(ValueError, match="n_train"):
        load_digits(n_train=n_train)


def test_digits_image_scaling_centres_each_image():
    s = load_digits(n_train=100, scaling="image")
    x = torch.cat([s.x_train, s.x_test])
    # Each image centred on its own mean, then scaled to norm sqrt(64): row means 0 and row
    # mean squares 1, to rounding.
    assert x.mean(1).abs().max() < 1e-12
    assert torch.allclose((x**2).mean(1), torch.ones(len(x), dtype=x.dtype), rtol=1e-12)
    # Same stratified split as the default scaling: only the inputs differ.
    assert torch.equal(s.y_train, load_digits(n_train=100).y_train)
    with pytest.raises(ValueError, match="scaling"):
        load_digits(scaling="channel")


# -- the UCI folder format, on small folders written here -----------------------------------------

def test_synthetic_set_loads(tmp_path):
    ds = load_uci(_write_set(tmp_path))
    assert ds.name == "toy" and ds.x.shape == (12, 2) and ds.n_classes == 2
    assert ds.train.tolist() == [0, 1, 2, 3, 4, 5] and len(ds.folds) == 4
    assert ds.folds[1][1].tolist() == [1, 5, 9]


def test_train_validation_overlap_is_rejected(tmp_path):
    """Defect 5.10: a validation line equal to the train line was accepted."""
    idx = np.arange(6)
    folder = _write_set(tmp_path, split=(idx, idx))
    with pytest.raises(UCIFormatError, match=r"'toy'.*conxuntos\.dat: the train and validation "
                                             r"lines share 6 indices"):
        load_uci(folder)


def test_fold_train_test_overlap_is_rejected(tmp_path):
    """Defect 5.10: a fold whose test indices repeat its train indices (here 2 of them) was
    accepted, and the benchmark then scored samples it had trained on."""
    folds = [(np.arange(3, 12), np.arange(0, 3)) for _ in range(4)]
    folds[2] = (np.arange(3, 12), np.array([0, 3, 4]))
    folder = _write_set(tmp_path, folds=folds)
    with pytest.raises(UCIFormatError, match=r"'toy'.*conxuntos_kfold\.dat fold 3: the train "
                                             r"and test lines 5 and 6 share 2 indices"):
        load_uci(folder)


@pytest.mark.parametrize("fich1", ["../../../../etc/passwd", "/etc/passwd", "sub/../../x.dat"])
def test_fich1_outside_the_folder_is_rejected(tmp_path, fich1):
    """Defect 5.7: fich1= in the metadata made the loader read any file."""
    folder = _write_set(tmp_path, fich1=fich1)
    with pytest.raises(UCIFormatError, match=r"'toy'.*fich1= .* must be a relative path inside "
                                             r"the set folder"):
        load_uci(folder)


def test_symlink_out_of_the_folder_is_rejected(tmp_path):
    """Defect 5.7: a data file (or a folder on its path) linking outside the set folder."""
    outside = _write_set(tmp_path / "elsewhere")
    folder = _write_set(tmp_path, fich1="link/toy_R.dat")
    (folder / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UCIFormatError, match=r"fich1= 'link/toy_R\.dat' resolves outside"):
        load_uci(folder)
    folder = _write_set(tmp_path / "b")
    (folder / "toy_R.dat").unlink()
    (folder / "toy_R.dat").symlink_to(outside / "toy_R.dat")
    with pytest.raises(UCIFormatError, match=r"fich1= 'toy_R\.dat' resolves outside"):
        load_uci(folder)
    # A link that stays inside the folder is fine.
    folder = _write_set(tmp_path / "c", fich1="alias.dat")
    (folder / "alias.dat").symlink_to(folder / "toy_R.dat")
    assert load_uci(folder).n == 12


def test_only_bounded_regular_files_are_read(tmp_path, monkeypatch):
    """Defect 5.7: a FIFO or a huge file named by the metadata is refused, not read."""
    import ntkit.datasets as D

    folder = _write_set(tmp_path, fich1="pipe")
    os.mkfifo(folder / "pipe")  # opening it for reading would block without O_NONBLOCK
    with pytest.raises(UCIFormatError, match=r"data file pipe is not a regular file"):
        load_uci(folder)
    folder = _write_set(tmp_path / "big")
    size = (folder / "toy_R.dat").stat().st_size
    monkeypatch.setitem(D.UCI_MAX_BYTES, "data", size - 1)
    over = rf"data file toy_R\.dat is over the limit of {size - 1} bytes"
    with pytest.raises(UCIFormatError, match=over):
        load_uci(folder)
    monkeypatch.setitem(D.UCI_MAX_BYTES, "data", size)
    assert load_uci(folder).n == 12
