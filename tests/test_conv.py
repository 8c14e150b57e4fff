"""Convolution, pooling and Flatten (``layers/_conv.py``, ``_pool.py``, ``_shape.py``).

Closed forms on tiny inputs written out by hand, the spatial kernel against Monte Carlo from
the finite twins position by position, identities between layouts and layers, and the whole
kernel contract (``_contract.py``) on image networks of every padding, stride and pooling mode.
"""

from __future__ import annotations

import pytest
import torch

from _contract import Case, KernelContract, image_inputs
from _reference import mean_and_se
from ntkit import layers as L  # noqa: N812 - the documented alias

pytestmark = pytest.mark.usefixtures("single_thread")


def _seq_inputs():
    return image_inputs((2, 7))


def _small_inputs():
    return image_inputs((2, 4, 4))


def _big_inputs():
    return image_inputs((2, 6, 6))


def _std_head():
    return L.Dense(1, W_std=0.8, b_std=0.2, parametrization="standard")


def _conv(w, f=(3, 3), **kw):
    kw.setdefault("W_std", 1.3)
    kw.setdefault("b_std", 0.2)
    return L.Conv(w, f, **kw)


# Image networks end in Flatten or a global pool, so that the Monte Carlo of the contract
# (outputs F of shape (N, m)) sees every position: Flatten the same-position covariances,
# GlobalAvgPool all pairs of positions. Networks with a hidden-to-hidden convolution cost
# 9 width^2 per position: the residual case (conv-relu-conv) uses widths 8 and 128 (the same factor 16 between them, so the
# same expected error ratio of 4), four times the seeds, and 4x4 images.
CASES = [
    Case("conv-same-relu-flatten",
         lambda w: L.serial(_conv(w), L.ReLU(), L.Flatten()), inputs=image_inputs),
    Case("conv-valid-stride2-relu-gap",
         lambda w: L.serial(_conv(w, padding="VALID", strides=2), L.ReLU(), L.GlobalAvgPool()),
         inputs=_big_inputs),
    Case("conv-circular-2x3-relu-gsp",
         lambda w: L.serial(_conv(w, (2, 3), padding="CIRCULAR", b_std=None), L.ReLU(),
                            L.GlobalSumPool()),
         inputs=image_inputs),
    Case("conv-relu-avgpool-same-stride2-flatten",
         lambda w: L.serial(_conv(w), L.ReLU(), L.AvgPool((2, 2), strides=2, padding="SAME"),
                            L.Flatten()),
         inputs=image_inputs),
    Case("conv-relu-sumpool-circular-gap",
         lambda w: L.serial(_conv(w, strides=(1, 2)), L.ReLU(),
                            L.SumPool((3, 2), padding="CIRCULAR"), L.GlobalAvgPool()),
         inputs=image_inputs),
    Case("conv-standard-relu-gap",
         lambda w: L.serial(_conv(w, parametrization="standard"), L.ReLU(), L.GlobalAvgPool()),
         head=_std_head, inputs=image_inputs),
    Case("conv1d-same-relu-avgpool-flatten",
         lambda w: L.serial(_conv(w, (3,)), L.ReLU(), L.AvgPool((2,)), L.Flatten()),
         inputs=_seq_inputs),
    Case("conv-residual-gap",
         lambda w: L.serial(_conv(w), L.FanOut(2),
                            L.parallel(L.serial(L.ReLU(), _conv(w, W_std=1.1)), L.Identity()),
                            L.FanInSum(), L.ReLU(), L.AvgPool((2, 2)), L.Flatten()),
         widths=(8, 128), seed_factor=4, inputs=_small_inputs),
]


class TestConvContract(KernelContract):
    @pytest.fixture(params=CASES, ids=repr)
    def case(self, request):
        return request.param

    @pytest.fixture
    def x(self, case):
        return case.inputs()[0].clone()

    @pytest.fixture
    def x2(self, case):
        return case.inputs()[1].clone()
