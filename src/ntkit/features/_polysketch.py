"""Polynomial sketches: nonnegative polynomial fits of a kernel's angular part, and unbiased
sketches of the tensor powers ``u^{⊗j}`` from one shared tree of TensorSRHTs (Ahle et al.
2020's PolySketch, the building block of Zandieh et al. 2021's NTK sketch).

**One tree for all degrees.** The sketches ``S_j(u)`` (``E[S_j(u) . S_j(u')] = (u . u')^j``
for any ``u, u'``; ``S_1 = u`` exactly) come from one balanced binary tree over ``2^L >= q``
leaves, each leaf ``u``: a node over a dyadic block of ``2^h`` leaves sketches ``u^{⊗2^h}``
to the tree's width (the variance grows polynomially, not exponentially, in the degree).
``[0, j)`` is the union of at most ``L + 1`` disjoint dyadic blocks (the binary digits of
``j``), whose nodes use independent randomness, so ``S_j`` is their sketches joined left to
right by ``popcount(j) - 1`` further TensorSRHTs of its own. All degrees up to ``q`` then cost
at most the tree's ``2^L - 1`` nodes plus ``sum_j (popcount(j) - 1)`` joins (``12``
TensorSRHTs at ``q = 8``, ``32`` at ``q = 16``) instead of ``sum_j (j - 1)`` for one tree per
degree (``28`` and ``120``). Degrees share nodes, so their sketches are correlated; a
polynomial's sketch ``[sqrt(a_j) S_j]_j`` is linear in them and stays exactly unbiased.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import Tensor

from ._sketch import put_tensor_srht

__all__ = ["nonneg_polynomial", "dyadic_blocks", "tree_nodes", "draw_powers", "sketch_powers"]


def nonneg_polynomial(f: Callable[[np.ndarray], np.ndarray], degree: int, *,
                      pin: bool = False) -> tuple[np.ndarray, float]:
    """Nonnegative coefficients ``a_0..a_degree`` of ``P(c) = sum_j a_j c^j ≈ f(c)`` on
    ``[-1, 1]`` and ``max |P - f| / |f(1)|`` there.

    Least squares (NNLS) at 400 Chebyshev nodes (dense near ``±1``) and at ``c = 1`` with
    weight 20 (a kernel's diagonal weighs like many off-diagonal entries); ``pin=True`` then
    rescales ``a`` so that ``P(1) = f(1)`` exactly (the diagonal of a composed kernel stays
    exact). The error is measured on 2001 equispaced points (ends included).

    **Arguments:** ``f``: vectorised on float64 arrays; ``degree``: ``>= 0``.

    **Returns:** ``(a, rel_err)``: ``(degree + 1,)`` float64 array (``>= 0``) and a float.

    Example:
        >>> a, err = nonneg_polynomial(np.exp, 6, pin=True)
        >>> bool((a >= 0).all()), round(float(a.sum()), 12) == round(float(np.e), 12), err < 1e-4
        (True, True, True)
    """
    from scipy.optimize import nnls

    nodes = np.cos((2 * np.arange(400) + 1) * np.pi / 800)
    dense_c = np.linspace(-1.0, 1.0, 2001)
    values = f(np.concatenate([nodes, dense_c]))
    c = np.concatenate([nodes, [1.0]])
    weights = np.ones_like(c)
    weights[-1] = 20.0
    a, _ = nnls(np.vander(c, degree + 1, increasing=True) * weights[:, None],
                np.concatenate([values[:400], values[-1:]]) * weights)
    target = values[400:]
    if pin and a.sum() > 0:
        a = a * (target[-1] / a.sum())
    err = np.abs(np.vander(dense_c, degree + 1, increasing=True) @ a - target).max()
    return a, float(err / abs(target[-1]))


def dyadic_blocks(j: int) -> list[tuple[int, int]]:
    """``[0, j)`` as disjoint dyadic blocks ``(start, size)``, largest first (one per binary
    digit of ``j``).

    Example:
        >>> dyadic_blocks(6)
        [(0, 4), (4, 2)]
    """
    out, start = [], 0
    for h in range(j.bit_length() - 1, -1, -1):
        if j >> h & 1:
            out.append((start, 1 << h))
            start += 1 << h
    return out


def tree_nodes(degrees: list[int]) -> list[tuple[int, int]]:
    """The internal nodes ``(start, size)`` (``size >= 2``) of the tree that the blocks of
    ``degrees`` need, children before parents.

    Example:
        >>> tree_nodes([3])
        [(0, 2)]
    """
    need: set[tuple[int, int]] = set()
    stack = [b for j in degrees for b in dyadic_blocks(j) if b[1] > 1]
    while stack:
        start, size = stack.pop()
        if (start, size) not in need:
            need.add((start, size))
            half = size // 2
            stack += [(s, half) for s in (start, start + half) if half > 1]
    return sorted(need, key=lambda node: (node[1], node[0]))


def draw_powers(draws: dict[str, Tensor], generator, degrees: list[int], *, leaf: int,
                width: int, prefix: str = "") -> dict[int, int]:
    """Draw the TensorSRHTs of :func:`sketch_powers` into ``draws`` (names ``prefix +
    "n<start>_<size>_"`` for tree nodes, ``prefix + "j<j>_<k>_"`` for joins, each followed by
    ``sigma`` / ``tau`` / ``rows``) for leaves of dimension ``leaf`` and nodes of ``width``.

    **Returns:** the dimension of each ``S_j`` (``leaf`` for ``j = 1``, else ``width``).
    """
    def put(name: str, p: int, q: int) -> None:
        put_tensor_srht(draws, prefix + name, p, q, width, generator)

    for start, size in tree_nodes(degrees):
        side = leaf if size == 2 else width
        put(f"n{start}_{size}_", side, side)
    dims = {}
    for j in degrees:
        blocks = dyadic_blocks(j)
        acc = leaf if j == 1 else width
        for k, (_, size) in enumerate(blocks[1:], 1):
            put(f"j{j}_{k}_", acc, leaf if size == 1 else width)
            acc = width
        dims[j] = acc
    return dims


def sketch_powers(unit: Tensor, degrees: list[int], srht: Callable[[str, Tensor, Tensor], Tensor],
                  *, prefix: str = "") -> dict[int, Tensor]:
    """``S_j(unit)`` for every ``j`` in ``degrees``: ``(N, p) -> (N, dims[j])``, with
    ``srht(name, t, s)`` the TensorSRHT drawn under ``name`` by :func:`draw_powers`."""
    nodes = {(start, 1): unit for start in range(max(degrees))}
    for start, size in tree_nodes(degrees):
        half = size // 2
        nodes[start, size] = srht(f"{prefix}n{start}_{size}_", nodes[start, half],
                                  nodes[start + half, half])
    out = {}
    for j in degrees:
        blocks = dyadic_blocks(j)
        acc = nodes[blocks[0]]
        for k, block in enumerate(blocks[1:], 1):
            acc = srht(f"{prefix}j{j}_{k}_", acc, nodes[block])
        out[j] = acc
    return out
