"""Memory budget of a blocked kernel computation, estimated from shapes before allocating.

A block of ``b1 x b2`` input pairs holds, at its largest layer, the kernel entries of each pair
before and after the layer (NNGP, and NTK when asked) plus the temporaries of a nonlinearity;
``PAIR_ARRAYS`` and ``TEMP_ARRAYS`` count them (calibrated with ``bench/kernels_conv.py``, whose
measured peaks stay below these estimates). The assembled output is counted in full.

Each layer states its own footprint (``Layer.footprint``): a leaf counts its input and output
kernels with :func:`leaf_footprint`, a combinator combines its children's. Layouts are ``"fc"``
(fully connected: one entry per pair), ``"full"`` (``P^2`` covariances between all positions)
and ``"diag"`` (``P`` same-position ones), one per branch after a fan-out.
"""

from __future__ import annotations

import math

from ._protocol import LayerProtocol, Layouts, Shapes

# Per layer: input and output kernel of each requested type (nngp, ntk) ...
PAIR_ARRAYS = 2
# ... and temporaries of the largest layer (arc-cosine: S, theta, its derivative factor, and
# the products), in units of the output's entries per pair.
TEMP_ARRAYS = 4


def entries(shape: tuple[int, ...], layout: str) -> int:
    """Kernel entries per pair of inputs for a per-example ``shape`` in ``layout``."""
    if layout == "fc" or len(shape) == 1:
        return 1
    p = math.prod(shape[1:])
    return p if layout == "diag" else p * p


def leaf_footprint(out: Shapes, in_shape: Shapes, layout: Layouts, *,
                   to_diagonal: bool = False) -> tuple[Shapes, str, float]:
    """``(out, out_layout, entries per pair)`` of a layer that maps ``in_shape`` (in
    ``layout``) to ``out`` at once: its input and output kernels and the temporaries of a
    nonlinearity. A merge (branches in) holds every branch at once. The layout becomes
    ``"fc"`` for a flat output, ``"diag"`` with ``to_diagonal``, else stays."""
    if isinstance(in_shape, list):
        e_in = sum(entries(s, lay) for s, lay in zip(in_shape, layout, strict=True))
        layout = layout[0]
    else:
        e_in = entries(in_shape, layout)
    if to_diagonal:
        out_layout = "diag" if layout != "fc" else "fc"
    else:
        out_layout = "fc" if len(out) == 1 else layout
    e_out = entries(out, out_layout)
    return out, out_layout, PAIR_ARRAYS * (e_in + e_out) / 2 + TEMP_ARRAYS * e_out


def block_cost(planned: LayerProtocol, in_shape: tuple[int, ...], full: bool
               ) -> tuple[float, int]:
    """``(working entries per pair of inputs, output entries per pair)`` of ``planned``.

    The working figure counts one kernel type; the caller multiplies by 2 for the NTK.
    """
    layout = "fc" if len(in_shape) == 1 else ("full" if full else "diag")
    out, out_layout, worst = planned.footprint(in_shape, layout)
    return max(worst, 1.0), entries(out, out_layout)
