"""TensorSRHT and the fast Walsh-Hadamard transform (ntkit.features._sketch)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.linalg import hadamard

from ntkit.features._sketch import draw_tensor_srht, fwht, tensor_srht


def test_fwht_is_the_sylvester_hadamard_product():
    x = torch.randn(3, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h = torch.from_numpy(hadamard(16).astype("float64"))
    torch.testing.assert_close(fwht(x), x @ h, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="power-of-two"):
        fwht(torch.ones(2, 6))


@pytest.mark.parametrize("p, q, m", [(5, 3, 4), (3, 2, 20)])  # one block; several blocks
def test_tensor_srht_is_unbiased_for_the_product_of_inner_products(p, q, m):
    # E[Q(t ⊗ s) . Q(t' ⊗ s')] = (t . t')(s . s'): mean over 1000 draws within 4 standard
    # errors, for two pairs of inputs (one of them t = t', s = s').
    g = torch.Generator().manual_seed(1)
    t = torch.randn(2, p, dtype=torch.float64, generator=g)
    s = torch.randn(2, q, dtype=torch.float64, generator=g)
    exact = (t @ t.T) * (s @ s.T)
    draws = 1000
    est = torch.stack([(lambda z: z @ z.T)(tensor_srht(t, s, **draw_tensor_srht(p, q, m, g)))
                       for _ in range(draws)])
    mean, se = est.mean(0), est.std(0) / math.sqrt(draws)
    assert bool(((mean - exact).abs() <= 4 * se).all()), (mean - exact) / se
    assert est.shape[1:] == (2, 2)
