"""Myrtle networks (Shankar et al. 2020, "Neural Kernels Without Tangents")."""

from __future__ import annotations

import math

from ._base import Layer
from ._closed_form import ReLU
from ._combinators import Serial, serial
from ._conv import Conv
from ._dense import Dense
from ._pool import AvgPool, GlobalAvgPool

__all__ = ["myrtle"]

# Conv-ReLU blocks before each of the two 2x2 stride-2 pools and before the global pool.
_BLOCKS = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}


def myrtle(depth: int = 5, *, width: int = 128, out_features: int = 10,
           W_std: float = math.sqrt(2.0), b_std: float | None = 0.0) -> Serial:
    """The Myrtle network with ``depth`` layers (5, 7 or 10), for ``(N, C, H, W)`` images.

    ``depth - 2`` blocks ``Conv(width, (3, 3), SAME) - ReLU``, split into three stages as in
    Shankar et al. (``(2, 1, 1)``, ``(2, 2, 2)``, ``(3, 3, 3)`` blocks) with a
    ``AvgPool((2, 2), strides=2)`` after the first two stages, then ``GlobalAvgPool`` and
    ``Dense(out_features)``; ``W_std = sqrt(2)`` (He) and no bias by default. On 32x32 images
    the global pool equals the paper's three further 2x2 pools (8x8 -> 1); it also makes the
    network valid on smaller images such as 8x8 digits (any ``H, W >= 4``).

    **Cost per kernel entry** (one pair of images, ``P = H W`` positions): every layer before
    the global pool keeps all ``P^2`` covariances, so a ``Conv`` costs ~``6 P^2`` additions
    (3x3 as two 3-tap diagonal sums) and a ``ReLU`` ~``15 P^2`` operations (one ``atan2``
    each), on NNGP and NTK. Stage ``s`` has ``P_s = P / 16^s`` covariances per pair, so the
    first stage dominates: about ``(depth-stage-1 blocks) * 21 P^2`` per entry, i.e. ~``42 P^2``
    for ``depth=5``: 1.7e5 operations on 8x8 digits, 4.4e7 on 32x32 CIFAR images (where the
    kernel of N images needs ``N^2 / 2`` such entries; see ``bench/kernels_conv.py``).

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> net = L.myrtle(5)
        >>> net.kernel(torch.randn(2, 1, 8, 8, dtype=torch.float64)).ntk.shape
        torch.Size([2, 2])
    """
    if depth not in _BLOCKS:
        raise ValueError(f"depth must be one of {tuple(_BLOCKS)} (Myrtle-5, -7, -10); got "
                         f"{depth!r}")
    layers: list[Layer] = []
    for stage, blocks in enumerate(_BLOCKS[depth]):
        for _ in range(blocks):
            layers += [Conv(width, (3, 3), padding="SAME", W_std=W_std, b_std=b_std), ReLU()]
        layers.append(AvgPool((2, 2), strides=2) if stage < 2 else GlobalAvgPool())
    layers.append(Dense(out_features, W_std=W_std, b_std=b_std))
    return serial(*layers)
