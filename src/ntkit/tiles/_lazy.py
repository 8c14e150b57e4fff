"""Reading a tile store: lazy ``(N1, N2)`` arrays that mirror the symmetric half on read."""

from __future__ import annotations

import numpy as np
import torch

from ._plan import Tile, plan_tiles
from ._store import open_group, provenance_of, read_manifest, store_path

__all__ = ["open", "TiledKernel", "LazyKernel"]


class LazyKernel:
    """One kernel of a tile store, read on demand: ``k[rows, cols]`` reads only the tiles it
    needs (NumPy array; basic slices or ints), ``k.load()`` the whole ``(N1, N2)`` tensor.
    For a symmetric kernel the tiles below the diagonal are the mirror images of those above.
    Reading a tile that is not finished raises ``ValueError``."""

    def __init__(self, owner: TiledKernel, name: str):
        self._owner, self.name = owner, name
        self.shape = owner.shape
        self.dtype = np.dtype(owner.provenance["dtype"])

    def __repr__(self):
        return f"LazyKernel({self.name!r}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, index) -> np.ndarray:
        if not isinstance(index, tuple):
            index = (index, slice(None))
        if len(index) != 2:
            raise IndexError(f"{self.name}: index with [rows, cols]; got {index!r}")
        spans, squeeze = [], []
        for ix, n in zip(index, self.shape, strict=True):
            if isinstance(ix, (int, np.integer)):
                i = int(ix) + n if ix < 0 else int(ix)
                if not 0 <= i < n:
                    raise IndexError(f"{self.name}: index {ix} out of range for size {n}")
                spans.append((i, i + 1))
                squeeze.append(True)
            elif isinstance(ix, slice) and ix.step in (None, 1):
                a, b, _ = ix.indices(n)
                spans.append((a, max(a, b)))
                squeeze.append(False)
            else:
                raise IndexError(f"{self.name}: only ints and step-1 slices are supported; "
                                 f"got {ix!r}")
        out = self._read(*spans[0], *spans[1])
        return out[tuple(0 if s else slice(None) for s in squeeze)]

    def _read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        own = self._owner
        t = own.tile
        out = np.empty((r1 - r0, c1 - c0), dtype=self.dtype)
        arr = own.group[self.name]
        for i in range(r0 // t, -(-r1 // t)):
            for j in range(c0 // t, -(-c1 // t)):
                a0, a1 = max(r0, i * t), min(r1, (i + 1) * t)
                b0, b1 = max(c0, j * t), min(c1, (j + 1) * t)
                if a0 >= a1 or b0 >= b1:
                    continue
                mirrored = own.symmetric and i > j
                own._require(j if mirrored else i, i if mirrored else j)
                if mirrored:
                    block = arr[b0:b1, a0:a1].T
                else:
                    block = arr[a0:a1, b0:b1]
                out[a0 - r0:a1 - r0, b0 - c0:b1 - c0] = block
        return out

    def load(self) -> torch.Tensor:
        """The whole ``(N1, N2)`` kernel as a tensor (all tiles must be finished)."""
        return torch.from_numpy(self[:, :])


class TiledKernel:
    """A tile store opened for reading: ``nngp``/``ntk`` (:class:`LazyKernel`, or ``None``
    when not computed), ``provenance`` (spec, hashes, versions, input fingerprints),
    ``done``/``total`` tiles and ``complete``."""

    def __init__(self, store):
        self.path = store_path(store)
        if not (self.path / "zarr.json").exists():
            raise FileNotFoundError(f"no ntkit tile store at {self.path}")
        self.group = open_group(self.path, mode="r")
        try:
            self.provenance = provenance_of(self.group)
        except KeyError:
            raise ValueError(f"{self.path} is a Zarr store but not an ntkit tile store") from None
        p = self.provenance
        self.shape = (p["n1"], p["n2"])
        self.tile, self.symmetric = p["tile"], p["symmetric"]
        self.tiles: list[Tile] = plan_tiles(p["n1"], None if self.symmetric else p["n2"],
                                            self.tile)
        self.refresh()
        self.nngp = LazyKernel(self, "nngp") if "nngp" in p["get"] else None
        self.ntk = LazyKernel(self, "ntk") if "ntk" in p["get"] else None

    def refresh(self) -> None:
        """Re-read the manifest (another process may have finished tiles)."""
        self._done = set(read_manifest(self.path))

    @property
    def done(self) -> int:
        return len(self._done)

    @property
    def total(self) -> int:
        return len(self.tiles)

    @property
    def complete(self) -> bool:
        return self.done == self.total

    def _require(self, i: int, j: int) -> None:
        if f"{i}.{j}" not in self._done:
            raise ValueError(f"tile {i}.{j} of {self.path} is not finished ({self.done}/"
                             f"{self.total} tiles done); rerun ntkit.tiles.compute to finish")

    def load(self) -> dict[str, torch.Tensor]:
        """``{"nngp": (N1, N2) tensor, "ntk": ...}`` for the kernels in the store."""
        return {k.name: k.load() for k in (self.nngp, self.ntk) if k is not None}

    def __repr__(self):
        return (f"TiledKernel({str(self.path)!r}, shape={self.shape}, "
                f"tiles={self.done}/{self.total})")


def open(store) -> TiledKernel:  # noqa: A001 - the module's verb, as zarr.open
    """Open a tile store written by :func:`ntkit.tiles.compute` for (lazy) reading.

    **Returns:** a :class:`TiledKernel`; ``.ntk[:10, :10]`` reads one corner,
    ``.ntk.load()`` the whole ``(N1, N2)`` tensor.
    """
    return TiledKernel(store)
