"""The tile store: a Zarr group (one chunk per tile), its provenance, and the manifest.

Layout of a store directory::

    K.zarr/zarr.json        group; attributes["ntkit_tiles"] hold the provenance
    K.zarr/nngp, K.zarr/ntk Zarr arrays (N1, N2), chunks (min(tile, N1), min(tile, N2)), NaN
                            where not computed
    K.zarr/_manifest/I.J.json  one file per finished tile: its checksums (written after
                            the tile's data, atomically by rename)
    K.zarr/_log.jsonl       one line per event (tile computed / found corrupt), for audits

A tile is finished exactly when its manifest file exists; its checksums let every read and
every rerun detect data that changed after they were recorded. A store may come from
elsewhere, so its JSON files are read with a bound and its provenance is checked before
anything is planned from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import zlib
from pathlib import Path

import numpy as np

from .._paths import read_regular
from ._plan import Tile, tile_count

__all__ = ["STORE_FORMAT", "MAX_TILE", "MAX_TILES", "CorruptTileError", "import_zarr",
           "fingerprint", "checksum", "check_location", "check_tiling", "check_provenance",
           "read_provenance", "create_or_check", "remove_if_empty", "open_group", "write_tile",
           "read_tile", "matches", "tile_intact", "record", "read_manifest", "forget",
           "log_event", "store_path"]

STORE_FORMAT = 1
_ATTR = "ntkit_tiles"
# Provenance keys that must agree for a rerun to add tiles to an existing store.
MUST_MATCH = ("format", "spec_hash", "dtype", "x1", "x2", "symmetric", "tile", "batch_size",
              "get", "n1", "n2", "torch_version")
# A tile is held in memory whole (a float64 tile of 65536 x 65536 is 32 GiB), and a store's
# plan is a list of its tiles: both bounded, so that a crafted provenance cannot make a
# reader allocate without limit.
MAX_TILE = 1 << 16
MAX_TILES = 1 << 20
_MAX_N = 1 << 40
DTYPES = ("float16", "float32", "float64")
# The group's zarr.json holds the provenance and with it the spec (itself at most 1 MB).
_MAX_JSON = 8 << 20
_MAX_ENTRY = 64 << 10


class CorruptTileError(ValueError):
    """A finished tile whose data no longer matches the checksum recorded when it was written
    (a deleted or altered chunk). ``i``, ``j``: the tile's indices; ``name``: the kernel."""

    def __init__(self, path, i: int, j: int, name: str):
        self.path, self.i, self.j, self.name = path, i, j, name
        super().__init__(f"tile {i}.{j} of {name!r} in {path} does not match its recorded "
                         f"checksum (a deleted or altered chunk); rerun ntkit.tiles.compute on "
                         f"this store to recompute it")


def import_zarr():
    try:
        import zarr
    except ImportError as err:
        raise ImportError('ntkit.tiles needs zarr: pip install "ntkit[dist]"') from err
    return zarr


def store_path(store) -> Path:
    """The store as a local directory path (``str`` or ``os.PathLike``)."""
    if not isinstance(store, (str, os.PathLike)):
        raise TypeError(f"store must be a directory path (str or Path); got {type(store).__name__}")
    return Path(store)


def check_location(path: Path) -> bool:
    """Whether ``path`` holds a tile store already; raises ``ValueError`` where one cannot be
    created there (a file, or a directory holding other things)."""
    if (path / "zarr.json").exists():
        return True
    if path.exists() and not path.is_dir():
        raise ValueError(f"store {path} is a file; the store is a directory: choose another path")
    if path.is_dir() and any(path.iterdir()):
        raise ValueError(f"store {path} exists, is not empty and is not an ntkit tile store")
    return False


def check_tiling(n1: int, n2: int | None, tile: int) -> None:
    """Bounds on one tile and on the number of tiles (see ``MAX_TILE``, ``MAX_TILES``)."""
    if tile > MAX_TILE:
        raise ValueError(f"tile={tile} is over the limit of {MAX_TILE} rows (a tile is held in "
                         f"memory whole); choose a smaller tile")
    count = tile_count(n1, n2, tile)
    if count > MAX_TILES:
        raise ValueError(f"tile={tile} cuts the {n1} x {n1 if n2 is None else n2} kernel into "
                         f"{count} tiles, over the limit of {MAX_TILES}; choose a larger tile")


def fingerprint(x: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order): equal inputs, equal prints."""
    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    h.update(np.ascontiguousarray(x).data)
    return h.hexdigest()


def checksum(block: np.ndarray) -> str:
    """CRC-32 of a tile's bytes as stored (C order), ``"crc32:xxxxxxxx"``."""
    return f"crc32:{zlib.crc32(np.ascontiguousarray(block).data):08x}"


def _read_json(path: Path, limit: int):
    """The JSON document in the regular file ``path`` of at most ``limit`` bytes."""
    data = read_regular(path, limit=limit)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{path} is not valid JSON ({type(err).__name__})") from None


def _field(p: dict, key: str, kind, where: str):
    value = p.get(key)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{where}: provenance field {key!r} must be an integer; got "
                         f"{_short(value)}")
    if kind is not int and not isinstance(value, kind):
        raise ValueError(f"{where}: provenance field {key!r} has the wrong type "
                         f"({type(value).__name__})")
    return value


def check_provenance(p, where) -> dict:
    """``p`` if it is a provenance that this version writes: the fields' types, ``1 <= N1,
    N2 <= 2**40``, ``1 <= tile <= max(N1, N2)`` within the tiling bounds, ``get`` and
    ``dtype`` among the known ones; raises ``ValueError`` naming the field otherwise."""
    if not isinstance(p, dict):
        raise ValueError(f"{where} is not an ntkit tile store (no ntkit_tiles provenance)")
    if p.get("format") != STORE_FORMAT:
        raise ValueError(f"{where}: store format {_short(p.get('format'))} is not "
                         f"{STORE_FORMAT}, the one this ntkit reads")
    for key in ("spec_hash", "x1", "ntkit_version", "torch_version", "dtype"):
        _field(p, key, str, where)
    _field(p, "spec", dict, where)
    _field(p, "x2", (str, type(None)), where)
    symmetric = _field(p, "symmetric", bool, where)
    n1, n2, tile, batch = (_field(p, k, int, where) for k in ("n1", "n2", "tile", "batch_size"))
    if not (1 <= n1 <= _MAX_N and 1 <= n2 <= _MAX_N):
        raise ValueError(f"{where}: provenance kernel size {n1} x {n2} is out of range")
    if symmetric and (n1 != n2 or p["x2"] is not None):
        raise ValueError(f"{where}: provenance says symmetric but has n1={n1}, n2={n2}")
    if not 1 <= tile <= max(n1, n2):
        raise ValueError(f"{where}: provenance tile={tile} is not between 1 and {max(n1, n2)}")
    if batch < 1:
        raise ValueError(f"{where}: provenance batch_size={batch} is not positive")
    check_tiling(n1, None if symmetric else n2, tile)
    get = _field(p, "get", list, where)
    if not get or len(set(get)) != len(get) or not set(get) <= {"nngp", "ntk"}:
        raise ValueError(f"{where}: provenance get={_short(get)} is not a list of 'nngp'/'ntk'")
    if p["dtype"] not in DTYPES:
        raise ValueError(f"{where}: provenance dtype {_short(p['dtype'])} is not one of {DTYPES}")
    return p


def read_provenance(path: Path) -> dict:
    """The checked provenance of the store at ``path``, whose arrays' metadata must agree
    with it (shape, chunks one tile each, dtype); read without Zarr, with bounded reads."""
    meta = _read_json(path / "zarr.json", _MAX_JSON)
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    p = check_provenance(attrs.get(_ATTR) if isinstance(attrs, dict) else None, str(path))
    n1, n2, tile = p["n1"], p["n2"], p["tile"]
    want = {"shape": [n1, n2], "chunks": [min(tile, n1), min(tile, n2)], "dtype": p["dtype"]}
    for name in p["get"]:
        try:
            arr = _read_json(path / name / "zarr.json", _MAX_ENTRY)
            got = {"shape": arr["shape"], "dtype": arr["data_type"],
                   "chunks": arr["chunk_grid"]["configuration"]["chunk_shape"]}
        except (OSError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: array {name!r} is missing or unreadable "
                             f"({type(err).__name__})") from None
        for key in want:
            if got[key] != want[key]:
                raise ValueError(f"{path}: array {name!r} has {key} {_short(got[key])}, the "
                                 f"provenance says {want[key]}")
    return p


def open_group(path: Path, mode: str = "r"):
    return import_zarr().open_group(str(path), mode=mode)


def create_or_check(path: Path, provenance: dict, *, shape: tuple[int, int], tile: int,
                    get: tuple[str, ...]):
    """``(group, created)``: the store, created with ``provenance`` if missing, or an existing
    one made by the same computation (spec, inputs, dtype, tiling; else ``ValueError`` naming
    what differs). A new store is built in a sibling directory and renamed into place, so
    that concurrent runs see no half-made store and exactly one of them creates it."""
    if not check_location(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            group = open_group(tmp, mode="w")
            chunks = (min(tile, shape[0]), min(tile, shape[1]))
            for name in get:
                group.create_array(name, shape=shape, chunks=chunks, dtype=provenance["dtype"],
                                   compressors=None, fill_value=float("nan"))
            (tmp / "_manifest").mkdir()
            group.attrs[_ATTR] = provenance
            try:
                os.rename(tmp, path)  # replaces an empty directory, fails on a non-empty one
            except OSError:
                if not (path / "zarr.json").exists():
                    raise
            else:
                return open_group(path, mode="r+"), True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    old = read_provenance(path)
    diff = [k for k in MUST_MATCH if old.get(k) != provenance.get(k)]
    if diff:
        shown = "; ".join(f"{k}: store has {_short(old.get(k))}, this run "
                          f"{_short(provenance.get(k))}" for k in diff)
        raise ValueError(
            f"store {path} holds tiles of a different computation and will not mix them "
            f"({shown}); use a new store path, or delete this one to start over"
        )
    return open_group(path, mode="r+"), False


def remove_if_empty(path: Path) -> None:
    """Delete a store that this run created if it holds no finished tile (a failed run leaves
    nothing behind, and never takes a finished tile with it)."""
    manifest = path / "_manifest"
    if manifest.is_dir() and not any(manifest.iterdir()):
        shutil.rmtree(path, ignore_errors=True)


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 24 else text[:21] + "..."


def write_tile(group, tile: Tile, blocks: dict[str, np.ndarray]) -> dict[str, str]:
    """Write one tile (its own chunk of each array) and return the checksums of its data."""
    sums = {}
    for name, block in blocks.items():
        group[name][tile.r0:tile.r1, tile.c0:tile.c1] = block
        sums[name] = checksum(block)
    return sums


def read_tile(group, tile: Tile, name: str) -> np.ndarray:
    return group[name][tile.r0:tile.r1, tile.c0:tile.c1]


def matches(block: np.ndarray, entry: dict, name: str) -> bool:
    """Whether the whole tile ``block`` of kernel ``name`` has the checksum recorded in its
    manifest ``entry``."""
    sums = entry.get("checksums") if isinstance(entry, dict) else None
    return isinstance(sums, dict) and checksum(block) == sums.get(name)


def tile_intact(group, tile: Tile, entry: dict, names) -> bool:
    """Whether each kernel in ``names`` reads back with the checksum in manifest ``entry``."""
    try:
        return all(matches(read_tile(group, tile, n), entry, n) for n in names)
    except Exception:  # noqa: BLE001 - an unreadable chunk is a corrupt tile
        return False


def record(path: Path, tile: Tile, sums: dict[str, str], *, run: str, seconds: float) -> None:
    """Mark ``tile`` finished: its manifest file, written whole then renamed into place (after
    the data: a tile in the manifest always has its data)."""
    entry = {"tile": [tile.i, tile.j], "rows": [tile.r0, tile.r1], "cols": [tile.c0, tile.c1],
             "checksums": sums, "run": run, "seconds": round(seconds, 4)}
    final = path / "_manifest" / f"{tile.key}.json"
    tmp = final.with_name(f"{final.name}.{uuid.uuid4().hex[:12]}.tmp")  # one per writer
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, final)
    log_event(path, "computed", tile, run=run)


def read_manifest(path: Path, keys) -> dict[str, dict]:
    """The finished tiles among ``keys`` (``"I.J"``): ``{key: entry}``. Other files are
    ignored; an entry that is unreadable, too large or not a regular file counts as missing."""
    out = {}
    with os.scandir(path / "_manifest") as entries:
        for f in entries:
            key = f.name[:-5]
            if not f.name.endswith(".json") or key not in keys:
                continue
            try:
                entry = _read_json(Path(f.path), _MAX_ENTRY)
            except (OSError, ValueError):
                continue  # the tile counts as missing and is recomputed
            if isinstance(entry, dict):
                out[key] = entry
    return out


def forget(path: Path, tile: Tile, *, run: str, why: str) -> None:
    """Drop ``tile`` from the manifest (it will be recomputed)."""
    (path / "_manifest" / f"{tile.key}.json").unlink(missing_ok=True)
    log_event(path, why, tile, run=run)


def log_event(path: Path, event: str, tile: Tile, *, run: str) -> None:
    line = json.dumps({"event": event, "tile": tile.key, "run": run, "time": time.time()})
    with open(path / "_log.jsonl", "a") as f:
        f.write(line + "\n")
