import numpy as np
import pytest
import torch

from ntkit.solve import centred_one_hot, kernel_ridge


def test_kernel_ridge_equals_a_dense_solve():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 5, dtype=torch.float64, generator=g)
    k = a @ a.T  # rank 5: singular without the ridge
    y = torch.randn(20, 3, dtype=torch.float64, generator=g)
    coef = kernel_ridge(k, y, alpha=1e-3)
    want = np.linalg.solve(k.numpy() + 1e-3 * np.mean(np.diag(k.numpy())) * np.eye(20), y.numpy())
    # Both are backward-stable solves of a system with condition ~1e4: agreement to ~1e-11.
    assert np.allclose(coef.numpy(), want, rtol=1e-9, atol=1e-12)
    assert kernel_ridge(k, y[:, 0], alpha=1e-3).shape == (20, 1)


def test_kernel_ridge_rejects_an_indefinite_kernel():
    k = torch.diag(torch.tensor([1.0, -5.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="alpha"):
        kernel_ridge(k, torch.ones(2, dtype=torch.float64), alpha=0.0)


def test_centred_one_hot():
    t = centred_one_hot(torch.tensor([0, 2, 1]), 3)
    assert torch.allclose(t.sum(1), torch.zeros(3, dtype=t.dtype), atol=1e-15)  # centred
    assert t.argmax(1).tolist() == [0, 2, 1]
