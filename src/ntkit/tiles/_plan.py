"""The tile plan: which ``(rows, cols)`` blocks of the kernel matrix are computed."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Tile", "plan_tiles", "tile_count"]


@dataclass(frozen=True)
class Tile:
    """Tile ``(i, j)`` of the grid: rows ``r0:r1`` of ``x1`` against rows ``c0:c1`` of ``x2``
    (of ``x1`` for a symmetric kernel). One Zarr chunk holds exactly one tile."""

    i: int
    j: int
    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def key(self) -> str:
        return f"{self.i}.{self.j}"

    @property
    def diagonal(self) -> bool:
        return self.i == self.j


def plan_tiles(n1: int, n2: int | None, tile: int) -> list[Tile]:
    """The tiles of an ``(n1, n2)`` kernel in tiles of ``tile x tile`` (the last row and
    column of tiles may be smaller); ``n2=None`` is a symmetric ``(n1, n1)`` kernel, of which
    only the tiles with ``i <= j`` are computed (the others are their mirror images).

    Example:
        >>> [t.key for t in plan_tiles(5, None, 2)]
        ['0.0', '0.1', '0.2', '1.1', '1.2', '2.2']
        >>> len(plan_tiles(5, 3, 2))
        6
    """
    m = n1 if n2 is None else n2
    tiles = []
    for i, r0 in enumerate(range(0, n1, tile)):
        for j, c0 in enumerate(range(0, m, tile)):
            if n2 is None and j < i:
                continue
            tiles.append(Tile(i, j, r0, min(r0 + tile, n1), c0, min(c0 + tile, m)))
    return tiles


def tile_count(n1: int, n2: int | None, tile: int) -> int:
    """``len(plan_tiles(n1, n2, tile))`` without building the plan.

    Example:
        >>> tile_count(5, None, 2), tile_count(5, 3, 2), tile_count(10**6, None, 1)
        (6, 6, 500000500000)
    """
    rows = -(-n1 // tile)
    return rows * (rows + 1) // 2 if n2 is None else rows * -(-n2 // tile)
