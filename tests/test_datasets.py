import math

import pytest
import torch

from ntkit.datasets import load_digits


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
