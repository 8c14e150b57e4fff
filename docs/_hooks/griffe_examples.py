"""Griffe extension for ntkit's docstrings, which are written for ``help()`` and doctest.

- They head their doctests ``Example:``, which the Google style of mkdocstrings reads as a
  plain admonition (so ``>>>`` lines render as prose and ``[1.0, 2.0]`` outputs as broken
  links); read it as the ``Examples:`` section instead, whose doctests render as code.
- Sphinx roles (``:func:`name```) would show as raw text; show the name as code.
"""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|exc|obj):`~?([^`]+)`")


class ExampleSection(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            text = _EXAMPLE.sub("Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(r"``\1``", text)
