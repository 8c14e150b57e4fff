"""The kernel as a grid of blocks of examples, and the output layouts ``trace/full/diagonal``.

Every strategy prepares a *state* per block of examples (Jacobians, layer features, or
tangents) and contracts two states into a block of the kernel; this module owns the loop,
the reuse of states, the upper triangle for ``x2=None``, and the three layouts:

- ``"trace"``: ``(N1, N2)``, summed over output units;
- ``"full"``: ``(N1, N2, K, K)``, ``[i, j, a, b] = <df_a(x1_i)/dp, df_b(x2_j)/dp>``;
- ``"diagonal"``: ``(N1, N2, K)``, the same-output entries ``a == b`` of ``"full"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from .._alloc import empty, zeros

__all__ = ["OUTPUTS", "add_jacobian_products", "contract_jacobians", "fill_blocks",
           "new_result", "product_layout", "product_shape", "reduce_full", "symmetrize_",
           "transpose_block"]

OUTPUTS = ("trace", "full", "diagonal")


def new_result(n1: int, n2: int, n_out: int, outputs: str, like: Tensor) -> Tensor:
    """An uninitialised buffer of the layout's shape, ``like``'s dtype and device, for
    ``fill_blocks`` (which writes every entry; left untouched, it costs no memory)."""
    shape = {"trace": (n1, n2), "full": (n1, n2, n_out, n_out),
             "diagonal": (n1, n2, n_out)}[outputs]
    return empty(shape, like)


def transpose_block(block: Tensor, outputs: str) -> Tensor:
    """The block of ``K(x2, x1)`` from that of ``K(x1, x2)``."""
    if outputs == "full":
        return block.permute(1, 0, 3, 2)
    if outputs == "diagonal":
        return block.permute(1, 0, 2)
    return block.T


def symmetrize_(theta: Tensor, outputs: str, block_elements: int = 1 << 20) -> Tensor:
    """``theta = (theta + theta^T) / 2`` in place (``^T``: ``transpose_block``), so that the
    result is symmetric bit for bit (addition commutes), block by block: temporaries of about
    ``block_elements`` numbers rather than two of the kernel's size."""
    n = theta.shape[0]
    per_pair = theta[0, 0].numel()
    b = max(1, min(n, int((block_elements / per_pair) ** 0.5)))
    for i in range(0, n, b):
        for j in range(i, n, b):
            upper = theta[i:i + b, j:j + b]
            lower = theta[j:j + b, i:i + b]
            mean = (upper + transpose_block(lower, outputs)).mul_(0.5)
            upper.copy_(mean)
            lower.copy_(transpose_block(mean, outputs))
    return theta


def reduce_full(full: Tensor, outputs: str) -> Tensor:
    """``(B1, B2, K, K)`` to the requested layout."""
    if outputs == "full":
        return full
    diag = full.diagonal(dim1=2, dim2=3)
    return diag if outputs == "diagonal" else diag.sum(-1)


def add_jacobian_products(acc: Tensor, j1: Tensor, j2: Tensor, outputs: str) -> None:
    """``acc += <J1, J2>`` for Jacobians ``(B1, K, P)`` and ``(B2, K, P)``, ``acc`` in the
    layout of one matrix product: ``(B1, B2)`` (trace), ``(B1 K, B2 K)`` (full, rows
    ``(example, output unit)``) or ``(K, B1, B2)`` (diagonal)."""
    b1, k, p = j1.shape
    b2 = j2.shape[0]
    if outputs == "trace":
        acc.addmm_(j1.reshape(b1, k * p), j2.reshape(b2, k * p).T)
    elif outputs == "full":
        acc.addmm_(j1.reshape(b1 * k, p), j2.reshape(b2 * k, p).T)
    else:
        acc.baddbmm_(j1.transpose(0, 1), j2.permute(1, 2, 0))


def product_shape(b1: int, b2: int, k: int, outputs: str) -> tuple[int, ...]:
    """Shape of the product layout of ``add_jacobian_products`` for blocks of ``b1`` and
    ``b2`` examples and ``k`` output units."""
    return {"trace": (b1, b2), "full": (b1 * k, b2 * k), "diagonal": (k, b1, b2)}[outputs]


def product_layout(acc: Tensor, outputs: str, k: int) -> Tensor:
    """The kernel block (a view) in the ``outputs`` layout from the product layout of
    ``add_jacobian_products``."""
    if outputs == "full":
        return acc.view(acc.shape[0] // k, k, acc.shape[1] // k, k).permute(0, 2, 1, 3)
    if outputs == "diagonal":
        return acc.permute(1, 2, 0)
    return acc


def contract_jacobians(j1: list[Tensor], j2: list[Tensor], outputs: str) -> Tensor:
    """Kernel block from per-example Jacobians, lists of ``(B1, K, P_i)`` and
    ``(B2, K, P_i)`` (one product per pair: concatenating them would copy them)."""
    b1, k = j1[0].shape[:2]
    acc = zeros(product_shape(b1, j2[0].shape[0], k, outputs), j1[0])
    for a, b in zip(j1, j2, strict=True):
        add_jacobian_products(acc, a, b, outputs)
    return product_layout(acc, outputs, k)


def fill_blocks(out: Tensor, x1: Tensor, x2: Tensor | None, *, block: int,
                left: Callable[[Tensor], Any], right: Callable[[Tensor], Any] | None,
                pair: Callable[[Any, Any], Tensor], outputs: str, cache_right: bool,
                symmetric_pairs: bool = False) -> Tensor:
    """Fill ``out`` block by block with ``pair(left(x1 block), right(x2 block))``.

    ``right=None`` means the same state on both sides (then, for ``x2=None``, each block's
    state is computed once). ``x2=None``: only blocks on and above the diagonal are
    contracted, the others are their transposes, and the result is symmetric bit for bit:
    each diagonal block is averaged with its transpose (``symmetrize_``) unless
    ``symmetric_pairs`` says that ``pair`` already gives symmetric blocks for a block
    against itself. ``cache_right``: keep the right states of all blocks (computed once)
    rather than recomputing them for every row of blocks.
    """
    xb = x1 if x2 is None else x2
    n1, n2 = x1.shape[0], xb.shape[0]
    same = right is None
    right = left if right is None else right
    mirror = x2 is None and not symmetric_pairs
    if n1 <= block and n2 <= block:  # one block: its pair is the kernel (``out`` unused)
        s1 = left(x1)
        theta = pair(s1, s1 if x2 is None and same else right(xb)).contiguous()
        return symmetrize_(theta, outputs) if mirror else theta
    cache: dict[int, Any] = {}

    def right_state(j: int) -> Any:
        if j in cache:
            return cache[j]
        state = right(xb[j:j + block])
        if cache_right:
            cache[j] = state
        return state

    # At most two states are alive: each is dropped before the next one is computed.
    for i in range(0, n1, block):
        s1 = right_state(i) if (x2 is None and same) else left(x1[i:i + block])
        for j in range(i if x2 is None else 0, n2, block):
            s2 = s1 if (x2 is None and same and j == i) else right_state(j)
            b = pair(s1, s2)
            out[i:i + block, j:j + block] = b
            if x2 is None and j != i:
                out[j:j + block, i:i + block] = transpose_block(b, outputs)
            elif mirror:
                symmetrize_(out[i:i + block, j:j + block], outputs)
            s2 = b = None
        s1 = None
        if x2 is None:
            cache.pop(i, None)  # row i of blocks is done; block i is never needed again
    return out
