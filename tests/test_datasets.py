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
