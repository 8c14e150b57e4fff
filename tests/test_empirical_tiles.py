"""ntkit.empirical, strategy="structured": the symmetric tiling of a block against itself.

Real models tile only when the products are large (billions of FLOPs), so these tests lower
the thresholds of ``ntkit.empirical._pairs`` to tile small models as deeply as possible and
compare with ``strategy="jacobian"`` (itself checked against an explicit gradient loop).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ntkit.empirical import _blocks, _pairs, _structured, empirical_ntk

F64 = torch.float64


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3)).to(F64)


def _cnn() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(3, 4, 3, padding=1, groups=1), nn.Tanh(),
                         nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3), nn.Tanh(), nn.Linear(3, 2)).to(F64)


def _sequence() -> nn.Module:
    """Dense layers on (N, S, features): Gram-route rows S > 1."""
    torch.manual_seed(4)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(5, 4)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            return self.head(torch.tanh(self.dense(x)).mean(1))

    return Net().to(F64)


CASES = {"mlp": (_mlp, lambda n, g: torch.randn(n, 4, dtype=F64, generator=g)),
         "cnn": (_cnn, lambda n, g: torch.randn(n, 2, 4, 4, dtype=F64, generator=g)),
         "sequence": (_sequence, lambda n, g: torch.randn(n, 3, 5, dtype=F64, generator=g))}


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture
def deep_tiles(monkeypatch):
    monkeypatch.setattr(_pairs, "_MIN_TILE_FLOPS", 0.0)
    monkeypatch.setattr(_pairs, "_MIN_ROWS", 1)


@pytest.mark.parametrize("outputs", ["trace", "full", "diagonal"])
def test_triangle_tiles_cover_the_upper_triangle_once_and_rebuild_the_block(outputs):
    k = 3
    rows = k if outputs == "full" else 1
    for n in (1, 2, 7, 13, 64):
        for depth in range(6):
            if n >> depth == 0:
                continue
            # A symmetric block in the ``outputs`` layout, and its product layout.
            theta = torch.randn(_blocks.new_result(n, n, k, outputs, torch.ones(1)).shape,
                                generator=torch.Generator().manual_seed(n + depth), dtype=F64)
            theta = (theta + _blocks.transpose_block(theta, outputs)) / 2
            product = (theta.permute(0, 2, 1, 3).reshape(n * k, n * k) if outputs == "full"
                       else theta.permute(2, 0, 1) if outputs == "diagonal" else theta)
            grid = _pairs._Triangle(n, k, outputs, depth, theta)
            cover = torch.zeros(n, n, dtype=torch.int64)
            for i0, i1, j0, j1, view in grid.tiles():
                cover[i0:i1, j0:j1] += 1
                view.copy_(product[..., i0 * rows:i1 * rows, j0 * rows:j1 * rows])
            # No cell twice, every pair {i, j} at least once (leaves and the strip of the
            # last n mod 2^depth examples hold both (i, j) and (j, i) of some pairs).
            assert int(cover.max()) == 1
            assert bool(((cover + cover.T) > 0).all())
            assert len(grid.tiles()) == 2 ** (depth + 1) - 1 + (n % 2 ** depth > 0)
            # Exact: the tiles are copies of theta's entries, no arithmetic.
            assert torch.equal(grid.result(), theta)  # each tile in its place


# narrow=1: every convolution weight a LazyJacobian, formed one output unit at a time
# (chunks of 1 byte) for trace and diagonal.
@pytest.mark.parametrize("narrow", [1, 1024])
@pytest.mark.parametrize("outputs", ["trace", "full", "diagonal"])
@pytest.mark.parametrize("name", list(CASES))
def test_tiled_blocks_match_the_jacobian_strategy(deep_tiles, monkeypatch, name, outputs,
                                                  narrow):
    monkeypatch.setattr(_structured, "_NARROW", narrow)
    if narrow == 1:
        monkeypatch.setattr(_pairs, "_CHUNK", 1)
    make, inputs = CASES[name]
    model = make()
    x = inputs(13, torch.Generator().manual_seed(1))
    reference = empirical_ntk(model, x, strategy="jacobian", outputs=outputs)
    for batch_size in (None, 5):  # one block; blocks of 5, 5, 3 (diagonal ones tiled)
        theta = empirical_ntk(model, x, strategy="structured", outputs=outputs,
                              batch_size=batch_size)
        assert _rel(theta, reference) < 1e-10
        # Exact on any machine: the lower blocks are mirrored copies of the upper ones (and a
        # diagonal block is averaged with its transpose, a commutative elementwise sum).
        assert torch.equal(theta, theta.transpose(0, 1) if outputs == "trace"
                           else theta.permute(1, 0, 3, 2) if outputs == "full"
                           else theta.permute(1, 0, 2))
    x2 = inputs(6, torch.Generator().manual_seed(2))
    assert _rel(empirical_ntk(model, x, x2, strategy="structured", outputs=outputs),
                empirical_ntk(model, x, x2, strategy="jacobian", outputs=outputs)) < 1e-10


@pytest.mark.parametrize(("outputs", "shape"), [("trace", (11, 11)), ("full", (11, 11, 3, 3)),
                                                ("diagonal", (11, 11, 3))])
def test_symmetrize_in_place_blocks_equals_the_whole_average(outputs, shape):
    theta = torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    transpose = _blocks.transpose_block(theta, outputs)
    expected = (theta + transpose) * 0.5
    for block_elements in (1, 20, 10**6):  # blocks of 1, 4 or 2, and 11 examples
        got = _blocks.symmetrize_(theta.clone(), outputs, block_elements)
        # Bit for bit, diagonal blocks included: both are the same elementwise operations
        # ((a + b) * 0.5, each correctly rounded), only grouped into blocks differently.
        assert torch.equal(got, expected)
