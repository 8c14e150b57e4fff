"""``compute``: plan the tiles, skip the finished ones, run the rest, record each one."""

from __future__ import annotations

import os
import uuid

import torch
from tqdm.auto import tqdm

from .._checks import as_inputs, check_get, check_pair, positive_int
from ._executors import TileJob, compute_tile, make_executor
from ._plan import Tile, plan_tiles
from ._store import (
    DTYPES,
    STORE_FORMAT,
    check_location,
    check_tiling,
    create_or_check,
    fingerprint,
    forget,
    import_zarr,
    read_manifest,
    record,
    remove_if_empty,
    store_path,
    tile_intact,
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
    fully-connected networks, when it divides ``tile`` or one tile covers the kernel, else
    ``tile``).

    Every argument is checked, one example's kernel computed and the executor started before
    the store is created; a store that this call created is removed again if the call fails
    before finishing a tile.

    **Arguments:**

    - ``net``: an ``ntkit.layers`` network with a plain-data spec (``net.to_dict()``) whose
      kernel is ``(N1, N2)`` (not a spatial output).
    - ``x1``: ``(N1, ...)`` inputs; ``x2``: ``(N2, ...)`` or ``None`` (then only the tiles on
      and above the diagonal are computed; the others are read as their mirror images).
    - ``store``: directory of the Zarr store (created if missing); with a multi-machine Dask
      cluster it must be on a filesystem that all workers and this process see at the same
      path.
    - ``tile``: rows and columns per tile (one Zarr chunk each); a tile larger than the
      kernel is reduced to ``max(N1, N2)``. At most ``2**16``, and at most ``2**20`` tiles.
    - ``get``: ``"nngp"`` and/or ``"ntk"``.
    - ``executor``: ``None``/``"inprocess"`` (default), ``"processes"`` (a local process pool
      of ``workers``), ``"dask"`` (a Dask LocalCluster of ``workers`` processes, default 2),
      a scheduler address ``"tcp://host:8786"``, or a ``distributed.Client``.
    - ``batch_size``: block size within a tile (must divide ``tile`` unless one tile covers
      the kernel).
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

    # Everything is checked, and the executor started, before a store is created.
    path = store_path(store)
    exists = check_location(path)
    import_zarr()
    get = check_get(get)
    tile = positive_int(tile, "tile")
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be True or False; got {verify!r}")
    if workers is not None:
        workers = positive_int(workers, "workers")
    x1 = as_inputs(x1, "x1").detach().cpu()
    if x2 is not None:
        x2 = as_inputs(x2, "x2").detach().cpu()
        check_pair(x1, x2)
        if x2.shape == x1.shape and torch.equal(x1, x2):
            x2 = None  # as Layer.kernel does: the symmetric computation
    if str(x1.dtype).removeprefix("torch.") not in DTYPES:
        raise TypeError(f"x1: ntkit.tiles stores {', '.join(DTYPES)}; got {x1.dtype}")
    spec = net.to_dict()
    from ..layers import spec_hash
    from ..layers._compute import _check_network_input, layout

    _check_network_input(net, x1)
    out = net.out_shape(tuple(x1.shape[1:]))
    if isinstance(out, list) or len(out) != 1:
        raise ValueError(f"ntkit.tiles stores (N1, N2) kernels; this network's output has "
                         f"per-example shape {out} (end it with GlobalAvgPool/Flatten + Dense)")
    n1, n2 = x1.shape[0], None if x2 is None else x2.shape[0]
    # A tile larger than the kernel would only pad its chunks (a 40 x 40 kernel in tiles of
    # 20000 wrote 6 GB): one tile then covers the whole kernel.
    tile = min(tile, max(n1, n2 or n1))
    check_tiling(n1, n2, tile)
    batch_size = _batch_size(batch_size, tile, max(n1, n2 or n1))
    ex = make_executor(executor, workers=workers)
    _, _, diag_sp = layout(net, x1)
    from ..kernel import input_variances

    var1 = input_variances(x1, diagonal_spatial=diag_sp)
    var2 = None if x2 is None else input_variances(x2, diagonal_spatial=diag_sp)
    provenance = _provenance(spec, spec_hash(spec), x1, x2, tile=tile, batch_size=batch_size,
                             get=get)
    job = TileJob(spec=spec, spec_hash=provenance["spec_hash"], store=str(path), x1=x1, x2=x2,
                  var1=var1, var2=var2, get=get, batch_size=batch_size)
    # One example against one: a spec that only fails in the arithmetic (W_std = 1e308
    # overflows its square) or a kernel that is not finite fails before the store exists.
    try:
        compute_tile(job, Tile(0, 0, 0, 1, 0, 1))
    except ArithmeticError as err:
        raise ValueError(f"the kernel of one example fails with {type(err).__name__} ({err}): "
                         f"are the spec's values (W_std, b_std, ...) too large?") from err
    tiles = plan_tiles(n1, n2, tile)
    run = uuid.uuid4().hex[:12]
    done = _finished(path, provenance, tiles, run=run, verify=verify) if exists else {}
    todo = [t for t in tiles if t.key not in done]
    created = False
    try:
        if todo:
            with ex:
                group, created = create_or_check(path, provenance, shape=(n1, n2 or n1),
                                                 tile=tile, get=get)
                _run(ex, job, group, path, tiles, todo, run=run, verify=verify,
                     progress=progress)
    except BaseException:
        if created:  # after the executor has stopped: no write can follow the removal
            remove_if_empty(path)
        raise
    return open_store(path, verify=verify)


def _finished(path, provenance: dict, tiles, *, run: str, verify: bool) -> dict:
    """The finished tiles of an existing store (which must hold the same computation); with
    ``verify``, a tile whose data does not match its checksums is dropped, to be recomputed."""
    group, _ = create_or_check(path, provenance, shape=(provenance["n1"], provenance["n2"]),
                               tile=provenance["tile"], get=tuple(provenance["get"]))
    done = read_manifest(path, {t.key for t in tiles})
    if verify:
        for t in tiles:
            if t.key in done and not tile_intact(group, t, done[t.key], provenance["get"]):
                forget(path, t, run=run, why="corrupt")
                del done[t.key]
    return done


def _run(ex, job: TileJob, group, path, tiles, todo, *, run: str, verify: bool,
         progress: bool) -> None:
    bar = tqdm(total=len(tiles), initial=len(tiles) - len(todo), desc="kernel tiles",
               disable=not progress, unit="tile")
    exit_after = int(os.environ.get(_EXIT_AFTER, "0"))
    recorded = 0
    results = ex.map(job, todo)
    try:
        for t, sums, seconds in results:
            # A remote worker's write is read back here: a store that is not shared at the same
            # path fails now rather than leaving gaps. Local writes need not be.
            if verify and not getattr(ex, "local", False) \
                    and not tile_intact(group, t, {"checksums": sums}, job.get):
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
    finally:
        # A generator is closed on the way out (its pending write finishes), so that no tile
        # is still being written when a failed run removes its store.
        getattr(results, "close", lambda: None)()
    bar.close()


def _batch_size(batch_size, tile: int, n: int) -> int:
    """Blocks must not straddle a tile boundary, unless one tile covers the kernel (``tile``
    is then ``n``, the larger side)."""
    if batch_size is None:
        from ..layers._compute import DEFAULT_BATCH_SIZE

        return DEFAULT_BATCH_SIZE if tile % DEFAULT_BATCH_SIZE == 0 or tile == n else tile
    batch_size = positive_int(batch_size, "batch_size")
    if tile % batch_size and tile < n:
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
