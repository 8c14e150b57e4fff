"""Memory budgets: one parser for every ``max_memory`` argument in ntkit."""

from __future__ import annotations

import math
import re

__all__ = ["parse_bytes", "human_bytes"]

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
          "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
# A budget beyond any machine (1 EiB) is a typo or an attack, not a plan.
_LARGEST = 2**60
# Digits of a number before the unit: enough for 1 EiB in bytes with decimals.
_PATTERN = re.compile(r"\s*([0-9]{1,20}(?:\.[0-9]{1,20})?|\.[0-9]{1,20})\s*([a-zA-Z]{0,3})\s*")


def _expected(name: str, value) -> str:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return (f"{name} must be a positive number of bytes (int) or a string such as '512MiB', "
            f"'4GB' or '1.5GiB'; got {shown}")


def parse_bytes(value, name: str = "max_memory") -> int:
    """A memory budget in bytes, from an int or float of bytes or a string with a unit.

    Decimal units (``kB``, ``MB``, ``GB``, ``TB``) are powers of 10, binary units (``KiB``,
    ``MiB``, ``GiB``, ``TiB``, and the single letters ``K``, ``M``, ``G``, ``T``) powers of 2;
    units are case-insensitive.

    **Raises:** ``TypeError`` for a value that is neither a number nor a string (``bool``
    included), ``ValueError`` for a string that is not a number with a known unit, and for
    a budget that is not finite, not positive, or over 1 EiB. The message names ``name``.

    Example:
        >>> parse_bytes("4GB"), parse_bytes("1.5 GiB"), parse_bytes(1000), parse_bytes("512MiB")
        (4000000000, 1610612736, 1000, 536870912)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(_expected(name, value))
    if isinstance(value, str):
        match = _PATTERN.fullmatch(value) if len(value) <= 64 else None
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(_expected(name, value))
        number = float(match.group(1)) * _UNITS[match.group(2).lower()]
    elif isinstance(value, int):
        number = value  # exact: no float conversion of huge ints
    else:
        number = value
    if not (isinstance(number, int) or math.isfinite(number)) or not 0 < number <= _LARGEST:
        raise ValueError(_expected(name, value))
    total = int(number)
    if total < 1:
        raise ValueError(_expected(name, value))
    return total


def human_bytes(n: float) -> str:
    """Bytes in GiB/MiB for messages."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
