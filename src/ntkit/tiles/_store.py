"""The tile store: a Zarr group (one chunk per tile), its provenance, and the manifest.

Layout of a store directory::

    K.zarr/zarr.json        group; attributes["ntkit_tiles"] hold the provenance
    K.zarr/nngp, K.zarr/ntk Zarr arrays (N1, N2), chunks (tile, tile), NaN where not computed
    K.zarr/_manifest/I.J.json  one file per finished tile: its checksums (written after
                            the tile's data, atomically by rename)
    K.zarr/_log.jsonl       one line per event (tile computed / found corrupt), for audits

A tile is finished exactly when its manifest file exists; its checksums let a rerun detect
data that changed after they were recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from pathlib import Path

import numpy as np

from ._plan import Tile

__all__ = ["STORE_FORMAT", "fingerprint", "checksum", "create_or_check", "open_group",
           "write_tile", "read_tile", "record", "read_manifest", "forget", "log_event",
           "store_path"]

STORE_FORMAT = 1
_ATTR = "ntkit_tiles"
# Provenance keys that must agree for a rerun to add tiles to an existing store.
MUST_MATCH = ("format", "spec_hash", "dtype", "x1", "x2", "symmetric", "tile", "batch_size",
              "get", "n1", "n2", "torch_version")


def store_path(store) -> Path:
    """The store as a local directory path (``str`` or ``os.PathLike``)."""
    if not isinstance(store, (str, os.PathLike)):
        raise TypeError(f"store must be a directory path (str or Path); got {type(store).__name__}")
    return Path(store)


def fingerprint(x: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order): equal inputs, equal prints."""
    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    h.update(np.ascontiguousarray(x).data)
    return h.hexdigest()


def checksum(block: np.ndarray) -> str:
    """CRC-32 of a tile's bytes as stored (C order), ``"crc32:xxxxxxxx"``."""
    return f"crc32:{zlib.crc32(np.ascontiguousarray(block).data):08x}"


def open_group(path: Path, mode: str = "r"):
    import zarr

    return zarr.open_group(str(path), mode=mode)


def create_or_check(path: Path, provenance: dict, *, shape: tuple[int, int], tile: int,
                    get: tuple[str, ...]):
    """Create the store with ``provenance``, or check that an existing one was made by the same
    computation (spec, inputs, dtype, tiling); raises ``ValueError`` naming what differs."""
    import zarr

    if (path / "zarr.json").exists():
        group = zarr.open_group(str(path), mode="r+")
        old = group.attrs.get(_ATTR)
        if not isinstance(old, dict):
            raise ValueError(f"store {path} exists but was not written by ntkit.tiles; choose "
                             f"another path")
        diff = [k for k in MUST_MATCH if old.get(k) != provenance.get(k)]
        if diff:
            shown = "; ".join(f"{k}: store has {_short(old.get(k))}, this run "
                              f"{_short(provenance.get(k))}" for k in diff)
            raise ValueError(
                f"store {path} holds tiles of a different computation and will not mix them "
                f"({shown}); use a new store path, or delete this one to start over"
            )
        return group
    if path.exists() and any(path.iterdir()):
        raise ValueError(f"store {path} exists, is not empty and is not an ntkit tile store")
    group = zarr.open_group(str(path), mode="w")
    for name in get:
        group.create_array(name, shape=shape, chunks=(tile, tile), dtype=provenance["dtype"],
                           compressors=None, fill_value=float("nan"))
    (path / "_manifest").mkdir()
    group.attrs[_ATTR] = provenance  # last: a store with provenance has its arrays
    return group


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 24 else text[:21] + "..."


def provenance_of(group) -> dict:
    return dict(group.attrs[_ATTR])


def write_tile(group, tile: Tile, blocks: dict[str, np.ndarray]) -> dict[str, str]:
    """Write one tile (its own chunk of each array) and return the checksums of its data."""
    sums = {}
    for name, block in blocks.items():
        group[name][tile.r0:tile.r1, tile.c0:tile.c1] = block
        sums[name] = checksum(block)
    return sums


def read_tile(group, tile: Tile, name: str) -> np.ndarray:
    return group[name][tile.r0:tile.r1, tile.c0:tile.c1]


def record(path: Path, tile: Tile, sums: dict[str, str], *, run: str, seconds: float) -> None:
    """Mark ``tile`` finished: its manifest file, written whole then renamed into place (after
    the data: a tile in the manifest always has its data)."""
    entry = {"tile": [tile.i, tile.j], "rows": [tile.r0, tile.r1], "cols": [tile.c0, tile.c1],
             "checksums": sums, "run": run, "seconds": round(seconds, 4)}
    final = path / "_manifest" / f"{tile.key}.json"
    tmp = final.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, final)
    log_event(path, "computed", tile, run=run)


def read_manifest(path: Path) -> dict[str, dict]:
    """The finished tiles: ``{"I.J": entry}``."""
    out = {}
    for f in (path / "_manifest").glob("*.json"):
        try:
            out[f.stem] = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # unreadable entry: the tile counts as missing and is recomputed
    return out


def forget(path: Path, tile: Tile, *, run: str, why: str) -> None:
    """Drop ``tile`` from the manifest (it will be recomputed)."""
    (path / "_manifest" / f"{tile.key}.json").unlink(missing_ok=True)
    log_event(path, why, tile, run=run)


def log_event(path: Path, event: str, tile: Tile, *, run: str) -> None:
    line = json.dumps({"event": event, "tile": tile.key, "run": run, "time": time.time()})
    with open(path / "_log.jsonl", "a") as f:
        f.write(line + "\n")
