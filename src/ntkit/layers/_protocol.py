"""The layer protocol: what the kernel driver, the memory budget and serialization use.

``_compute``, ``_budget`` and ``_serialize`` take any object with these methods (every
:class:`~ntkit.layers.Layer` has them) instead of importing ``Layer``: ``Layer`` imports them
for :meth:`~ntkit.layers.Layer.kernel` and :meth:`~ntkit.layers.Layer.to_dict`, and the
dependency runs one way only.
"""

from __future__ import annotations

from typing import Any, Protocol

# A single flow's per-example shape, or one per branch (after FanOut / parallel).
Shapes = tuple[int, ...] | list[tuple[int, ...]]
# "fc", "full" or "diag" (see ``_budget``), or one per branch.
Layouts = str | list[str]


class LayerProtocol(Protocol):
    """A network layer as the kernel driver sees it (see :class:`ntkit.layers.Layer`)."""

    def kernel_fn(self, k: Any) -> Any:
        """The infinite-width map of a ``Kernel`` (or a list of branch kernels)."""

    def out_shape(self, in_shape: Shapes) -> Shapes:
        """Per-example output shape for per-example input shape ``in_shape``."""

    def plan(self, out_full: bool | list[bool]) -> tuple[LayerProtocol, bool | list[bool]]:
        """The layout plan (see ``Layer.plan``)."""

    def footprint(self, in_shape: Shapes, layout: Layouts) -> tuple[Shapes, Layouts, float]:
        """``(out_shape, out_layout, kernel entries per pair of inputs)`` (see ``_budget``)."""

    def children(self) -> tuple[LayerProtocol, ...]:
        """The layers this one is made of, in order; ``()`` for a leaf."""
