"""ntkit.tiles: tiled kernels equal the in-memory ones bit for bit, survive being killed, and
refuse to mix computations. One 2-worker Dask LocalCluster serves the whole module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from ntkit import layers as L
from ntkit import tiles

SRC = str(Path(__file__).resolve().parents[1] / "src")

# torch.equal against net.kernel(x, batch_size=b) throughout: a tile is the in-memory
# computation's own blocks (the same function on the same rows, in this process or a worker
# on this machine), so this is the same computation run twice and is documented by
# tiles.compute to agree bit for bit; reruns, resumes and read-backs are bit-exact too.


def _net():
    return L.serial(L.Dense(64, W_std=1.5, b_std=0.1), L.ReLU(), L.Dense(64, W_std=1.5),
                    L.ReLU(), L.Dense(1, W_std=1.5, b_std=0.1))


def _x(n, d=6, seed=0, dtype=torch.float64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _events(store) -> list[dict]:
    return [json.loads(line) for line in (Path(store) / "_log.jsonl").read_text().splitlines()]


def _computed(store) -> Counter:
    return Counter(e["tile"] for e in _events(store) if e["event"] == "computed")


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.mark.parametrize(("n", "tile", "bs"), [(70, 16, 8), (70, 30, 30), (70, 100, 50)])
def test_symmetric_tiles_equal_in_memory_exactly(tmp_path, n, tile, bs):
    # Tiles of 16 and 30 do not divide 70; 100 is one tile larger than N. Exact: each tile is
    # the in-memory computation's own blocks.
    net, x = _net(), _x(n)
    k = tiles.compute(net, x, store=tmp_path / "k.zarr", tile=tile, batch_size=bs,
                      progress=False)
    ref = net.kernel(x, batch_size=bs)
    assert torch.equal(k.nngp.load(), ref.nngp) and torch.equal(k.ntk.load(), ref.ntk)
    assert k.done == k.total == (-(-n // tile)) * (-(-n // tile) + 1) // 2
    assert torch.equal(k.ntk[5:41, 60], ref.ntk[5:41, 60])


def test_rectangular_and_default_tile_float32(tmp_path):
    net, x1, x2 = _net(), _x(50, seed=1), _x(33, seed=2)
    k = tiles.compute(net, x1, x2, store=tmp_path / "r.zarr", tile=16, batch_size=16,
                      progress=False)
    ref = net.kernel(x1, x2, batch_size=16)
    assert torch.equal(k.ntk.load(), ref.ntk) and torch.equal(k.nngp.load(), ref.nngp)
    assert k.total == 4 * 3
    # float32 with the defaults (tile 2048, blocks of 512): equal to net.kernel(x) itself.
    x = _x(90, dtype=torch.float32)
    k = tiles.compute(net, x, store=tmp_path / "f.zarr", get="ntk", progress=False)
    assert k.nngp is None and k.ntk.load().dtype == torch.float32
    assert torch.equal(k.ntk.load(), net.kernel(x, get="ntk").ntk)


def test_process_pool_matches(tmp_path):
    net, x = _net(), _x(40)
    k = tiles.compute(net, x, store=tmp_path / "p.zarr", tile=16, batch_size=16,
                      executor="processes", workers=2, progress=False)
    assert torch.equal(k.ntk.load(), net.kernel(x, batch_size=16).ntk)


def test_dask_matches_symmetric_and_rectangular(tmp_path, client):
    net, x1, x2 = _net(), _x(60, seed=3), _x(25, seed=4)
    k = tiles.compute(net, x1, store=tmp_path / "d.zarr", tile=20, batch_size=10,
                      executor=client, progress=False)
    assert torch.equal(k.ntk.load(), net.kernel(x1, batch_size=10).ntk)
    k = tiles.compute(net, x1, x2, store=tmp_path / "dr.zarr", tile=20, batch_size=10,
                      executor=client, progress=False)
    assert torch.equal(k.nngp.load(), net.kernel(x1, x2, batch_size=10).nngp)


def _freed_mb_kept() -> float:
    """Resident MB still held after writing and freeing a 16 MiB buffer."""
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    before = rss()
    a = np.ones(4 << 20, dtype=np.float32)
    del a
    return rss() - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc and /proc")
def test_dask_workers_keep_freed_memory_for_the_next_tile(client):
    from ntkit.tiles._executors import DaskCluster

    # The nannies trim at 64 KiB: a freed 16 MiB block goes back to the OS at once...
    assert set(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {"65536"}
    with DaskCluster(client) as ex:  # ... until ntkit's worker plugin is registered;
        kept = client.run(_freed_mb_kept)
        assert ex.local  # workers on 127.0.0.1 share this filesystem: no read-back
    # then it stays in the heap for reuse (16 MiB, less the pages of 4 KiB never touched).
    assert all(v > 15 for v in kept.values()), kept


def test_only_loopback_workers_count_as_local():
    from ntkit.tiles._executors import _loopback

    assert [_loopback(h) for h in ("tcp://127.0.0.1", "tcp://localhost", "tcp://[::1]",
                                   "inproc://10.0.0.5/123", "tcp://10.0.0.5",
                                   "tls://node-3.cluster")] == [True] * 4 + [False] * 2


def test_dask_worker_killed_mid_run_still_completes(tmp_path, client):
    # SIGKILL one worker process once some tiles are recorded; the nanny restarts it and the
    # lost tasks are retried elsewhere. Each recorded tile is recorded once.
    net, x = _net(), _x(150, seed=5)
    store = tmp_path / "w.zarr"
    pids = client.run(os.getpid)
    victim = next(iter(pids.values()))
    killed_at = []

    def kill_when_started():
        manifest = store / "_manifest"
        while not (manifest.exists() and len(list(manifest.glob("*.json"))) >= 5):
            time.sleep(0.005)
        killed_at.append(len(list(manifest.glob("*.json"))))
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_started, daemon=True)
    killer.start()
    k = tiles.compute(net, x, store=store, tile=10, batch_size=10, executor=client,
                      progress=False)
    killer.join(timeout=5)
    assert killed_at and killed_at[0] < k.total == 15 * 16 // 2
    assert victim not in client.run(os.getpid).values()  # it really died
    assert torch.equal(k.ntk.load(), net.kernel(x, batch_size=10).ntk)
    assert max(_computed(store).values()) == 1


def test_driver_killed_then_resumed_loses_and_repeats_nothing(tmp_path):
    # The driver dies (os._exit, no cleanup) right after recording its 7th tile; the rerun
    # computes only the others, and the 7 finished tiles keep the first run's records.
    store = tmp_path / "k.zarr"
    np.save(tmp_path / "x.npy", _x(80).numpy())
    script = (
        "import numpy as np, torch; from ntkit import layers as L, tiles;"
        f"net = L.from_json(open({str(tmp_path / 'net.json')!r}).read());"
        f"tiles.compute(net, torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r})),"
        f" store={str(store)!r}, tile=10, batch_size=10, progress=False)"
    )
    (tmp_path / "net.json").write_text(_net().to_json())
    env = dict(os.environ, NTKIT_TILES_EXIT_AFTER="7",
               PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    first = {e["tile"] for e in _events(store)}
    assert len(first) == 7 and len(list((store / "_manifest").glob("*.json"))) == 7
    runs = {json.loads(f.read_text())["run"] for f in (store / "_manifest").glob("*.json")}
    k = tiles.compute(_net(), torch.from_numpy(np.load(tmp_path / "x.npy")), store=store,
                      tile=10, batch_size=10, progress=False)
    assert k.complete and k.total == 36
    assert set(_computed(store).values()) == {1}  # no tile computed twice
    for key in first:
        assert json.loads((store / "_manifest" / f"{key}.json").read_text())["run"] in runs
    assert torch.equal(k.ntk.load(), _net().kernel(_x(80), batch_size=10).ntk)


def test_corrupt_tile_is_detected_and_recomputed(tmp_path):
    import zarr

    net, x = _net(), _x(40)
    store = tmp_path / "c.zarr"
    tiles.compute(net, x, store=store, tile=16, batch_size=16, progress=False)
    g = zarr.open_group(str(store), mode="r+")
    g["ntk"][16:32, 32:40] = g["ntk"][16:32, 32:40] * (1 + 1e-15)  # tile 1.2, a few ulps off
    k = tiles.compute(net, x, store=store, tile=16, batch_size=16, progress=False)
    assert [e["tile"] for e in _events(store) if e["event"] == "corrupt"] == ["1.2"]
    assert _computed(store)["1.2"] == 2 and _computed(store)["0.0"] == 1
    assert torch.equal(k.ntk.load(), net.kernel(x, batch_size=16).ntk)


def test_mismatched_rerun_is_refused(tmp_path):
    net, x = _net(), _x(30)
    store = tmp_path / "m.zarr"
    tiles.compute(net, x, store=store, tile=16, batch_size=16, progress=False)
    y = x.clone()
    y[3, 2] += 1e-12
    with pytest.raises(ValueError, match=r"different computation .*x1: store has"):
        tiles.compute(net, y, store=store, tile=16, batch_size=16, progress=False)
    other = L.serial(L.Dense(64, W_std=1.4), L.ReLU(), L.Dense(1))
    with pytest.raises(ValueError, match=r"spec_hash"):
        tiles.compute(other, x, store=store, tile=16, batch_size=16, progress=False)
    with pytest.raises(ValueError, match=r"tile: store has 16, this run 8"):
        tiles.compute(net, x, store=store, tile=8, batch_size=8, progress=False)
    with pytest.raises(ValueError, match=r"dtype"):
        tiles.compute(net, x.float(), store=store, tile=16, batch_size=16, progress=False)


def test_incomplete_store_and_bad_arguments(tmp_path):
    net, x = _net(), _x(30)
    with pytest.raises(ValueError, match=r"batch_size=7 must divide tile=16"):
        tiles.compute(net, x, store=tmp_path / "a.zarr", tile=16, batch_size=7)
    with pytest.raises(TypeError, match=r"tile must be a positive integer"):
        tiles.compute(net, x, store=tmp_path / "a.zarr", tile=16.0)
    with pytest.raises(TypeError, match=r"no serialisable spec|cannot be stored by name"):
        tiles.compute(L.serial(L.Dense(4), L.Elementwise(lambda t: t * t)), x,
                      store=tmp_path / "b.zarr")
    with pytest.raises(FileNotFoundError, match="no ntkit tile store"):
        tiles.open(tmp_path / "none.zarr")


# -- specs ----------------------------------------------------------------------------------
def test_spec_round_trip_every_layer():
    nets = [
        _net(), L.myrtle(5, width=16),
        L.serial(L.Dense(8, b_std=None, parametrization="standard"), L.ReLU(), L.Erf(),
                 L.LeakyReLU(0.1), L.Dense(4), L.Elementwise(torch.tanh, deg=20), L.Dense(1)),
        L.serial(L.FanOut(2), L.parallel(L.serial(L.Dense(4), L.GELU()), L.Identity()),
                 L.FanInSum(), L.LayerNorm(eps=1e-6), L.Dropout(0.1), L.Dense(2), L.FanOut(2),
                 L.FanInConcat()),
        L.serial(L.Conv(4, (3, 3), strides=(1, 2), padding="VALID"), L.AvgPool((2, 2)),
                 L.SumPool((2,), strides=2), L.Abs(), L.GlobalSumPool(), L.Dense(3), L.Sin(),
                 L.Dense(3), L.Cos(a=2.0), L.Dense(3), L.Gaussian(), L.Dense(3),
                 L.ABReLU(0.2, 0.9), L.Flatten(), L.GlobalAvgPool()),
    ]
    for net in nets:
        assert L.from_dict(net.to_dict()) == net and L.from_json(net.to_json()) == net
        assert L.spec_hash(L.from_json(net.to_json())) == L.spec_hash(net)
    assert L.spec_hash(nets[0]) != L.spec_hash(nets[1])


def _doc(net_dict):
    return json.dumps({"ntkit_spec": 1, "net": net_dict})


@pytest.mark.parametrize(("net", "err", "match"), [
    ({"type": "Evil"}, ValueError, r"net: unknown layer type 'Evil'"),
    ({"type": "Dense", "out_features": 8, "widht": 3}, ValueError,
     r"net \(Dense\): unknown field 'widht'"),
    ({"type": "Dense"}, ValueError, r"missing field 'out_features'"),
    ({"type": "Dense", "out_features": "8"}, TypeError, r"out_features must be an integer"),
    ({"type": "Dense", "out_features": True}, TypeError, r"out_features must be an integer"),
    ({"type": "Dense", "out_features": 8, "W_std": "1.5"}, TypeError,
     r"W_std must be a finite number"),
    ({"type": "Dense", "out_features": 10**12}, ValueError,
     r"out_features must be between 1 and 1000000"),
    ({"type": "Dense", "out_features": 8, "W_std": -1.0}, ValueError, r"W_std must be >= 0"),
    ({"type": "FanOut", "n": 10**6}, ValueError, r"n must be between 1 and 64"),
    ({"type": "Conv", "out_channels": 4, "filter_shape": [3, 10**5]}, ValueError,
     r"filter_shape\[1\] must be between 1 and 64"),
    ({"type": "Conv", "out_channels": 4, "filter_shape": [3] * 9}, TypeError,
     r"filter_shape must be a list of 1 to 3"),
    ({"type": "Elementwise", "fn": "__import__('os').system('x')"}, ValueError,
     r"fn: unknown function"),
    ({"type": "Elementwise", "fn": "tanh", "deg": 10**6}, ValueError, r"deg must be between"),
    ({"type": "Serial", "layers": [{"type": "Dense", "out_features": 1}] * 1001}, ValueError,
     r"more than 1000 layers"),
    ({"type": "Serial", "layers": []}, TypeError, r"layers must be a non-empty list"),
    ("Dense", TypeError, r"net: a layer must be a JSON object"),
])
def test_hostile_or_malformed_spec_is_refused(net, err, match):
    with pytest.raises(err, match=match):
        L.from_json(_doc(net))


def test_spec_document_checks(tmp_path):
    deep = {"type": "Dense", "out_features": 1}
    for _ in range(40):
        deep = {"type": "Serial", "layers": [deep]}
    with pytest.raises(ValueError, match=r"nested more than 32 deep"):
        L.from_json(_doc(deep))
    with pytest.raises(ValueError, match=r"'ntkit_spec' must be 1"):
        L.from_json(json.dumps({"ntkit_spec": 99, "net": {"type": "ReLU"}}))
    with pytest.raises(ValueError, match=r"unknown top-level field"):
        L.from_json(json.dumps({"ntkit_spec": 1, "net": {"type": "ReLU"}, "x": 1}))
    with pytest.raises(ValueError, match=r"NaN is not a number"):
        L.from_json('{"ntkit_spec": 1, "net": {"type": "Erf", "a": NaN}}')
    with pytest.raises(ValueError, match=r"not valid JSON"):
        L.from_json("{")
    with pytest.raises(ValueError, match=r"nested too deeply"):
        L.from_json("[" * 100_000 + "]" * 100_000)
    big = tmp_path / "big.json"
    big.write_text(" " * 2_000_000)
    with pytest.raises(ValueError, match=r"over the limit"):
        L.load_spec(big)


# -- reading verifies; stores are checked before use and never left behind (issue 17) -------
def test_reads_verify_each_tile_against_its_checksum(tmp_path):
    import zarr

    net, x = _net(), _x(40)
    store = tmp_path / "v.zarr"
    tiles.compute(net, x, store=store, tile=16, batch_size=16, progress=False)
    ref = net.kernel(x, batch_size=16)  # the same computation: bit-exact
    g = zarr.open_group(str(store), mode="r+")
    g["ntk"][16:32, 32:40] = g["ntk"][16:32, 32:40] * (1 + 1e-15)  # tile 1.2, a few ulps off
    (store / "nngp" / "c" / "0" / "1").unlink()  # tile 0.1's chunk deleted: reads as NaN
    k = tiles.open(store)
    assert k.done == k.total == 6 and k.check() == ["0.1", "1.2"]
    for kernel, rows, cols, ij in [(k.ntk, slice(None), slice(None), (1, 2)),
                                   (k.ntk, slice(33, 40), slice(20, 22), (1, 2)),  # mirrored
                                   (k.nngp, slice(0, 3), slice(20, 21), (0, 1))]:
        with pytest.raises(tiles.CorruptTileError, match=r"does not match its recorded") as e:
            kernel[rows, cols]
        assert isinstance(e.value, ValueError) and (e.value.i, e.value.j) == ij
        assert e.value.name == kernel.name
    # Untouched tiles read as computed; slices and load() are both tensors.
    assert torch.equal(k.ntk[:16, :32], ref.ntk[:16, :32])
    assert isinstance(k.ntk[3, 4:6], torch.Tensor) and isinstance(k.ntk[3, 5], torch.Tensor)
    # The opt-out reads what is there (the altered values), without reading whole tiles.
    fast = tiles.open(store, verify=False).ntk[16:32, 32:40]
    assert not torch.equal(fast, ref.ntk[16:32, 32:40])
    torch.testing.assert_close(fast, ref.ntk[16:32, 32:40], rtol=4e-15, atol=0)  # 1e-15 off
    with pytest.raises(TypeError, match=r"verify must be True or False"):
        tiles.open(store, verify="no")


def test_tile_is_clamped_to_the_kernel(tmp_path):
    def chunk_bytes(store):
        return sorted(f.stat().st_size for f in Path(store).glob("n*/c/*/*"))

    net, x = _net(), _x(40)
    ref = net.kernel(x, batch_size=40)  # one tile of 40 rows computed in one block
    # A tile of 200 on a 40 x 40 kernel once padded each chunk to 200 x 200 (a tile of
    # 20000: 6 GB); 10**9 asked for 6.94 EiB. Now one 40 x 40 tile, chunks of 40 x 40.
    for tile in (200, 10**9):
        k = tiles.compute(net, x, store=tmp_path / f"{tile}.zarr", tile=tile, batch_size=40,
                          progress=False)
        assert k.tile == k.provenance["tile"] == 40 and k.total == 1
        assert chunk_bytes(k.path) == [40 * 40 * 8] * 2
        assert torch.equal(k.ntk.load(), ref.ntk)
    # Rectangular: chunks are clamped per side, 10 x 30 rather than 30 x 30 (Zarr stores the
    # edge chunk of 10 x 20 at the full chunk size too).
    x2 = _x(50, seed=1)
    k = tiles.compute(net, x[:10], x2, store=tmp_path / "r.zarr", tile=30, batch_size=10,
                      progress=False)
    assert chunk_bytes(k.path) == [10 * 30 * 8] * 4
    assert torch.equal(k.nngp.load(), net.kernel(x[:10], x2, batch_size=10).nngp)
    # Too many tiles (2000 x 2000 in tiles of 1: 2001000 > 2**20) is refused up front.
    with pytest.raises(ValueError, match=r"2001000 tiles, over the limit of 1048576"):
        tiles.compute(net, _x(2000), store=tmp_path / "many.zarr", tile=1, progress=False)
    assert not (tmp_path / "many.zarr").exists()


def _craft(store: Path, **changes) -> None:
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["ntkit_tiles"].update(changes)
    (store / "zarr.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(("changes", "match"), [
    ({"n1": 10**6, "n2": 10**6, "tile": 1}, r"500000500000 tiles, over the limit of 1048576"),
    ({"n1": 64, "n2": 64}, r"array 'nngp' has shape \[30, 30\], the provenance says \[64, 64\]"),
    ({"tile": 8}, r"array 'nngp' has chunks \[16, 16\], the provenance says \[8, 8\]"),
    ({"tile": 10**9}, r"provenance tile=1000000000 is not between 1 and 30"),
    ({"tile": "16"}, r"field 'tile' must be an integer"),
    ({"n2": True}, r"field 'n2' must be an integer"),
    ({"get": ["ntk", "evil"]}, r"get=.* is not a list of 'nngp'/'ntk'"),
    ({"dtype": "object"}, r"dtype 'object' is not one of"),
    ({"symmetric": "yes"}, r"field 'symmetric' has the wrong type"),
    ({"format": 99}, r"store format 99 is not 1"),
])
def test_crafted_provenance_is_refused_on_open(tmp_path, changes, match):
    store = tmp_path / "p.zarr"
    tiles.compute(_net(), _x(30), store=store, tile=16, batch_size=16, progress=False)
    _craft(store, **changes)
    with pytest.raises(ValueError, match=match):
        tiles.open(store)
    with pytest.raises(ValueError, match=match):  # a rerun is refused the same way
        tiles.compute(_net(), _x(30), store=store, tile=16, batch_size=16, progress=False)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_store_metadata_is_read_bounded_from_regular_files_only(tmp_path):
    store = tmp_path / "b.zarr"
    tiles.compute(_net(), _x(30), store=store, tile=16, batch_size=16, progress=False)
    meta = (store / "zarr.json").read_text()
    (store / "zarr.json").write_text(meta[:-2] + " " * (8 << 20) + meta[-2:])
    with pytest.raises(ValueError, match=r"zarr.json is over the limit of 8388608 bytes"):
        tiles.open(store)
    (store / "zarr.json").unlink()
    os.mkfifo(store / "zarr.json")  # a reader of a FIFO waits for a writer: refused instead
    with pytest.raises(ValueError, match=r"zarr.json is not a regular file"):
        tiles.open(store)
    (store / "zarr.json").unlink()
    (store / "zarr.json").write_text(meta)
    (store / "_manifest" / "0.1.json").write_text("{")  # unreadable: the tile is missing
    (store / "_manifest" / "7.7.json").write_text("{}")  # not in the plan: ignored
    assert tiles.open(store).done == 2


def test_concurrent_runs_create_one_store(tmp_path):
    # Four runs start on the same new store at once: one creates it, the others use it
    # (each store creation once ended in FileExistsError '_manifest' for the losers).
    net, x, store = _net(), _x(30), tmp_path / "c.zarr"
    barrier, errors = threading.Barrier(4), []

    def run():
        barrier.wait()
        try:
            tiles.compute(net, x, store=store, tile=16, batch_size=16, progress=False)
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["c.zarr"]  # no temporary left over
    assert torch.equal(tiles.open(store).ntk.load(), net.kernel(x, batch_size=16).ntk)


class _Boom:
    """An executor whose first tile fails (a worker lost, a full disk)."""

    local = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, job, todo):
        raise RuntimeError("worker lost")
        yield


def test_failed_runs_leave_no_store_and_keep_finished_tiles(tmp_path, monkeypatch):
    net, x = _net(), _x(30)
    store = tmp_path / "f.zarr"
    with pytest.raises(ValueError, match=r"executor must be"):
        tiles.compute(net, x, store=store, executor="gpu-cluster", progress=False)
    with pytest.raises(ValueError, match=r"OverflowError .* too large\?"):  # W_std**2 = inf
        tiles.compute(L.serial(L.Dense(4, W_std=1e308), L.ReLU(), L.Dense(1)), x,
                      store=store, progress=False)
    with pytest.raises(ValueError, match=r"NaN or infinite entries"):  # (1e200)**2 = inf
        tiles.compute(net, x * 1e200, store=store, progress=False)
    with pytest.raises(RuntimeError, match="worker lost"):
        tiles.compute(net, x, store=store, tile=16, executor=_Boom(), progress=False)
    monkeypatch.setitem(sys.modules, "zarr", None)  # as if not installed
    with pytest.raises(ImportError, match=r'pip install "ntkit\[dist\]"'):
        tiles.compute(net, x, store=store, progress=False)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    # A store holding finished tiles is kept when a rerun fails.
    tiles.compute(net, x, store=store, tile=16, batch_size=16, progress=False)
    (store / "_manifest" / "1.1.json").unlink()
    with pytest.raises(RuntimeError, match="worker lost"):
        tiles.compute(net, x, store=store, tile=16, batch_size=16, executor=_Boom(),
                      progress=False)
    assert tiles.open(store).done == 2


def test_unreachable_scheduler_leaves_no_store(tmp_path):
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}), \
            pytest.raises(OSError, match=r"Timed out trying to connect"):
        tiles.compute(_net(), _x(30), store=tmp_path / "s.zarr",
                      executor="tcp://127.0.0.1:1", progress=False)
    assert list(tmp_path.iterdir()) == []
