"""Kernel blocks of the structured strategy: per-layer products of two blocks' states.

A block's state (``_structured._features``) holds, per factorised layer group, either
per-example Jacobians ``J (B, K, P)`` (a list: one product each) or Gram-route factors
``A`` (layer inputs) and ``G`` (gradients at the layer's output). Every term is
accumulated in place into buffers in the layout of a matrix product, which become the
``outputs`` layout once at the end:

- ``"trace"``: ``(B1, B2)``, from ``J.reshape(B, K P)`` products;
- ``"full"``: ``(B1 K, B2 K)``, rows ``(example, output unit)``: the NTK as a
  ``(N K) x (N K)`` matrix, from ``J.reshape(B K, P)`` products;
- ``"diagonal"``: ``(K, B1, B2)``, a batch of products over output units.

A block against itself (``x2=None``) is a symmetric matrix in each layout, so only its upper
triangle is computed (``_Triangle``): its rows of examples are halved ``depth`` times, each
diagonal block's two halves make one off-diagonal tile, the tiles of one level are one
batched product (``baddbmm``: MKL runs its GEMMs one per thread, faster than splitting
small ones between threads), and the output is written once from the tiles: the lower
triangle as the mirror image of the upper, each diagonal leaf averaged with its transpose,
so that the block is symmetric bit for bit. Each halving saves a quarter, an eighth, ... of
the multiply-adds (``33/64`` of the full product after five) but makes smaller GEMMs, so a
block is halved only while the leaves keep ``_MIN_ROWS`` rows and the tiles are large
(``_depth``): a ``syrk`` in spirit, in large GEMMs. On the CPU while torch runs one thread,
the Jacobians' products go to BLAS ``syrk`` itself (``_syrk``) and the tiles hold only the
Gram-route terms.

A Gram-route layer whose output gradient is the same for every example (the last
``nn.Linear`` of a network: ``G = I``) contributes ``(A1 A2^T) ⊗ (G G^T)``; its ``K x K``
factor is computed once per block, not per pair of examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._alloc import empty, zeros
from ._blocks import (
    add_jacobian_products,
    new_result,
    product_layout,
    product_shape,
    transpose_block,
)
from ._syrk import add_syrk_, mirror_upper_, syrk_supported

__all__ = ["BlockState", "GramFactor", "pair_block"]

# Chosen on the benchmark's CNN (N = 256): a chunk of its Jacobian against itself was about
# 10 % slower with 128-row leaves than with 64, 32 or 16, and whole kernels did not differ
# beyond the noise between calls for trace leaves of 64 or 32 rows and full leaves of 160, 80
# or 40 (figures in bench/RESULTS.md).
_MAX_DEPTH = 6  # halvings of a diagonal block
_MIN_ROWS = 32  # no halving into leaves of fewer rows of the product than this
_MIN_TILE_FLOPS = 1e8  # no halving into off-diagonal products smaller than this
_CHUNK = 24 << 20  # bytes of a lazily formed Jacobian per chunk of output units (see below)


@dataclass
class GramFactor:
    """A Gram-route layer group of a block: ``kind`` (``"rows"`` or ``"index"``), its input
    rows ``a`` (``(B, S, in)``, or indices ``(B, S)``), output gradients ``g``
    ``(B, S, K, out)``, and ``const``: ``G G^T`` (``K x K``) when ``G`` is the same for
    every example, else ``None``."""

    kind: str
    a: Tensor
    g: Tensor
    const: Tensor | None


@dataclass
class BlockState:
    """A block of ``n`` examples: its Gram-route factors and its Jacobians ``(B, K, P_i)``
    (tensors or ``LazyJacobian`` factors); ``like``: a tensor of the computation's dtype and
    device."""

    n: int
    like: Tensor
    grams: list[GramFactor]
    jacs: list


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


def _rows(k: int, outputs: str) -> int:
    """Product rows per example: ``(example, output unit)`` for ``"full"``, else one."""
    return k if outputs == "full" else 1


def _depth(n: int, rows: int, flops: float) -> int:
    """Halvings of a block of ``n`` examples (``rows`` product rows each) against itself:
    leaves of at least ``_MIN_ROWS`` rows, off-diagonal tiles of at least
    ``_MIN_TILE_FLOPS`` (about a millisecond) given the products' total ``flops``."""
    depth = 0
    while (depth < _MAX_DEPTH and (n >> (depth + 1)) * rows >= _MIN_ROWS
           and flops / 4 ** (depth + 1) >= _MIN_TILE_FLOPS):
        depth += 1
    return depth


class _Rectangle:
    """Two different blocks: the whole product, one tile."""

    def __init__(self, b1: int, b2: int, k: int, outputs: str, like: Tensor):
        self.b1, self.b2, self.k, self.outputs = b1, b2, k, outputs
        self.acc = zeros(product_shape(b1, b2, k, outputs), like)

    def tiles(self) -> list[tuple[int, int, int, int, Tensor]]:
        """``(i0, i1, j0, j1, view)``: examples ``i0:i1`` against ``j0:j1``, and where their
        products are accumulated (in the product layout)."""
        return [(0, self.b1, 0, self.b2, self.acc)]

    def add_products(self, j1: Tensor, j2: Tensor, units: slice) -> None:
        """``+= <J1, J2>`` over the output units ``units`` of Jacobians ``(B, K', P)``."""
        add_jacobian_products(self.acc[units] if self.outputs == "diagonal" else self.acc, j1,
                              j2, self.outputs)

    def result(self) -> Tensor:
        """The block in the ``outputs`` layout (a view)."""
        return product_layout(self.acc, self.outputs, self.k)


class _Triangle:
    """A block of ``n`` examples against itself, symmetric, as batches of equal tiles.

    With ``r = n >> depth``: level ``l < depth`` holds the ``2^l`` off-diagonal tiles that
    pair the two halves of each diagonal block of ``2 h`` examples, ``h = r 2^(depth-l-1)``;
    then ``2^depth`` diagonal leaves of ``r`` examples; the last ``n - r 2^depth`` examples
    (fewer than ``2^depth``) are one strip against all ``n``. Each level is a contiguous
    buffer ``(tiles, *lead, H, H)`` (``lead = (K,)`` for ``"diagonal"``, else none; ``H = h
    rows``, ``rows = K`` for ``"full"``, else 1), so that one batched product adds to all
    of its tiles. ``result`` writes the block: upper tiles, their mirror images, and the
    leaves averaged with their transposes, so that it is symmetric bit for bit.

    Kept because it pays: on ``bench/empirical_ntk.py``'s CNN at N = 256 (float32) the
    diagonal blocks' products execute 56 % (``"trace"``) and 52 % (``"full"``) of the FLOPs
    of the plain path (depth 0: the whole product, averaged with its transpose), with
    the same result; its time against the plain path (``bench/empirical_triangle.py``, an
    interleaved A/B) is in bench/RESULTS.md.
    """

    def __init__(self, n: int, k: int, outputs: str, depth: int, like: Tensor,
                 syrk: bool = False):
        self.n, self.k, self.outputs, self.like = n, k, outputs, like
        self.rows = rows = _rows(k, outputs)
        # ``syrk``: Jacobian products go to one buffer (``sym``, made by the first) by BLAS
        # syrk (``_syrk``); the tiles only hold the Gram-route terms.
        self.syrk, self.sym = syrk, None
        lead = (k,) if outputs == "diagonal" else ()
        r = n >> depth
        self.even = r << depth
        self.levels = [(1 << level, r << (depth - level - 1)) for level in range(depth)]
        self.levels.append((1 << depth, r))  # the leaves
        self.bufs = [zeros((count, *lead, h * rows, h * rows), like) for count, h in self.levels]
        self.rest = (zeros((*lead, (n - self.even) * rows, n * rows), like)
                     if n > self.even else None)
        self._tiles = []
        for (count, h), buf in zip(self.levels[:-1], self.bufs[:-1], strict=True):
            self._tiles += [(2 * m * h, (2 * m + 1) * h, (2 * m + 1) * h, (2 * m + 2) * h,
                             buf[m]) for m in range(count)]
        count, r = self.levels[-1]
        self._tiles += [(m * r, (m + 1) * r, m * r, (m + 1) * r, self.bufs[-1][m])
                        for m in range(count)]
        if self.rest is not None:
            self._tiles.append((self.even, n, 0, n, self.rest))

    def tiles(self) -> list[tuple[int, int, int, int, Tensor]]:
        """As ``_Rectangle.tiles``: the off-diagonal tiles, the leaves, the strip."""
        return self._tiles

    def add_products(self, j1: Tensor, j2: Tensor, units: slice) -> None:
        """As ``_Rectangle.add_products``, with ``j2`` the same as ``j1``."""
        if self.outputs == "diagonal":  # (K, H, H) tiles: one product per tile
            for i0, i1, j0, j1_, view in self._tiles:
                add_jacobian_products(view[units], j1[i0:i1], j1[j0:j1_], self.outputs)
            return
        b, k, p = j1.shape  # j2 is j1
        mat = j1.reshape(b, k * p) if self.outputs == "trace" else j1.reshape(b * k, p)
        if self.syrk:
            if self.sym is None:
                self.sym = zeros((mat.shape[0], mat.shape[0]), self.like)
            add_syrk_(self.sym, mat)
            return
        width = mat.shape[1]
        even = mat[:self.even * self.rows]
        for (count, h), buf in zip(self.levels[:-1], self.bufs[:-1], strict=True):
            halves = even.view(count, 2, h * self.rows, width)
            buf.baddbmm_(halves[:, 0], halves[:, 1].transpose(1, 2))
        count, r = self.levels[-1]
        leaves = even.view(count, r * self.rows, width)
        self.bufs[-1].baddbmm_(leaves, leaves.transpose(1, 2))
        if self.rest is not None:
            self.rest.addmm_(mat[even.shape[0]:], mat.T)

    def result(self) -> Tensor:
        """The block in the ``outputs`` layout: each tile written once (upper, mirrored,
        leaves averaged with their transposes), without the product layout's permuted copy."""
        n, rows, k, outputs = self.n, self.rows, self.k, self.outputs
        out = new_result(n, n, k, outputs, self.like)
        strides = out.stride()

        def place(buf: Tensor, j0: int, step: int, mirror: bool) -> None:
            """Write tiles ``buf (count, *lead, H, H)`` to examples ``m step`` against
            ``j0 + m step`` (``mirror``: their transposes to ``j`` against ``i``)."""
            s0, s1, *inner = strides
            if mirror:
                s0, s1, inner = s1, s0, inner[::-1]
            count, h = buf.shape[0], buf.shape[-1] // rows
            # buf's tiles unflattened: (h, h) [i, j]; (h, K, h, K) [i, a, j, b]; (K, h, h).
            if outputs == "full":
                shape, tile = (h, k, h, k), (s0, inner[0], s1, inner[1])
            elif outputs == "diagonal":
                shape, tile = (k, h, h), (inner[0], s0, s1)
            else:
                shape, tile = (h, h), (s0, s1)
            out.as_strided((count, *shape), (step * (s0 + s1), *tile),
                           j0 * s1).copy_(buf.view(count, *shape))

        for (_, h), buf in zip(self.levels[:-1], self.bufs[:-1], strict=True):
            place(buf, h, 2 * h, mirror=False)
            place(buf, h, 2 * h, mirror=True)
        (_, r), leaves = self.levels[-1], self.bufs[-1]
        place((leaves + leaves.transpose(-1, -2)).mul_(0.5), 0, r, mirror=False)
        if self.rest is not None:
            e = self.even
            rest = product_layout(self.rest, outputs, k)  # examples e:n against 0:n
            out[e:, :e] = rest[:, :e]
            out[:e, e:] = transpose_block(rest[:, :e], outputs)
            out[e:, e:] = (rest[:, e:] + transpose_block(rest[:, e:], outputs)).mul_(0.5)
        if self.sym is not None:  # both terms symmetric bit for bit: so is their sum
            out += product_layout(mirror_upper_(self.sym), outputs, k)
        return out


def _units_per_chunk(shape: tuple[int, int, int], itemsize: int) -> int:
    """Output units of a lazily formed Jacobian ``(B, K, P)`` per chunk of ``_CHUNK`` bytes."""
    b, k, p = shape
    return max(1, min(k, _CHUNK // (itemsize * b * p)))


def pair_block(s1: BlockState, s2: BlockState, outputs: str, k: int) -> Tensor:
    """Kernel block of two states in the ``outputs`` layout; ``s2 is s1``: a block against
    itself."""
    like = s1.like
    jacs1, jacs2 = s1.jacs, s2.jacs
    same = s1 is s2
    b1, b2 = s1.n, s2.n
    terms = []
    for f1, f2 in zip(s1.grams, s2.grams, strict=True):
        # G G^T factorises only when both blocks share the same constant G.
        same_g = (f1.const is not None and f2.const is not None
                  and torch.equal(f1.g[0], f2.g[0]))
        terms.append((_input_gram(f1.kind, f1.a, f2.a, like.dtype), f1.g, f2.g,
                      f1.const if same_g else None))
    if same:
        syrk = outputs != "diagonal" and syrk_supported(like)
        depth = _depth(b1, _rows(k, outputs), _flops([] if syrk else jacs1, terms, outputs))
        grid = _Triangle(b1, k, outputs, depth, like, syrk)
    else:
        grid = _Rectangle(b1, b2, k, outputs, like)
    tiles = grid.tiles()
    lazy1, lazy2 = _Workspace(like), _Workspace(like)
    for jac1, jac2 in zip(jacs1, jacs2, strict=True):
        if isinstance(jac1, Tensor):
            grid.add_products(jac1, jac2, slice(None))
            continue
        if hasattr(jac1, "formed"):  # formed by chunks of columns (only against itself)
            assert same, "column chunks are formed for a block against itself"
            for j in jac1.formed(lazy1.take(jac1.chunk_elements())):
                grid.add_products(j, j, slice(None))
            continue
        # A LazyJacobian: formed now, in a reused buffer; without cross terms between output
        # units (trace, diagonal), a few units at a time into a small one (first writes to
        # fresh memory cost page faults, about as much as forming the Jacobian).
        step = k if outputs == "full" else _units_per_chunk(jac1.shape, like.element_size())
        for u in range(0, k, step):
            units = slice(u, min(k, u + step))
            j1 = jac1.form(lazy1.take(b1 * step * jac1.shape[2]), units)
            j2 = j1 if same else jac2.form(lazy2.take(b2 * step * jac2.shape[2]), units)
            grid.add_products(j1, j2, units)
    ws = _Workspace(like)
    for ga, g1, g2, const in terms:
        r1, r2 = g1.shape[1], g2.shape[1]
        for i0, i1, j0, j1, view in tiles:
            _add_gram(view, ga[i0 * r1:i1 * r1, j0 * r2:j1 * r2], g1[i0:i1], g2[j0:j1], const,
                      outputs, ws)
    return grid.result()
