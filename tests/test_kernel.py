"""The ``Kernel`` record (``kernel.py``) and the blocked kernel driver (``layers/_compute.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntkit import Kernel
from ntkit import layers as L  # noqa: N812 - the documented alias

pytestmark = pytest.mark.usefixtures("single_thread")


def _net():
    return L.serial(L.Dense(8, W_std=1.4, b_std=0.2), L.ReLU(), L.Dense(8, W_std=1.2),
                    L.Erf(), L.Dense(1))


# --------------------------------------------------------------------------------------------
# The input kernel.


def test_input_kernel_closed_form(x, x2):
    # K0 = x.x'/d, cov = |x|^2/d, and no parameters yet: Theta is a 0-d zero.
    k = Kernel.from_inputs(x, x2)
    torch.testing.assert_close(k.nngp, x @ x2.T / 4, rtol=1e-15, atol=1e-16)
    torch.testing.assert_close(k.cov1, (x * x).sum(1) / 4, rtol=1e-15, atol=0)
    torch.testing.assert_close(k.cov2, (x2 * x2).sum(1) / 4, rtol=1e-15, atol=0)
    assert k.ntk.shape == () and float(k.ntk) == 0.0
    assert (k.shape1, k.shape2, k.x1_is_x2, k.is_gaussian) == ((6, 4), (3, 4), False, False)
    assert Kernel.from_inputs(x, x2, ntk=False).ntk is None


def test_input_kernel_against_itself_is_exactly_symmetric():
    # A Gram matrix from BLAS need not be exactly symmetric (blocked summation); the record
    # mirrors it and puts cov1 on the diagonal bit for bit, so that c = 1 there exactly.
    x = torch.randn(100, 37, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    k = Kernel.from_inputs(x)
    assert torch.equal(k.nngp, k.nngp.T)
    assert torch.equal(k.nngp.diagonal(), k.cov1)
    assert k.cov2 is None and k.x1_is_x2
    torch.testing.assert_close(k.nngp, x @ x.T / 37, rtol=1e-14, atol=1e-15)


def test_input_kernel_diagonal(x):
    k = Kernel.from_inputs(x, diagonal=True)
    torch.testing.assert_close(k.nngp, (x * x).sum(1) / 4, rtol=1e-15, atol=0)
    assert torch.equal(k.nngp, k.cov1) and k.diagonal and k.cov2 is None


def test_variances_broadcast_against_nngp(x, x2):
    # var1 is (N1, 1), var2 is (1, N2): the variance of x1_i and of x2_j for entry (i, j).
    k = Kernel.from_inputs(x, x2)
    assert k.var1.shape == (6, 1) and k.var2.shape == (1, 3)
    torch.testing.assert_close((k.var1 * k.var2)[4, 2], k.cov1[4] * k.cov2[2], rtol=0, atol=0)
    same = Kernel.from_inputs(x)
    torch.testing.assert_close(same.var2[0], same.cov1, rtol=0, atol=0)
    diag = Kernel.from_inputs(x, diagonal=True)
    assert diag.var1.shape == diag.var2.shape == (6,)


def test_replace_returns_a_new_record(x):
    k = Kernel.from_inputs(x)
    k2 = k.replace(nngp=2 * k.nngp, is_gaussian=True)
    torch.testing.assert_close(k2.nngp, 2 * k.nngp, rtol=0, atol=0)
    assert k2.is_gaussian and not k.is_gaussian  # the original is untouched
    assert "nngp=(6, 6)" in repr(k2) and "is_gaussian=True" in repr(k2)


# --------------------------------------------------------------------------------------------
# Layer.kernel: inputs, outputs, blocks.


def test_equal_second_batch_is_the_same_inputs(x):
    # x2 equal to x1 (a copy) is recognised: the symmetric path, cov2 None, the same numbers.
    net = _net()
    k_same, k_copy = net.kernel(x), net.kernel(x, x.clone())
    assert k_copy.x1_is_x2 and k_copy.cov2 is None
    assert torch.equal(k_copy.nngp, k_same.nngp) and torch.equal(k_copy.ntk, k_same.ntk)


def test_numpy_inputs_match_tensors(x, x2):
    # numpy inputs become the same float64 tensors: the same computation, bit for bit.
    net = _net()
    a, b = net.kernel(x.numpy(), x2.numpy()), net.kernel(x, x2)
    assert torch.equal(a.nngp, b.nngp) and torch.equal(a.ntk, b.ntk)


@pytest.mark.parametrize("get, has_ntk", [("nngp", False), ("ntk", True), (("nngp", "ntk"), True)])
def test_get_selects_kernels(x, get, has_ntk):
    # The NNGP is always computed (the NTK recursion needs it) and identical either way (the
    # same recursion on the same numbers: bit for bit).
    k = _net().kernel(x, get=get)
    assert (k.ntk is not None) == has_ntk
    assert torch.equal(k.nngp, _net().kernel(x).nngp)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 100])
def test_any_block_size_gives_the_same_kernel(batch_size):
    # Seven inputs in blocks of 1 to 100 (dividing 7 or not, or larger): the same kernel up
    # to summation order in the Gram matrices, exactly symmetric, exact diagonal (mirrored
    # blocks and cov1 written on the diagonal: bit for bit by construction).
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 3, dtype=torch.float64, generator=g)
    x2 = torch.randn(4, 3, dtype=torch.float64, generator=g)
    net = _net()
    whole, blocked = net.kernel(x), net.kernel(x, batch_size=batch_size)
    torch.testing.assert_close(blocked.nngp, whole.nngp, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(blocked.ntk, whole.ntk, rtol=1e-13, atol=1e-15)
    assert torch.equal(blocked.nngp, blocked.nngp.T) and torch.equal(blocked.ntk, blocked.ntk.T)
    assert torch.equal(blocked.nngp.diagonal(), blocked.cov1)
    cross, cross_blocked = net.kernel(x, x2), net.kernel(x, x2, batch_size=batch_size)
    torch.testing.assert_close(cross_blocked.ntk, cross.ntk, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(cross_blocked.cov1, cross.cov1, rtol=1e-13, atol=0)
    torch.testing.assert_close(cross_blocked.cov2, cross.cov2, rtol=1e-13, atol=0)
    diag = net.kernel(x, diagonal=True, batch_size=batch_size)
    torch.testing.assert_close(diag.ntk, whole.ntk.diagonal(), rtol=1e-14, atol=0)
    assert blocked.shape1 == (7, 1) and cross_blocked.shape2 == (4, 1)


def test_parameter_free_network_has_zero_ntk(x):
    # Only an identity: the NNGP is the input kernel and there is nothing to train.
    k = L.serial(L.Identity()).kernel(x)
    torch.testing.assert_close(k.nngp, x @ x.T / 4, rtol=1e-14, atol=1e-15)
    assert k.ntk.shape == (6, 6) and int((k.ntk != 0).sum()) == 0


def test_output_dtype_follows_inputs(x):
    for dtype in (torch.float32, torch.float64):
        k = _net().kernel(x.to(dtype))
        assert k.nngp.dtype == k.ntk.dtype == k.cov1.dtype == dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu(x, x2):
    # Same formulas on another device: float64 rounding differences only.
    for net in (_net(), L.serial(L.Dense(4), L.Elementwise(torch.tanh), L.Dense(1))):
        cpu, gpu = net.kernel(x, x2), net.kernel(x.cuda(), x2.cuda())
        assert gpu.nngp.device.type == "cuda"
        torch.testing.assert_close(gpu.nngp.cpu(), cpu.nngp, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(gpu.ntk.cpu(), cpu.ntk, rtol=1e-12, atol=1e-14)


def test_numpy_float32_input_keeps_its_dtype():
    x = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)
    assert _net().kernel(x).nngp.dtype == torch.float32
