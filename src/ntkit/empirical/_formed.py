"""Per-example gradients of the structured route's Jacobian-route layers, formed from their
factors side by side in one buffer (``fill_jacobian``), or a chunk of columns at a time
(``LazyJacobians``) when a block is contracted against itself (``_pairs.pair_block``).

A layer used in rows ``s`` has the per-example weight gradient ``sum_s a_s g_s^T``
(``_structured``'s module doc): one batched product per group and output unit, written
straight into its columns of the buffer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._alloc import empty

__all__ = ["COLUMN_BYTES", "LazyJacobians", "column_bytes", "fill_jacobian"]

# Bytes per chunk of a LazyJacobians: a syrk of a 256-row float64 chunk of 64 MiB was within
# a few per cent of one syrk of the whole (bench/empirical_attention.py's 100 MB Jacobian).
COLUMN_BYTES = 64 << 20


def column_bytes() -> int:
    """``COLUMN_BYTES``, read when called (tests shrink it)."""
    return COLUMN_BYTES


def fill_jacobian(pieces: list[tuple[int, object]], n: int, k: int, like: Tensor,
                   buffer: Tensor | None = None) -> Tensor:
    """``(B, K, P')``: per-example Jacobians side by side, each piece either a tensor
    ``(B, K, p)`` or the factors ``a (B, groups, S, in)``, ``grad (B, groups, S, K, out)`` of
    ``sum_s a_s grad_s^T``, formed in place as ``groups x K`` batched products (columns in
    the order ``(group, in, out)``, or ``(group, out, in)`` if ``in > out``); into
    ``buffer`` (at least that size) if given.

    Example:
        >>> import torch
        >>> a, g = torch.randn(3, 1, 5, 4), torch.randn(3, 1, 5, 2, 6)  # S = 5, K = 2
        >>> bias = torch.randn(3, 2, 7)
        >>> jac = fill_jacobian([(24, (a, g)), (7, bias)], 3, 2, a)
        >>> jac.shape
        torch.Size([3, 2, 31])
        >>> ref = torch.einsum("bsi,bsko->bkio", a[:, 0], g[:, 0]).reshape(3, 2, 24)
        >>> # bmm against einsum: float32 sums of 5 products, equal to 1e-5; the copy exactly
        >>> ok = torch.allclose(jac[:, :, :24], ref, rtol=1e-5, atol=1e-5)
        >>> ok, bool(torch.equal(jac[:, :, 24:], bias))
        (True, True)
    """
    width = sum(p for p, _ in pieces)
    buf = (empty((n, k, width), like) if buffer is None
           else buffer[:n * k * width].view(n, k, width))
    start = 0
    for cols, piece in pieces:
        view = buf[:, :, start:start + cols]
        start += cols
        if isinstance(piece, Tensor):
            view.copy_(piece)
            continue
        a, grad = piece
        groups, d_in, d_out = a.shape[1], a.shape[3], grad.shape[4]
        # Only inner products of columns are taken, so each example's in x out gradient
        # may be stored transposed: the longer side last, as the batched products run
        # faster with long rows.
        flip = d_in > d_out
        view = view.view(n, k, groups, *((d_out, d_in) if flip else (d_in, d_out)))
        for gi in range(groups):
            rows = a[:, gi]  # (B, S, in)
            for o in range(k):
                g = grad[:, gi, :, o]  # (B, S, out)
                if flip:
                    torch.bmm(g.transpose(1, 2), rows, out=view[:, o, gi])
                else:
                    torch.bmm(rows.transpose(1, 2), g, out=view[:, o, gi])
    return buf


class LazyJacobians:
    """``fill_jacobian``'s pieces formed a chunk of about ``COLUMN_BYTES`` bytes of columns at a
    time into one reused buffer, each chunk contracted at once (``pair_block``): no buffer of
    the whole Jacobian, whose first touch costs page faults, and blocks of the kernel need
    not be split to hold it."""

    def __init__(self, pieces: list[tuple[int, object]], n: int, k: int, like: Tensor):
        self.n, self.k, self.like = n, k, like
        self.shape = (n, k, sum(p for p, _ in pieces))
        cols = max(1, COLUMN_BYTES // (like.element_size() * n * k))
        self.chunks: list[list[tuple[int, object]]] = [[]]
        used = 0
        for width, piece in pieces:
            # Split along the columns of a tensor, along the inputs of factors.
            if isinstance(piece, Tensor):
                step, total = 1, width
            else:
                step, total = width // piece[0].shape[3], piece[0].shape[3]
            start = 0
            while start < total:
                if used and used + step > cols:
                    self.chunks.append([])
                    used = 0
                stop = min(total, start + max(1, (cols - used) // step))
                part = (piece[:, :, start:stop] if isinstance(piece, Tensor)
                        else (piece[0][..., start:stop], piece[1]))
                self.chunks[-1].append(((stop - start) * step, part))
                used += (stop - start) * step
                start = stop

    def formed(self, buffer: Tensor):
        """Each chunk's Jacobian ``(B, K, w)``, formed in ``buffer`` (reused: use each before
        asking for the next)."""
        for chunk in self.chunks:
            yield fill_jacobian(chunk, self.n, self.k, self.like, buffer)

    def chunk_elements(self) -> int:
        """Numbers in the largest chunk: the size of the buffer ``formed`` needs."""
        return self.n * self.k * max(sum(w for w, _ in c) for c in self.chunks)
