"""Paths at the file-system boundary: output locations checked and created before the work
that fills them, and input files read only when they are regular files, within a bound.

A command that runs for minutes and then cannot write its result has lost the run; the
``prepare_*`` helpers fail at once instead, with a ``ValueError`` naming the option
(``name``). Files named by untrusted input (a spec, a store's metadata, a data set's index)
are opened without blocking and checked on the open descriptor, so that a FIFO is not waited
on, a device (``/dev/zero``) is not read without end, and the file read is the file checked.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

__all__ = ["open_regular", "prepare_output_dir", "prepare_output_file", "read_regular"]


def open_regular(path, *, what: str | None = None) -> BinaryIO:
    """``path`` opened for binary reading, if it is a regular file.

    Raises ``ValueError`` (``"<what> is not a regular file ..."``, ``what`` defaulting to the
    path) for a FIFO, a device or a folder, without blocking; ``OSError`` as ``os.open`` does
    (a missing file, no permission).
    """
    # O_NONBLOCK: opening a FIFO must not wait for a writer (regular files ignore it).
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{what or path} is not a regular file (a device, FIFO or "
                             f"folder)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path, *, limit: int, what: str | None = None,
                 encoding: str | None = None) -> bytes | str:
    """The contents of the regular file ``path``, which must hold at most ``limit`` bytes:
    ``bytes``, or text decoded with ``encoding``.

    Raises ``ValueError`` naming ``what`` (default: the path) for a file that is not regular
    (see :func:`open_regular`), over the limit (only ``limit + 1`` bytes are read), or not
    text in ``encoding``.

    Example:
        >>> import tempfile
        >>> f = tempfile.NamedTemporaryFile()
        >>> _ = f.write(b"0123456789"); f.flush()
        >>> read_regular(f.name, limit=10, encoding="utf-8")
        '0123456789'
        >>> read_regular(f.name, limit=9, what="the spec")
        Traceback (most recent call last):
        ...
        ValueError: the spec is over the limit of 9 bytes
        >>> f.close()
    """
    what = what or str(path)
    with open_regular(path, what=what) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{what} is over the limit of {limit} bytes")
    if encoding is None:
        return data
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not {encoding.upper()} text") from None


def _as_path(path, name: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"{name} must be a non-empty path (str or os.PathLike); got {path!r}")
    return Path(path)


def _make_dir(folder: Path, name: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{name}: {folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{name}: cannot create the folder {folder} "
                         f"({err.strerror or err})") from None
    # Permission bits say nothing to root, and nothing about a read-only file system: try it.
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"{name}: cannot write in the folder {folder} "
                         f"({err.strerror or err})") from None


def prepare_output_file(path, *, name: str) -> Path:
    """Check that ``path`` can be written as a file, creating its missing parent folders.

    Nothing is written at ``path`` itself; an existing file is opened for writing (and left
    unchanged) to check that it can be replaced.

    **Arguments:** ``path``, a ``str`` or ``os.PathLike``; ``name``, the option or argument
    named in errors (e.g. ``"--json"``).

    **Returns:** ``path`` as a :class:`~pathlib.Path`.

    **Raises:** ``ValueError`` naming ``name`` if ``path`` is a folder, a parent cannot be
    created, or the location is not writable; ``TypeError`` for a path that is not a path.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> out = prepare_output_file(root / "a" / "b" / "out.json", name="--json")
        >>> out.parent.is_dir(), out.exists()
        (True, False)
        >>> prepare_output_file(root / "a", name="--json")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: --json: ... is a folder; expected a file path
    """
    path = _as_path(path, name)
    if path.is_dir():
        raise ValueError(f"{name}: {path} is a folder; expected a file path")
    _make_dir(path.parent, name)
    if path.exists():
        try:
            with open(path, "r+b"):
                pass
        except OSError as err:
            raise ValueError(f"{name}: cannot write {path} ({err.strerror or err})") from None
    return path


def prepare_output_dir(path, *, name: str) -> Path:
    """Create the folder ``path`` (and its parents) if missing, and check it is writable.

    **Arguments:** ``path``, a ``str`` or ``os.PathLike``; ``name``, the option or argument
    named in errors (e.g. ``"--out"``).

    **Returns:** ``path`` as a :class:`~pathlib.Path`, an existing writable folder.

    **Raises:** ``ValueError`` naming ``name`` if ``path`` is an existing file, cannot be
    created, or is not writable; ``TypeError`` for a path that is not a path.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> prepare_output_dir(root / "figures", name="--out").is_dir()
        True
    """
    path = _as_path(path, name)
    _make_dir(path, name)
    return path
