"""Kernel blocks of the structured strategy: per-layer products of two blocks' states.

A block's state (``_structured._features``) holds, per factorised layer group, either
per-example Jacobians ``J (B, K, P)`` (a list: one product each) or Gram-route factors
``A`` (layer inputs) and ``G`` (gradients at the layer's output). Every term is
accumulated in place into one buffer in the layout of a matrix product, permuted to the
``outputs`` layout once at the end:

- ``"trace"``: ``(B1, B2)``, from ``J.reshape(B, K P)`` products;
- ``"full"``: ``(B1 K, B2 K)``, rows ``(example, output unit)``: the NTK as a
  ``(N K) x (N K)`` matrix, from ``J.reshape(B K, P)`` products;
- ``"diagonal"``: ``(K, B1, B2)``, a batch of products over output units.

A block against itself (``x2=None``) is a symmetric matrix in each layout, so only its upper
triangle of tiles is computed: rows of examples are halved recursively, each off-diagonal
tile is one product of the two halves, the lower triangle is its mirror image, and each
diagonal leaf is averaged with its transpose, so that the block is symmetric bit for bit.
Each halving saves a quarter, an eighth, ... of the multiply-adds (``33/64`` of the full
product after five) but adds products and copies, so a block is halved only while the
products stay large (``_depth``, ``_MIN_ROWS``): a ``syrk`` in spirit, in large GEMMs. The
deepest off-diagonal tile and the leaf beside it are one product (``_strips``).

A Gram-route layer whose output gradient is the same for every example (the last
``nn.Linear`` of a network: ``G = I``) contributes ``(A1 A2^T) ⊗ (G G^T)``; its ``K x K``
factor is computed once per block, not per pair of examples.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._blocks import add_jacobian_products, product_layout, product_shape
from ._memory import empty, zeros

__all__ = ["pair_block", "upper_tiles"]

# Measured on the benchmark's CNN and MLP (N = 256, 2 cores): full kernels (10 rows per
# example) ran 1-2 % (CNN) and 10 % (MLP) faster with leaves of 80 rows than of 160; for
# trace kernels, leaves of 64 rows against 128 made no difference beyond the +-5 % noise
# between processes, so they stay at 128.
_MAX_DEPTH = 6  # halvings of a diagonal block
_MIN_ROWS = 80  # no halving into halves of fewer rows of the product than this
_MIN_TILE_FLOPS = 1e8  # no halving into off-diagonal products smaller than this
_CHUNK = 24 << 20  # bytes of a lazily formed Jacobian per chunk of output units (see below)


def upper_tiles(n: int, rows_per_example: int, max_depth: int = _MAX_DEPTH
                ) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int]]]:
    """Off-diagonal tiles ``(i0, i1, j0, j1)`` (examples, ``i1 <= j0``) and diagonal leaves
    ``(i0, i1)`` that cover the upper triangle of an ``n x n`` block, halving at most
    ``max_depth`` times."""
    off: list[tuple[int, int, int, int]] = []
    leaves: list[tuple[int, int]] = []

    def split(lo: int, hi: int, depth: int) -> None:
        mid = (lo + hi) // 2
        if depth >= max_depth or (mid - lo) * rows_per_example < _MIN_ROWS:
            leaves.append((lo, hi))
            return
        off.append((lo, mid, mid, hi))
        split(lo, mid, depth + 1)
        split(mid, hi, depth + 1)

    split(0, n, 0)
    return off, leaves


def _tile(acc: Tensor, outputs: str, k: int, i0: int, i1: int, j0: int, j1: int) -> Tensor:
    if outputs == "full":
        return acc[i0 * k:i1 * k, j0 * k:j1 * k]
    if outputs == "diagonal":
        return acc[:, i0:i1, j0:j1]
    return acc[i0:i1, j0:j1]


def _input_gram(kind: str, a1: Tensor, a2: Tensor, dtype: torch.dtype) -> Tensor:
    """``(B1 S1, B2 S2)`` inner products of input rows (or equalities of indices)."""
    if kind == "index":
        i1, i2 = a1.reshape(-1, 1), a2.reshape(1, -1)
        return ((i1 == i2) & (i1 >= 0)).to(dtype)
    return a1.reshape(-1, a1.shape[-1]) @ a2.reshape(-1, a2.shape[-1]).T


class _Workspace:
    """One buffer, reused by the Gram-route products of a block pair: a fresh buffer of the
    kernel's size per product would page-fault anew each time."""

    def __init__(self, like: Tensor):
        self.like, self.buf = like, None

    def take(self, *shape: int) -> Tensor:
        n = math.prod(shape)
        if self.buf is None or self.buf.numel() < n:
            self.buf = empty((n,), self.like)
        return self.buf[:n].view(shape)


def _add_gram(view: Tensor, ga: Tensor, g1: Tensor, g2: Tensor, const: Tensor | None,
              outputs: str, ws: _Workspace | None = None) -> None:
    """``view += sum_{s,s'} (a_s . a'_s') (g_s . g'_s')`` given the input Gram ``ga``
    ``(T1 S1, T2 S2)`` and gradients ``G (T, S, K, out)``; ``const``: ``G G^T`` (``K x K``)
    when ``G`` is the same for every example and ``S = 1``; ``ws``: where to put the
    gradient Gram (else a new buffer)."""
    t1, r1, k, w = g1.shape
    t2, r2 = g2.shape[:2]
    if const is not None:
        if outputs == "trace":
            view.add_(ga, alpha=float(const.diagonal().sum()))
        elif outputs == "full":
            view.view(t1, k, t2, k).addcmul_(ga.view(t1, 1, t2, 1), const.view(1, k, 1, k))
        else:
            view.addcmul_(const.diagonal().view(k, 1, 1), ga.view(1, t1, t2))
        return
    ws = _Workspace(view) if ws is None else ws
    if outputs == "trace":
        gg = torch.mm(g1.reshape(t1 * r1, k * w), g2.reshape(t2 * r2, k * w).T,
                      out=ws.take(t1 * r1, t2 * r2))
        if r1 == r2 == 1:
            view.addcmul_(gg, ga)
        else:
            view.add_(gg.mul_(ga).view(t1, r1, t2, r2).sum((1, 3)))
    elif outputs == "diagonal":
        gg = torch.bmm(g1.permute(2, 0, 1, 3).reshape(k, t1 * r1, w),
                       g2.permute(2, 3, 0, 1).reshape(k, w, t2 * r2),
                       out=ws.take(k, t1 * r1, t2 * r2))
        view.add_(gg.mul_(ga).view(k, t1, r1, t2, r2).sum((2, 4)))
    else:
        gg = torch.mm(g1.reshape(t1 * r1 * k, w), g2.reshape(t2 * r2 * k, w).T,
                      out=ws.take(t1 * r1 * k, t2 * r2 * k))
        if r1 == r2 == 1:
            view.view(t1, k, t2, k).addcmul_(gg.view(t1, k, t2, k), ga.view(t1, 1, t2, 1))
        else:
            gg = gg.view(t1, r1, k, t2, r2, k).mul_(ga.view(t1, r1, 1, t2, r2, 1))
            view.view(t1, k, t2, k).add_(gg.sum((1, 4)))


def _flops(jacs: list[Tensor], terms, outputs: str) -> float:
    """Multiply-adds x 2 of the products that tiling can halve (all but constant-``G``)."""
    total = 0.0
    for j in jacs:
        b, k, p = j.shape
        total += 2.0 * b * b * k * p * (k if outputs == "full" else 1)
    for _, g1, _, const in terms:
        if const is None:
            b, r, k, w = g1.shape
            total += 2.0 * (b * r) ** 2 * k * w * (k if outputs == "full" else 1)
    return total


def _depth(flops: float) -> int:
    """Halvings worth their extra products: each off-diagonal tile of at least
    ``_MIN_TILE_FLOPS`` (about a millisecond), so that per-call overheads stay small beside
    the saving."""
    depth = 0
    while depth < _MAX_DEPTH and flops / 4 ** (depth + 1) >= _MIN_TILE_FLOPS:
        depth += 1
    return depth


def _strips(off: list[tuple[int, int, int, int]], leaves: list[tuple[int, int]]
            ) -> list[tuple[int, int, int, int]]:
    """The products that cover ``upper_tiles``: an off-diagonal tile beside the diagonal
    leaf of the same rows is one product with it (a strip ``(i0, i1, i0, j1)``): fewer,
    wider products, ~3% faster for a few hundred rows."""
    rows = set(leaves)
    tiles, merged = [], set()
    for i0, i1, j0, j1 in off:
        if (i0, i1) in rows and j0 == i1:
            tiles.append((i0, i1, i0, j1))
            merged.add((i0, i1))
        else:
            tiles.append((i0, i1, j0, j1))
    return tiles + [(i0, i1, i0, i1) for i0, i1 in leaves if (i0, i1) not in merged]


def _units_per_chunk(shape: tuple[int, int, int], itemsize: int) -> int:
    """Output units of a lazily formed Jacobian ``(B, K, P)`` per chunk of ``_CHUNK`` bytes."""
    b, k, p = shape
    return max(1, min(k, _CHUNK // (itemsize * b * p)))


def _add_products(acc: Tensor, tiles, j1: Tensor, j2: Tensor, outputs: str, k: int) -> None:
    """``acc += <J1, J2>`` over ``tiles`` of examples (``add_jacobian_products``)."""
    for r0, r1, c0, c1 in tiles:
        add_jacobian_products(_tile(acc, outputs, k, r0, r1, c0, c1), j1[r0:r1], j2[c0:c1],
                              outputs)


def pair_block(s1, s2, outputs: str, k: int) -> Tensor:
    """Kernel block of two states ``(x, grams, jacobians)`` (``x`` the block's inputs,
    ``grams`` a list of ``(kind, A, G, G G^T or None)``, ``jacobians`` a list of
    ``(B, K, P_i)`` or of ``LazyJacobian`` factors) in the ``outputs`` layout; ``s2 is s1``:
    a block against itself."""
    x1, grams1, jacs1 = s1
    x2, grams2, jacs2 = s2
    same = s1 is s2
    b1, b2 = x1.shape[0], x2.shape[0]
    acc = zeros(product_shape(b1, b2, k, outputs), x1)
    terms = []
    for (kind, a1, g1, c1), (_, a2, g2, c2) in zip(grams1, grams2, strict=True):
        # G G^T factorises only when both blocks share the same constant G.
        same_g = c1 is not None and c2 is not None and torch.equal(g1[0], g2[0])
        terms.append((_input_gram(kind, a1, a2, acc.dtype), g1, g2, c1 if same_g else None))
    if same:
        off, leaves = upper_tiles(b1, k if outputs == "full" else 1,
                                  _depth(_flops(jacs1, terms, outputs)))
        tiles = _strips(off, leaves)
    else:
        off, tiles = [], [(0, b1, 0, b2)]
    ws, lazy1, lazy2 = _Workspace(acc), _Workspace(acc), _Workspace(acc)
    for jac1, jac2 in zip(jacs1, jacs2, strict=True):
        if isinstance(jac1, Tensor):
            _add_products(acc, tiles, jac1, jac2, outputs, k)
            continue
        # A LazyJacobian: formed now, in a reused buffer; without cross terms between output
        # units (trace, diagonal), a few units at a time into a small one (first writes to
        # fresh memory cost page faults, about as much as forming the Jacobian).
        step = k if outputs == "full" else _units_per_chunk(jac1.shape, acc.element_size())
        for u in range(0, k, step):
            units = slice(u, min(k, u + step))
            j1 = jac1.form(lazy1.take(b1 * step * jac1.shape[2]), units)
            j2 = j1 if same else jac2.form(lazy2.take(b2 * step * jac2.shape[2]), units)
            _add_products(acc if outputs != "diagonal" else acc[units], tiles, j1, j2,
                          outputs, k)
    for ga, g1, g2, const in terms:
        if const is not None:
            continue
        r1, r2 = g1.shape[1], g2.shape[1]
        for i0, i1, j0, j1 in tiles:
            _add_gram(_tile(acc, outputs, k, i0, i1, j0, j1), ga[i0 * r1:i1 * r1, j0 * r2:j1 * r2],
                      g1[i0:i1], g2[j0:j1], None, outputs, ws)
    for ga, g1, g2, const in terms:  # elementwise terms, over the whole block at once
        if const is not None:
            _add_gram(acc, ga, g1, g2, const, outputs)
    if same:  # exactly symmetric: the lower triangle mirrors the upper, leaves are averaged
        for i0, i1, j0, j1 in off:
            _tile(acc, outputs, k, j0, j1, i0, i1).copy_(
                _tile(acc, outputs, k, i0, i1, j0, j1).transpose(-1, -2))
        for i0, i1 in leaves:
            leaf = _tile(acc, outputs, k, i0, i1, i0, i1)
            leaf.copy_((leaf + leaf.transpose(-1, -2)).mul_(0.5))
    return product_layout(acc, outputs, k)
