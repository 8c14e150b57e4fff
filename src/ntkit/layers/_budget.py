"""Memory budget of a blocked kernel computation, estimated from shapes before allocating.

A block of ``b1 x b2`` input pairs holds, at its largest layer, the kernel entries of each pair
before and after the layer (NNGP, and NTK when asked) plus the temporaries of a nonlinearity;
``PAIR_ARRAYS`` and ``TEMP_ARRAYS`` count them (calibrated with ``bench/kernels_conv.py``, whose
measured peaks stay below these estimates). The assembled output is counted in full.
"""

from __future__ import annotations

import math

from ._base import Layer

# Per layer: input and output kernel of each requested type (nngp, ntk) ...
PAIR_ARRAYS = 2
# ... and temporaries of the largest layer (arc-cosine: S, theta, its derivative factor, and
# the products), in units of the output's entries per pair.
TEMP_ARRAYS = 4

def _entries(shape: tuple[int, ...], layout: str) -> int:
    """Kernel entries per pair of inputs for a per-example ``shape`` in ``layout``."""
    if layout == "fc" or len(shape) == 1:
        return 1
    p = math.prod(shape[1:])
    return p if layout == "diag" else p * p


def _walk(layer: Layer, shape, layout):
    """``(out_shape, out_layout, largest per-pair cost)`` of running ``layer``."""
    from ._combinators import FanOut, Parallel, Serial
    from ._shape import SpatialDiagonal

    if isinstance(layer, Serial):
        worst = 0
        for part in layer.layers:
            shape, layout, cost = _walk(part, shape, layout)
            worst = max(worst, cost)
        return shape, layout, worst
    if isinstance(layer, Parallel):
        outs = [_walk(part, s, lay) for part, s, lay
                in zip(layer.layers, shape, layout, strict=True)]
        return [o[0] for o in outs], [o[1] for o in outs], sum(o[2] for o in outs)
    if isinstance(layer, FanOut):
        return [shape] * layer.n, [layout] * layer.n, 0
    out = layer.out_shape(shape)
    if isinstance(shape, list):  # a merge: every branch is alive at once
        e_in = sum(_entries(s, lay) for s, lay in zip(shape, layout, strict=True))
        layout = layout[0]
    else:
        e_in = _entries(shape, layout)
    if isinstance(layer, SpatialDiagonal):
        out_layout = "diag" if layout != "fc" else "fc"
    else:
        out_layout = "fc" if len(out) == 1 else layout
    e_out = _entries(out, out_layout)
    return out, out_layout, PAIR_ARRAYS * (e_in + e_out) / 2 + TEMP_ARRAYS * e_out


def block_cost(planned: Layer, in_shape: tuple[int, ...], full: bool
               ) -> tuple[float, int]:
    """``(working entries per pair of inputs, output entries per pair)`` of ``planned``.

    The working figure counts one kernel type; the caller multiplies by 2 for the NTK.
    """
    layout = "fc" if len(in_shape) == 1 else ("full" if full else "diag")
    out, out_layout, worst = _walk(planned, in_shape, layout)
    return max(worst, 1.0), _entries(out, out_layout)
