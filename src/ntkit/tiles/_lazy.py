"""Reading a tile store: lazy ``(N1, N2)`` kernels that mirror the symmetric half on read and
check each tile against its recorded checksum."""

from __future__ import annotations

import numpy as np
import torch

from ._plan import Tile, plan_tiles
from ._store import (
    CorruptTileError,
    matches,
    open_group,
    read_manifest,
    read_provenance,
    store_path,
    tile_intact,
)

__all__ = ["open", "TiledKernel", "LazyKernel"]


class LazyKernel:
    """One kernel of a tile store, read on demand: ``k[rows, cols]`` reads only the tiles it
    needs (ints or step-1 slices), ``k.load()`` the whole ``(N1, N2)`` kernel; both give a
    ``torch.Tensor``. For a symmetric kernel the tiles below the diagonal are the mirror images
    of those above. Reading a tile that is not finished raises ``ValueError``; one whose data
    does not match its checksum raises :class:`CorruptTileError` (when the store was opened
    with ``verify=True``)."""

    def __init__(self, owner: TiledKernel, name: str):
        self._owner, self.name = owner, name
        self.shape = owner.shape
        self.dtype = np.dtype(owner.provenance["dtype"])

    def __repr__(self):
        return f"LazyKernel({self.name!r}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, index) -> torch.Tensor:
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
        return torch.from_numpy(np.asarray(out[tuple(0 if s else slice(None) for s in squeeze)]))

    def _read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        own = self._owner
        t = own.tile
        out = np.empty((r1 - r0, c1 - c0), dtype=self.dtype)
        for i in range(r0 // t, -(-r1 // t)):
            for j in range(c0 // t, -(-c1 // t)):
                a0, a1 = max(r0, i * t), min(r1, (i + 1) * t)
                b0, b1 = max(c0, j * t), min(c1, (j + 1) * t)
                if a0 >= a1 or b0 >= b1:
                    continue
                if own.symmetric and i > j:
                    block = self._block(j, i, b0, b1, a0, a1).T
                else:
                    block = self._block(i, j, a0, a1, b0, b1)
                out[a0 - r0:a1 - r0, b0 - c0:b1 - c0] = block
        return out

    def _block(self, i: int, j: int, a0: int, a1: int, b0: int, b1: int) -> np.ndarray:
        """Rows ``a0:a1``, columns ``b0:b1`` of finished tile ``(i, j)``; with verification
        the whole tile is read, as its checksum covers the whole tile."""
        own = self._owner
        entry = own._require(i, j)
        arr = own.group[self.name]
        if not own.verify:
            return arr[a0:a1, b0:b1]
        t = own.tile
        r0, c0 = i * t, j * t
        whole = arr[r0:min(r0 + t, self.shape[0]), c0:min(c0 + t, self.shape[1])]
        if not matches(whole, entry, self.name):
            raise CorruptTileError(own.path, i, j, self.name)
        return whole[a0 - r0:a1 - r0, b0 - c0:b1 - c0]

    def load(self) -> torch.Tensor:
        """The whole ``(N1, N2)`` kernel as a tensor (all tiles must be finished)."""
        return self[:, :]


class TiledKernel:
    """A tile store opened for reading: ``nngp``/``ntk`` (:class:`LazyKernel`, or ``None``
    when not computed), ``provenance`` (spec, hashes, versions, input fingerprints),
    ``done``/``total`` tiles (``done`` counts the manifest; :meth:`check` reads the tiles)
    and ``complete``."""

    def __init__(self, store, *, verify: bool = True):
        self.path = store_path(store)
        if not isinstance(verify, bool):
            raise TypeError(f"verify must be True or False; got {verify!r}")
        if not (self.path / "zarr.json").exists():
            raise FileNotFoundError(f"no ntkit tile store at {self.path}")
        self.verify = verify
        self.provenance = p = read_provenance(self.path)
        self.group = open_group(self.path, mode="r")
        self.shape = (p["n1"], p["n2"])
        self.tile, self.symmetric = p["tile"], p["symmetric"]
        self.tiles: list[Tile] = plan_tiles(p["n1"], None if self.symmetric else p["n2"],
                                            self.tile)
        self.refresh()
        self.nngp = LazyKernel(self, "nngp") if "nngp" in p["get"] else None
        self.ntk = LazyKernel(self, "ntk") if "ntk" in p["get"] else None

    def refresh(self) -> None:
        """Re-read the manifest (another process may have finished tiles)."""
        self._done = read_manifest(self.path, {t.key for t in self.tiles})

    @property
    def done(self) -> int:
        return len(self._done)

    @property
    def total(self) -> int:
        return len(self.tiles)

    @property
    def complete(self) -> bool:
        return self.done == self.total

    def check(self, *, progress: bool = False) -> list[str]:
        """Read every finished tile and compare it with its recorded checksums.

        **Returns:** the keys ``"I.J"`` of the finished tiles whose data does not match (a
        deleted or altered chunk), in plan order; a rerun of ``compute`` recomputes them.
        """
        from tqdm.auto import tqdm

        names = self.provenance["get"]
        bad = []
        for t in tqdm([t for t in self.tiles if t.key in self._done], desc="checking tiles",
                      unit="tile", disable=not progress):
            if not tile_intact(self.group, t, self._done[t.key], names):
                bad.append(t.key)
        return bad

    def _require(self, i: int, j: int) -> dict:
        entry = self._done.get(f"{i}.{j}")
        if entry is None:
            raise ValueError(f"tile {i}.{j} of {self.path} is not finished ({self.done}/"
                             f"{self.total} tiles done); rerun ntkit.tiles.compute to finish")
        return entry

    def load(self) -> dict[str, torch.Tensor]:
        """``{"nngp": (N1, N2) tensor, "ntk": ...}`` for the kernels in the store."""
        return {k.name: k.load() for k in (self.nngp, self.ntk) if k is not None}

    def __repr__(self):
        return (f"TiledKernel({str(self.path)!r}, shape={self.shape}, "
                f"tiles={self.done}/{self.total})")


def open(store, *, verify: bool = True) -> TiledKernel:  # noqa: A001 - as zarr.open
    """Open a tile store written by :func:`ntkit.tiles.compute` for (lazy) reading.

    The provenance is checked first (types, ranges, the tile count, the arrays' shapes and
    chunks), so a damaged or crafted store raises ``ValueError`` here.

    **Arguments:**

    - ``store``: the store's directory.
    - ``verify``: check each tile against its recorded checksum as it is read (raising
      :class:`CorruptTileError` naming the tile). A verified read reads whole tiles; pass
      ``False`` to read only the requested rows and columns, trusting the store.

    **Returns:** a :class:`TiledKernel`; ``.ntk[:10, :10]`` reads one corner and
    ``.ntk.load()`` the whole ``(N1, N2)`` kernel, both as ``torch.Tensor``.

    Example:
        >>> import tempfile, torch
        >>> from ntkit import layers as L, tiles
        >>> net = L.serial(L.Dense(8), L.ReLU(), L.Dense(1))
        >>> x = torch.randn(6, 3, dtype=torch.float64)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = tiles.compute(net, x, store=d + "/k.zarr", tile=4, progress=False)
        ...     k = tiles.open(d + "/k.zarr")
        ...     k.done, k.total, k.check(), tuple(k.ntk[1:3, 2:6].shape)
        (3, 3, [], (2, 4))
    """
    return TiledKernel(store, verify=verify)
