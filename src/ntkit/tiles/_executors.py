"""Where tiles run: in this process, a local process pool, or a Dask cluster.

Every executor runs the same pure task, :func:`run_tile`, on a :class:`TileJob` shipped to
each worker once (pool initializer, Dask scatter): the worker computes the tile from its
slices of the inputs, writes it to its own chunk of the store and returns the checksums. The
driver records the tile in the manifest only once it holds them.

The same executors also run calls that return their result instead of storing it (the
streamed matrix-vector products of ``ntkit.solve.krr``): ``share(data)`` ships ``data`` to
the workers once and returns a handle, and ``map_calls(func, handle, items)`` returns
``[func(data, item) for item in items]``, computed by the workers, in order.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ._plan import Tile
from ._store import open_group, write_tile

__all__ = ["TileJob", "compute_tile", "run_tile", "make_executor", "InProcess", "ProcessPool",
           "DaskCluster"]


@dataclass(frozen=True)
class TileJob:
    """Everything a worker needs: the spec document, the inputs and their variances (CPU
    tensors), and how to tile."""

    spec: dict
    spec_hash: str
    store: str
    x1: torch.Tensor
    x2: torch.Tensor | None
    var1: torch.Tensor
    var2: torch.Tensor | None
    get: tuple[str, ...]
    batch_size: int


_planned: dict[str, tuple] = {}  # per process: spec hash -> (planned net, diag_sp)


def _network(job: TileJob):
    if job.spec_hash not in _planned:
        from ..layers import from_dict
        from ..layers._compute import layout

        planned, _, diag_sp = layout(from_dict(job.spec), job.x1)
        _planned[job.spec_hash] = (planned, diag_sp)
    return _planned[job.spec_hash]


def compute_tile(job: TileJob, tile: Tile) -> dict[str, np.ndarray]:
    """The ``(T1, T2)`` blocks ``{name: array}`` of ``tile`` (no I/O)."""
    from ..layers._compute import kernel_tile

    planned, diag_sp = _network(job)
    rows, cols = slice(tile.r0, tile.r1), slice(tile.c0, tile.c1)
    if job.x2 is None and tile.diagonal:
        x2 = v2 = None
    else:
        x2, v2 = (job.x1, job.var1) if job.x2 is None else (job.x2, job.var2)
        x2, v2 = x2[cols], v2[cols]
    try:
        with torch.no_grad():
            # kernel_tile raises rather than return NaN or inf: nothing of such a tile is stored.
            nngp, ntk = kernel_tile(planned, job.x1[rows], x2, job.var1[rows], v2,
                                    need_ntk="ntk" in job.get, diag_sp=diag_sp,
                                    batch_size=job.batch_size)
    except ValueError as err:
        raise ValueError(f"tile {tile.key}: {err}") from None
    blocks = {name: (nngp if name == "nngp" else ntk) for name in job.get}
    return {name: np.ascontiguousarray(block.numpy()) for name, block in blocks.items()}


def run_tile(job: TileJob, tile: Tile) -> tuple[Tile, dict[str, str], float]:
    """Compute ``tile``, write it to the store; return ``(tile, checksums, seconds)``."""
    start = time.perf_counter()
    sums = write_tile(open_group(job.store, mode="r+"), tile, compute_tile(job, tile))
    return tile, sums, time.perf_counter() - start


class InProcess:
    """Tiles one after another in this process (the default). Each tile is written by a
    background thread while the next one is computed, so the store's I/O overlaps the
    arithmetic; a tile is yielded (and then recorded) only once its write has finished."""

    local = True  # writes land on this machine's filesystem: no read-back needed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def share(self, data):
        return data

    def map_calls(self, func, shared, items: Iterable) -> list:
        return [func(shared, item) for item in items]

    def map(self, job: TileJob, tiles: Iterable[Tile]) -> Iterator:
        from concurrent.futures import ThreadPoolExecutor

        def write(t: Tile, blocks: dict, seconds: float):
            start = time.perf_counter()
            sums = write_tile(open_group(job.store, mode="r+"), t, blocks)
            return t, sums, seconds + time.perf_counter() - start

        with ThreadPoolExecutor(1) as io:
            pending = None
            for t in tiles:
                start = time.perf_counter()
                blocks = compute_tile(job, t)
                seconds = time.perf_counter() - start
                if pending is not None:
                    yield pending.result()
                pending = io.submit(write, t, blocks, seconds)
            if pending is not None:
                yield pending.result()


_job: TileJob | None = None


def _init_pool(job: TileJob, threads: int) -> None:
    global _job
    _job = job
    torch.set_num_threads(threads)


def _pool_task(tile: Tile):
    return run_tile(_job, tile)


_shared = None


def _init_shared(data, threads: int) -> None:
    global _shared
    _shared = data
    torch.set_num_threads(threads)


def _pool_call(func, item):
    return func(_shared, item)


class ProcessPool:
    """A local pool of ``workers`` spawned processes, each with ``cpu_count // workers`` torch
    threads; the inputs go to each worker once (the pool initializer)."""

    local = True  # same machine, same filesystem: no read-back needed

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = None  # the pool of share(), kept for map_calls until __exit__

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        return False

    def share(self, data):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.__exit__()
        threads = max(1, _cores() // self.workers)
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_shared, initargs=(data, threads))
        return None  # the data live in the workers (the pool initializer)

    def map_calls(self, func, shared, items: Iterable) -> list:
        from concurrent.futures.process import BrokenProcessPool

        if self._pool is None:
            raise RuntimeError("ProcessPool.map_calls needs share(data) first (the data "
                               "reach the workers through the pool initializer)")
        items = list(items)
        try:
            return list(self._pool.map(_pool_call, [func] * len(items), items))
        except BrokenProcessPool as err:
            # A worker that dies (killed for memory, a crash in native code) leaves no
            # exception of its own: say what was running and where to look.
            self.__exit__()
            raise RuntimeError(
                f"executor='processes': a worker process died while running "
                f"{getattr(func, '__name__', func)!r} on {len(items)} task(s) ({err}); the "
                f"usual causes are running out of memory (lower block_size or max_memory, or "
                f"use fewer workers) or a crash in the kernel function") from err

    def map(self, job: TileJob, tiles: Iterable[Tile]) -> Iterator:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, _cores() // self.workers)
        with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_pool, initargs=(job, threads)) as pool:
            futures = [pool.submit(_pool_task, t) for t in tiles]
            for fut in as_completed(futures):
                yield fut.result()


class DaskCluster:
    """A Dask ``distributed`` cluster: a new LocalCluster of ``workers`` processes
    (``address=None``), a scheduler address such as ``"tcp://10.0.0.1:8786"``, or an existing
    ``distributed.Client``. Workers run one task at a time; torch threads are set per worker
    (``cores // worker processes on that host``, or ``torch_threads``) by a worker plugin, so
    replacement workers get it too. The job is scattered once; a tile lost with its worker is
    retried (``retries``) elsewhere.

    The same plugin lets each worker's glibc keep freed memory for reuse
    (:func:`reuse_freed_memory`): Dask's nannies start workers with
    ``MALLOC_TRIM_THRESHOLD_=65536``, under which every tile's temporaries are returned to
    the OS when freed and page-fault afresh in the next tile (bench/RESULTS.md gives the
    measured cost). A worker may then hold up to ``1 GiB`` of freed memory
    that Dask reports as unmanaged."""

    def __init__(self, address=None, *, workers: int = 2, torch_threads: int | None = None,
                 retries: int = 3, timeout: float | None = None):
        self.address, self.workers, self.timeout = address, workers, timeout
        self.torch_threads, self.retries = torch_threads, retries
        self._own: list = []
        self.local = False  # a remote cluster's writes are read back by the driver

    def __enter__(self):
        from distributed import Client, LocalCluster

        if self.address is None:
            cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            self.client = Client(cluster)
            self._own = [self.client, cluster]
            self.local = True  # our own LocalCluster: its workers share this filesystem
        elif isinstance(self.address, Client):
            self.client = self.address
        else:
            try:
                kwargs = {} if self.timeout is None else {"timeout": self.timeout}
                self.client = Client(self.address, **kwargs)
            except OSError as err:
                raise TimeoutError(
                    f"executor: no Dask scheduler answered at {self.address!r} (is it running "
                    f"and reachable from here?): {err}") from None
            self._own = [self.client]
        hosts: dict[str, int] = {}
        for addr in self.client.scheduler_info()["workers"]:
            host = addr.rsplit(":", 1)[0]
            hosts[host] = hosts.get(host, 0) + 1
        # Workers that all listen on this machine's loopback share its filesystem.
        self.local = self.local or (bool(hosts) and all(map(_loopback, hosts)))
        self.client.register_plugin(_worker_plugin(self.torch_threads, hosts),
                                    name="ntkit-worker")
        return self

    def __exit__(self, *exc):
        for obj in self._own:
            obj.close()
        return False

    def share(self, data):
        return self.client.scatter(data, broadcast=True, hash=False)

    def map_calls(self, func, shared, items: Iterable) -> list:
        items = list(items)
        futures = self.client.map(func, [shared] * len(items), items, pure=False,
                                  retries=self.retries)
        try:
            return self.client.gather(futures)
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def map(self, job: TileJob, tiles: Iterable[Tile]) -> Iterator:
        from distributed import as_completed

        shared = self.client.scatter(job, broadcast=True, hash=False)
        futures = [self.client.submit(run_tile, shared, t, retries=self.retries, pure=False,
                                      key=f"ntkit-tile-{t.key}-{os.getpid()}-{id(job)}")
                   for t in tiles]
        try:
            for fut in as_completed(futures):
                yield fut.result()
                fut.release()
        finally:  # a failed run stops its queued tiles
            self.client.cancel([f for f in futures if not f.done()])


def _loopback(host: str) -> bool:
    """Whether a worker address's host part (``tcp://127.0.0.1``) is this machine's
    loopback interface."""
    name = host.split("://", 1)[-1].strip("[]")
    return name in ("localhost", "::1") or name.startswith("127.") or host.startswith("inproc")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
_KEEP_FREED = 1 << 30  # bytes of freed heap memory kept before returning it to the OS
_MMAP_FROM = 32 << 20  # glibc's largest mmap threshold: smaller blocks come from the heap


def reuse_freed_memory() -> bool:
    """Let glibc keep up to ``1 GiB`` of freed memory for reuse and serve blocks under
    ``32 MiB`` from the heap, so that one tile's temporaries are reused by the next instead
    of being unmapped and page-faulted again. ``False`` where this is not glibc on Linux."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED) and mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM))


def _worker_plugin(threads: int | None, hosts: dict[str, int]):
    """A worker plugin setting torch's intra-op threads in each worker process and letting
    it reuse freed memory (see :class:`DaskCluster`)."""
    from distributed import WorkerPlugin

    class NtkitWorker(WorkerPlugin):
        def setup(self, worker):
            n = threads
            if n is None:
                here = hosts.get(worker.address.rsplit(":", 1)[0], 1)
                n = max(1, _cores() // here)
            torch.set_num_threads(n)
            reuse_freed_memory()

    return NtkitWorker()


def _import_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError as err:
        raise ImportError('a Dask executor needs dask.distributed: pip install "ntkit[dist]"'
                          ) from err


def make_executor(executor, *, workers: int | None, timeout: float | None = None):
    """The executor for ``compute``'s ``executor`` argument (see there); ``timeout``: seconds
    to wait for a Dask scheduler given by address (``None``: Dask's
    ``distributed.comm.timeouts.connect``)."""
    if executor is None or executor == "inprocess":
        return InProcess()
    if executor == "processes":
        return ProcessPool(workers or _cores())
    if executor == "dask":
        _import_distributed()
        return DaskCluster(workers=workers or 2)
    if isinstance(executor, str) and "://" in executor:
        _import_distributed()
        return DaskCluster(executor, timeout=timeout)
    if hasattr(executor, "submit") and hasattr(executor, "scatter"):
        return DaskCluster(executor)  # a distributed.Client
    if hasattr(executor, "map") and hasattr(executor, "__enter__"):
        return executor
    raise ValueError(
        f"executor must be None/'inprocess', 'processes', 'dask', a scheduler address "
        f"('tcp://host:8786') or a distributed.Client; got {executor!r}"
    )
