"""The code in README.md and docs/*.md runs as written (issue 17, 5.13).

Every ```python block runs on its own, in a fresh namespace with nothing predefined (a reader
is told of no setup), in a temporary working folder (the tiles snippet writes a store). The
network expressions written inline in the README (`L.serial(...)`) build and compute a kernel.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ntkit import layers as L

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A fenced block, possibly indented (inside a list item): the indent is removed from its lines.
FENCE = re.compile(r"^(?P<indent>[ ]*)```python\n(?P<body>.*?)^(?P=indent)```$",
                   re.MULTILINE | re.DOTALL)


def _blocks():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            indent = len(match["indent"])
            code = "\n".join(row[indent:] for row in match["body"].splitlines())
            yield pytest.param(code, id=f"{page.relative_to(ROOT)}:{line}")


def _needs(code: str) -> None:
    if "tiles" in code:
        pytest.importorskip("zarr", reason='ntkit.tiles needs the dist extra ("ntkit[dist]")')
    if "executor=\"dask\"" in code:
        pytest.importorskip("distributed", reason="the Dask executor needs dask.distributed")


BLOCKS = list(_blocks())


def test_the_pages_have_python_blocks():
    names = {b.id.split(":")[0] for b in BLOCKS}
    assert "README.md" in names and "docs/index.md" in names
    # Quick start, estimators, tiles, predict, empirical: a vanished block is a lost check.
    assert sum(b.id.startswith("README.md:") for b in BLOCKS) >= 5


@pytest.mark.parametrize("code", BLOCKS)
def test_python_block_runs_as_written(code, tmp_path, monkeypatch):
    _needs(code)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})


def _inline_networks() -> list[str]:
    """The complete ``L.serial(...)`` expressions in the README's inline code spans."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [span for span in re.findall(r"`([^`\n]+)`", text)
            if span.startswith("L.serial(") and span.count("(") == span.count(")")]


def test_readme_inline_networks_compute_kernels():
    networks = _inline_networks()
    assert networks, "the README's residual MLP example is gone"
    x = torch.randn(3, 8, dtype=torch.float64)
    for expression in networks:
        net = eval(expression, {"L": L})  # the README's own text
        k = net.kernel(x)
        assert k.ntk.shape == (3, 3), expression
        assert bool(torch.isfinite(k.ntk).all()), expression
