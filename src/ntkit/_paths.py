"""Output locations checked and created before the work that fills them.

A command that runs for minutes and then cannot write its result has lost the run; these
helpers fail at once instead, with a ``ValueError`` naming the option (``name``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["prepare_output_dir", "prepare_output_file"]


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
