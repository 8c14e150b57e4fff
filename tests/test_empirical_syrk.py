"""ntkit.empirical._syrk: the BLAS symmetric rank-k update against a plain product."""

from __future__ import annotations

import pytest
import torch

from ntkit.empirical._syrk import add_syrk_, mirror_upper_, syrk_supported


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_add_syrk_updates_the_upper_triangle_only(dtype, tol):
    # acc += M M^T on and above the diagonal, the entries below untouched, for a
    # non-contiguous M (a column slice): equal to the product up to rounding (relative
    # 1e-12 in float64, 1e-5 in float32 for sums of 300 products).
    g = torch.Generator().manual_seed(0)
    m = torch.randn(7, 400, generator=g, dtype=dtype)[:, 50:350]
    start = torch.randn(7, 7, generator=g, dtype=dtype)
    acc = start.clone()
    add_syrk_(acc, m)
    expected = start + m @ m.T
    upper = torch.ones(7, 7, dtype=torch.bool).triu()
    err = (acc - expected)[upper].abs().max() / expected.abs().max()
    assert err < tol
    assert torch.equal(acc[~upper], start[~upper])
    acc[~upper] = 0.0
    before = acc.clone()
    sym = mirror_upper_(acc)
    assert sym is acc and torch.equal(sym, sym.T) and torch.equal(sym[upper], before[upper])


def test_syrk_is_used_for_cpu_floats_on_one_thread_only():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert syrk_supported(torch.zeros(1, dtype=torch.float64))
        assert not syrk_supported(torch.zeros(1, dtype=torch.complex128))
        torch.set_num_threads(2)
        assert not syrk_supported(torch.zeros(1, dtype=torch.float64))
    finally:
        torch.set_num_threads(threads)
