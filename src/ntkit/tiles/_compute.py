"""``compute``: plan the tiles, skip the finished ones, run the rest, record each one."""

from __future__ import annotations

import os
import uuid

import torch
from tqdm.auto import tqdm

from .._checks import as_inputs, check_get, check_pair, positive_int
from ._executors import TileJob, make_executor
from ._plan import plan_tiles
from ._store import (
    STORE_FORMAT,
    checksum,
    create_or_check,
    fingerprint,
    forget,
    read_manifest,
    read_tile,
    record,
    store_path,
)

__all__ = ["compute"]

# Test hook: the driver exits abruptly (os._exit, no cleanup) after recording this many tiles
# in one run, as if killed there. Used by tests/test_tiles.py to prove that resuming loses no
# finished tile.
_EXIT_AFTER = "NTKIT_TILES_EXIT_AFTER"


def compute(net, x1, x2=None, *, store, tile: int = 2048, get=("nngp", "ntk"),
            executor=None, workers: int | None = None, batch_size: int | None = None,
            verify: bool = True, progress: bool = True):
    """The kernel of ``net`` between ``x1`` and ``x2``, computed tile by tile into a Zarr store.

    A rerun on the same store computes only the tiles missing from its manifest, so an
    interrupted job loses no finished tile; a rerun with different inputs, spec, dtype or
    tiling is refused. The result equals ``net.kernel(x1, x2, batch_size=b)`` bit for bit,
    where ``b`` is the block size (``batch_size``; by default 512, the in-memory default for
    fully-connected networks, when it divides ``tile``, else ``tile``).

    **Arguments:**

    - ``net``: an ``ntkit.layers`` network with a plain-data spec (``net.to_dict()``) whose
      kernel is ``(N1, N2)`` (not a spatial output).
    - ``x1``: ``(N1, ...)`` inputs; ``x2``: ``(N2, ...)`` or ``None`` (then only the tiles on
      and above the diagonal are computed; the others are read as their mirror images).
    - ``store``: directory of the Zarr store (created if missing); with a multi-machine Dask
      cluster it must be on a filesystem that all workers and this process see at the same
      path.
    - ``tile``: rows and columns per tile (one Zarr chunk each).
    - ``get``: ``"nngp"`` and/or ``"ntk"``.
    - ``executor``: ``None``/``"inprocess"`` (default), ``"processes"`` (a local process pool
      of ``workers``), ``"dask"`` (a Dask LocalCluster of ``workers`` processes, default 2),
      a scheduler address ``"tcp://host:8786"``, or a ``distributed.Client``.
    - ``batch_size``: block size within a tile (must divide ``tile``).
    - ``verify``: check the checksums of the recorded tiles before resuming (a corrupt tile
      is recomputed), and of each new tile as read back from the store.
    - ``progress``: a progress bar over the tiles.

    **Returns:** the store opened with :func:`ntkit.tiles.open` (a :class:`TiledKernel`).

    Example:
        >>> import tempfile, torch
        >>> from ntkit import layers as L, tiles
        >>> net = L.serial(L.Dense(64), L.ReLU(), L.Dense(1))
        >>> x = torch.randn(10, 3, dtype=torch.float64)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     k = tiles.compute(net, x, store=d + "/k.zarr", tile=4, progress=False)
        ...     bool(torch.equal(k.ntk.load(), net.kernel(x, batch_size=4).ntk))
        True
    """
    from ._lazy import open as open_store

    path = store_path(store)
    get = check_get(get)
    tile = positive_int(tile, "tile")
    x1 = as_inputs(x1, "x1").detach().cpu()
    if x2 is not None:
        x2 = as_inputs(x2, "x2").detach().cpu()
        check_pair(x1, x2)
        if x2.shape == x1.shape and torch.equal(x1, x2):
            x2 = None  # as Layer.kernel does: the symmetric computation
    spec = net.to_dict()
    from ..layers import spec_hash
    from ..layers._compute import _check_network_input, layout

    _check_network_input(net, x1)
    out = net.out_shape(tuple(x1.shape[1:]))
    if isinstance(out, list) or len(out) != 1:
        raise ValueError(f"ntkit.tiles stores (N1, N2) kernels; this network's output has "
                         f"per-example shape {out} (end it with GlobalAvgPool/Flatten + Dense)")
    batch_size = _batch_size(batch_size, tile, x1)
    planned, _, diag_sp = layout(net, x1)
    from ..kernel import input_variances

    var1 = input_variances(x1, diagonal_spatial=diag_sp)
    var2 = None if x2 is None else input_variances(x2, diagonal_spatial=diag_sp)
    provenance = _provenance(spec, spec_hash(spec), x1, x2, tile=tile, batch_size=batch_size,
                             get=get)
    n2 = None if x2 is None else x2.shape[0]
    group = create_or_check(path, provenance, shape=(x1.shape[0], n2 or x1.shape[0]),
                            tile=tile, get=get)
    tiles = plan_tiles(x1.shape[0], n2, tile)
    run = uuid.uuid4().hex[:12]
    done = read_manifest(path)
    if verify:
        for t in tiles:
            if t.key in done and not _intact(group, t, done[t.key]):
                forget(path, t, run=run, why="corrupt")
                del done[t.key]
    todo = [t for t in tiles if t.key not in done]
    exit_after = int(os.environ.get(_EXIT_AFTER, "0"))

    job = TileJob(spec=spec, spec_hash=provenance["spec_hash"], store=str(path), x1=x1, x2=x2,
                  var1=var1, var2=var2, get=get, batch_size=batch_size)
    bar = tqdm(total=len(tiles), initial=len(tiles) - len(todo), desc="kernel tiles",
               disable=not progress, unit="tile")
    recorded = 0
    if todo:
        with make_executor(executor, workers=workers) as ex:
            for t, sums, seconds in ex.map(job, todo):
                # A remote worker's write is read back here: a store that is not shared at
                # the same path fails now rather than leaving gaps. Local writes need not be.
                if verify and not getattr(ex, "local", False) \
                        and not _intact(group, t, {"checksums": sums}):
                    raise RuntimeError(
                        f"tile {t.key} was written by a worker but reads back different from "
                        f"{path} here: the store must be on a filesystem that every worker and "
                        f"this process share at the same path"
                    )
                record(path, t, sums, run=run, seconds=seconds)
                recorded += 1
                bar.update(1)
                if recorded == exit_after:
                    os._exit(3)
    bar.close()
    return open_store(path)


def _intact(group, t, entry: dict) -> bool:
    sums = entry.get("checksums", {})
    try:
        return all(checksum(read_tile(group, t, name)) == want for name, want in sums.items())
    except Exception:  # noqa: BLE001 - an unreadable chunk is a corrupt tile
        return False


def _batch_size(batch_size, tile: int, x1: torch.Tensor) -> int:
    if batch_size is None:
        from ..layers._compute import DEFAULT_BATCH_SIZE

        return DEFAULT_BATCH_SIZE if tile % DEFAULT_BATCH_SIZE == 0 else tile
    batch_size = positive_int(batch_size, "batch_size")
    if tile % batch_size:
        raise ValueError(f"batch_size={batch_size} must divide tile={tile} (a tile is a whole "
                         f"number of blocks, so that it equals the in-memory kernel exactly)")
    return batch_size


def _provenance(spec: dict, hash_: str, x1, x2, *, tile, batch_size, get) -> dict:
    import ntkit

    return {
        "format": STORE_FORMAT, "spec": spec, "spec_hash": hash_,
        "dtype": str(x1.numpy().dtype), "ntkit_version": ntkit.__version__,
        "torch_version": torch.__version__,
        "x1": fingerprint(x1.numpy()), "x2": None if x2 is None else fingerprint(x2.numpy()),
        "n1": x1.shape[0], "n2": x1.shape[0] if x2 is None else x2.shape[0],
        "symmetric": x2 is None, "tile": tile, "batch_size": batch_size, "get": list(get),
    }
