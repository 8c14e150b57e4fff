"""Kernels too large for one process: tiled, resumable, optionally distributed with Dask.

``compute`` writes the kernel matrix tile by tile into a Zarr store with the provenance of
the run and a manifest of finished tiles with their checksums; ``open`` reads it back
lazily, checking each tile it reads (:class:`CorruptTileError`). Needs the ``dist``
extra (``pip install "ntkit[dist]"``: zarr, and dask.distributed for ``executor="dask"``).
"""

from ._compute import compute as compute
from ._lazy import LazyKernel as LazyKernel
from ._lazy import TiledKernel as TiledKernel
from ._lazy import open as open  # noqa: A004
from ._plan import Tile as Tile
from ._plan import plan_tiles as plan_tiles
from ._store import CorruptTileError as CorruptTileError

__all__ = ["compute", "open", "TiledKernel", "LazyKernel", "CorruptTileError", "Tile",
           "plan_tiles"]
