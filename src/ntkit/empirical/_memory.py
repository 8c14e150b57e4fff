"""Block sizes over examples that keep a strategy's working memory under a budget (the large
buffers the strategies fill come from ``ntkit._alloc``)."""

from __future__ import annotations

import math

from .._bytes import parse_bytes

__all__ = ["DEFAULT_BUDGET", "block_size", "check_max_memory"]

# Working memory per call when the caller sets no ``max_memory``.
DEFAULT_BUDGET = 1 << 30


def check_max_memory(max_memory) -> int | None:
    """``max_memory`` in bytes: ``None``, or a budget that :func:`ntkit._bytes.parse_bytes`
    reads (bytes, or a string such as ``"4GB"``)."""
    return None if max_memory is None else parse_bytes(max_memory)


def block_size(n: int, *, per_example: float, per_pair: float, max_memory: int | None,
               batch_size: int | None, strategy: str) -> int:
    """Largest block ``b <= n`` with ``2 b per_example + b^2 per_pair <= budget`` (bytes).

    ``per_example``: bytes kept per example of a block (Jacobians, layer features);
    ``per_pair``: bytes of temporaries per pair of examples of two blocks. ``batch_size``,
    when given, caps the block. One example over ``max_memory`` raises ``ValueError``.
    """
    one = 2 * per_example + per_pair
    if max_memory is not None and one > max_memory:
        raise ValueError(
            f"max_memory={max_memory} bytes is too small: strategy={strategy!r} needs about "
            f"{math.ceil(one)} bytes for a single example of this model; raise max_memory or "
            f"choose another strategy"
        )
    budget = DEFAULT_BUDGET if max_memory is None else max_memory
    if per_pair > 0:
        b = (-2 * per_example + math.sqrt(4 * per_example**2 + 4 * per_pair * budget)) / (
            2 * per_pair)
    else:
        b = budget / (2 * per_example)
    b = max(1, min(n, int(b)))
    return min(b, batch_size) if batch_size is not None else b
