"""Shared inputs for the kernel tests: small, float64, fixed seeds (see ``_contract.inputs``)."""

from __future__ import annotations

import pytest
import torch

from _contract import inputs


@pytest.fixture
def x() -> torch.Tensor:
    """``(6, 4)`` float64 inputs; row 5 is a small perturbation of row 0 (a pair near c = 1)."""
    return inputs()[0].clone()


@pytest.fixture
def x2() -> torch.Tensor:
    """``(3, 4)`` float64 inputs independent of ``x``."""
    return inputs()[1].clone()


@pytest.fixture
def single_thread():
    """Run a test on one intra-op thread: the tensors here are tiny, and on the 2-core CI
    torch's thread pool costs far more than it saves (50x on the Monte Carlo twins)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
