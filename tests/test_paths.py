"""Output locations are checked and created before any work (defect 5.9)."""

from __future__ import annotations

import os

import pytest

from ntkit._paths import prepare_output_dir, prepare_output_file


def test_file_parents_are_created_and_nothing_is_written(tmp_path):
    out = prepare_output_file(str(tmp_path / "no" / "such" / "dir" / "out.json"), name="--json")
    assert out == tmp_path / "no" / "such" / "dir" / "out.json"
    assert out.parent.is_dir() and not out.exists()
    assert os.listdir(out.parent) == []  # the write probe left nothing behind


def test_existing_file_is_kept_unchanged(tmp_path):
    out = tmp_path / "out.json"
    out.write_text("previous run")
    assert prepare_output_file(out, name="--json") == out
    assert out.read_text() == "previous run"


def test_file_path_that_is_a_folder(tmp_path):
    with pytest.raises(ValueError, match=rf"^--json: {tmp_path} is a folder; expected a file"):
        prepare_output_file(tmp_path, name="--json")


def test_parent_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match=r"^json_path: .*f exists and is not a folder"):
        prepare_output_file(tmp_path / "f" / "out.json", name="json_path")
    with pytest.raises(ValueError, match=r"^--out: .*f exists and is not a folder"):
        prepare_output_dir(tmp_path / "f", name="--out")
    with pytest.raises(ValueError, match=r"^--out: cannot create the folder .*g"):
        prepare_output_dir(tmp_path / "f" / "g", name="--out")


@pytest.mark.skipif(not os.path.exists("/proc/self/mountinfo"), reason="needs Linux /proc")
def test_unwritable_location(tmp_path):
    # /proc is writable by no one (root included: it is not a real file system), so the write
    # probe fails where permission bits alone would say yes to root.
    with pytest.raises(ValueError, match=r"^--out: cannot (write in|create) the folder /proc"):
        prepare_output_dir("/proc/ntkit-out", name="--out")
    with pytest.raises(ValueError, match=r"^--json: cannot write in the folder /proc"):
        prepare_output_file("/proc/out.json", name="--json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ValueError, match=r"^--json: cannot write in the folder"):
            prepare_output_file(folder / "out.json", name="--json")
    finally:
        folder.chmod(0o700)


def test_dir_is_created(tmp_path):
    out = prepare_output_dir(tmp_path / "a" / "b", name="--out")
    assert out.is_dir() and os.listdir(out) == []
    assert prepare_output_dir(out, name="--out") == out  # an existing folder is fine


@pytest.mark.parametrize("bad", [None, "", 3])
def test_not_a_path(bad):
    with pytest.raises(TypeError, match=r"^--json must be a non-empty path"):
        prepare_output_file(bad, name="--json")
