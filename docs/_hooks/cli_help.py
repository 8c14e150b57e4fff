"""MkDocs hook: a line ``<!-- ntkit --help ARGS -->`` in a page becomes the output of
``ntkit ARGS --help``, run from this checkout's ``src/``, so the command-line page shows the
parser as it is rather than a copy of it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

_MARKER = re.compile(r"^<!-- ntkit --help(?P<args>[\w -]*)-->$", re.MULTILINE)


def _help(args: list[str], src: Path) -> str:
    env = {**os.environ, "COLUMNS": "100",
           "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "ntkit.cli", *args, "--help"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`ntkit {' '.join(args)} --help` failed:\n{done.stderr}")
    return done.stdout.rstrip()


def on_page_markdown(markdown: str, *, page, config, files) -> str:
    src = Path(config["config_file_path"]).parent / "src"

    def replace(match: re.Match) -> str:
        return f"```text\n{_help(match['args'].split(), src)}\n```"

    return _MARKER.sub(replace, markdown)
