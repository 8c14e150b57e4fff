"""The ``ntkit`` command: every failure is one line ``ntkit <cmd>: message`` with status 2,
checked before any work, leaving no store behind; output locations are prepared first."""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ntkit
from ntkit import layers as L
from ntkit import tiles
from ntkit.cli import main


def _net():
    return L.serial(L.Dense(16, W_std=1.5, b_std=0.1), L.ReLU(), L.Dense(1))


@pytest.fixture
def files(tmp_path):
    """A spec, inputs ``x.npy`` (40 x 3, float64) and the argv that computes their kernel."""
    L.save_spec(_net(), tmp_path / "net.json")
    x = np.random.default_rng(0).standard_normal((40, 3))
    np.save(tmp_path / "x.npy", x)
    argv = ["kernel", str(tmp_path / "net.json"), str(tmp_path / "x.npy"), "--out",
            str(tmp_path / "K.zarr"), "--tile", "16", "--no-progress"]
    return tmp_path, argv, torch.from_numpy(x)


def test_kernel_and_status(files, capsys):
    tmp, argv, x = files
    assert main(argv) == 0
    # tiles.compute equals net.kernel with its block size bit for bit (the same computation).
    assert torch.equal(tiles.open(tmp / "K.zarr").ntk.load(), _net().kernel(x, batch_size=16).ntk)
    capsys.readouterr()
    assert main(["kernel", "status", str(tmp / "K.zarr"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "tiles: 6/6 done\n" in text and L.spec_hash(_net())[:12] in text
    (tmp / "bad.json").write_text(json.dumps(
        {"ntkit_spec": 1, "net": {"type": "Dense", "out_features": -3}}))
    assert main(["kernel", str(tmp / "bad.json"), str(tmp / "x.npy"), "--out",
                 str(tmp / "b.zarr")]) == 2
    assert "out_features must be between 1" in capsys.readouterr().err


def test_version_and_documented_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"ntkit {ntkit.__version__}\n"
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "initialisations per width (default: 8)" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["kernel", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--get {both,nngp,ntk} the kernels to store: both, nngp or ntk (default: both)" in text


def _overflow(tmp, argv):
    doc = json.loads((tmp / "net.json").read_text())
    doc["net"]["layers"][0]["W_std"] = 1e308  # finite, but its square overflows
    (tmp / "net.json").write_text(json.dumps(doc))
    return "OverflowError"


def _lying_header(tmp, argv):
    x = np.load(tmp / "x.npy")
    with open(tmp / "x.npy", "wb") as f:  # would allocate 224 GiB before reading 960 bytes
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                                 "shape": (9999999999, 3)})
        f.write(x.tobytes())
    return r"X: the header of .*x.npy says shape \(9999999999, 3\) float64 \(239999999976 " \
           r"bytes\) but 960 bytes follow it"


def _out_is_a_file(tmp, argv):
    argv[argv.index("--out") + 1] = str(tmp / "net.json")
    return r"store .*net.json is a file"


def _zarr_missing(tmp, argv, monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)  # as if the dist extra were not installed
    return r'ntkit.tiles needs zarr: pip install "ntkit\[dist\]"'


def _read_only(tmp, argv, monkeypatch):
    # Tests run as root, for whom chmod does not stop writes: the filesystem refuses instead.
    ro = tmp / "ro"
    ro.mkdir()
    real = os.mkdir

    def mkdir(path, *args, **kwargs):
        if Path(path).is_relative_to(ro):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    argv[argv.index("--out") + 1] = str(ro / "K.zarr")
    return "Read-only file system"


def _no_scheduler(tmp, argv, monkeypatch):
    import dask
    import distributed  # noqa: F401 - loads its configuration defaults, patched here

    timeouts = dask.config.config["distributed"]["comm"]["timeouts"]
    monkeypatch.setitem(timeouts, "connect", "0.5s")  # not the 30 s default
    argv += ["--scheduler", "tcp://127.0.0.1:1"]  # nothing listens on port 1
    return r"Timed out trying to connect to tcp://127.0.0.1:1"


@pytest.mark.parametrize("case", [_overflow, _lying_header, _out_is_a_file, _zarr_missing,
                                  _read_only, _no_scheduler])
def test_kernel_failures_are_one_line_and_leave_no_store(files, capsys, monkeypatch, case):
    tmp, argv, _ = files
    before = sorted(p.name for p in tmp.rglob("*"))
    args = (tmp, argv, monkeypatch) if case.__code__.co_argcount == 3 else (tmp, argv)
    match = case(*args)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ntkit kernel: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and re.search(match, err), err
    assert sorted(p.name for p in tmp.rglob("*")) == sorted(before + (
        ["ro"] if case is _read_only else [])), "the failed run left files behind"


def test_kernel_tile_larger_than_the_kernel_is_clamped(files):
    tmp, argv, x = files
    argv[argv.index("--tile") + 1] = "1000000000"  # once: 6.94 EiB requested
    assert main(argv) == 0
    k = tiles.open(tmp / "K.zarr")
    assert k.tile == 40 and k.total == 1
    # tiles.compute equals net.kernel with its block size bit for bit (the same computation):
    # 512 rows per block, here one block of 40.
    assert torch.equal(k.ntk.load(), _net().kernel(x).ntk)


def test_kernel_status_reads_the_tiles(files, capsys):
    tmp, argv, _ = files
    assert main(argv) == 0
    store = tmp / "K.zarr"
    (store / "ntk" / "c" / "0" / "1").unlink()  # finished tile 0.1 loses its data
    (store / "_manifest" / "2.2.json").unlink()  # tile 2.2 was never finished
    capsys.readouterr()
    assert main(["kernel", "status", str(store), "--no-progress"]) == 0
    assert "tiles: 4/6 done, 1 missing, 1 corrupt (0.1) (rerun ntkit kernel to finish)" \
        in capsys.readouterr().out
    assert main(["kernel", "status", str(store), "--no-verify"]) == 0
    assert "tiles: 5/6 done, 1 missing (rerun" in capsys.readouterr().out
    assert main(argv) == 0  # the rerun recomputes both
    assert main(["kernel", "status", str(store), "--no-progress"]) == 0
    assert "tiles: 6/6 done\n" in capsys.readouterr().out


def test_kernel_status_of_a_crafted_store_fails_at_once(files, capsys):
    tmp, argv, _ = files
    assert main(argv) == 0
    meta = json.loads((tmp / "K.zarr" / "zarr.json").read_text())
    meta["attributes"]["ntkit_tiles"].update(n1=10**6, n2=10**6, tile=1)
    (tmp / "K.zarr" / "zarr.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["kernel", "status", str(tmp / "K.zarr")]) == 2
    assert "500000500000 tiles, over the limit of 1048576" in capsys.readouterr().err


def test_uci_json_location_is_prepared_before_the_run(tmp_path, monkeypatch, capsys):
    import ntkit.apps.uci as uci

    calls = []
    # The stub sees the folder already made: the location is prepared before the benchmark.
    monkeypatch.setattr(uci, "run_uci", lambda *a, **k: calls.append(
        (k["json_path"], Path(k["json_path"]).parent.is_dir())) or {"results": []})
    out = tmp_path / "no" / "such" / "dir" / "out.json"
    assert main(["uci", str(tmp_path), "--json", str(out), "--no-progress"]) == 0
    assert calls == [(str(out), True)]
    assert main(["uci", str(tmp_path), "--json", str(tmp_path / "no")]) == 2
    expected = f"ntkit uci: --json: {tmp_path / 'no'} is a folder; expected a file path\n"
    assert capsys.readouterr().err == expected
    assert len(calls) == 1  # refused before the benchmark ran


def test_demo_out_is_prepared_before_the_run(tmp_path, monkeypatch, capsys):
    import ntkit.apps.demo as demo

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda **k: calls.append(k["out_dir"]))
    (tmp_path / "a_file").write_text("")
    assert main(["demo", "--out", str(tmp_path / "a_file")]) == 2
    expected = f"ntkit demo: --out: {tmp_path / 'a_file'} exists and is not a folder\n"
    assert capsys.readouterr().err == expected
    assert calls == []
    assert main(["demo", "--out", str(tmp_path / "new" / "plots"), "--no-progress"]) == 0
    assert (tmp_path / "new" / "plots").is_dir() and calls == [str(tmp_path / "new" / "plots")]
