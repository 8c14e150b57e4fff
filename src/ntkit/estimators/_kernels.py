"""The kernel matrices the estimators fit on: pure functions of their arguments, so that a
``joblib.Memory`` can cache them (``memory.cache(fc_family)(...)``), keyed on the inputs' bytes
and the architecture."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..family import KernelFamily, fc_kernel_family
from ..layers import Activation, Layer

__all__ = ["PREFETCH_DEPTH", "FCKernel", "fc_family", "network_kernel"]

PREFETCH_DEPTH = 5
"""With a ``memory``, FC families are computed to at least this depth: one cached family then
serves every ``depth <= 5`` and ``fix <= depth`` (the grid of Arora et al. 2020 searches depths
1..5), at the price of ``2 * 5 + 1`` stored ``(N1, N2)`` matrices per pair of inputs."""


def fc_family(x1: np.ndarray, x2: np.ndarray | None, *, max_depth: int,
              activation: Activation, W_std: float, b_std: float) -> KernelFamily:
    """:func:`ntkit.family.fc_kernel_family` of NumPy inputs ``(N1, d)``, ``(N2, d)``
    (``x2=None``: ``x1`` against itself, with an exact diagonal), in the inputs' dtype."""
    # A copy: scikit-learn hands in read-only memmaps, which torch.from_numpy warns about.
    t2 = None if x2 is None else torch.tensor(x2)
    return fc_kernel_family(torch.tensor(x1), t2, max_depth=max_depth, activation=activation,
                            W_std=W_std, b_std=b_std)


def network_kernel(network: Layer, x1: np.ndarray, x2: np.ndarray | None, *,
                   which: str) -> np.ndarray:
    """``(N1, N2)`` float64 ``network.kernel(x1, x2)`` (``which``: ``"nngp"`` or ``"ntk"``),
    computed in the inputs' dtype.

    **Raises:** ``ValueError`` if the network does not give one ``(N1, N2)`` kernel (e.g. an
    image network on flat inputs, or several outputs).
    """
    t2 = None if x2 is None else torch.tensor(x2)
    k = getattr(network.kernel(torch.tensor(x1), t2, get=which), which)
    n2 = len(x1 if x2 is None else x2)
    if not isinstance(k, torch.Tensor) or k.shape != (len(x1), n2):
        raise ValueError(
            f"network must give one (N1, N2) kernel; got {type(k).__name__} of shape "
            f"{getattr(k, 'shape', None)} from {network!r}"
        )
    return k.detach().to("cpu", torch.float64).numpy()


@dataclass(frozen=True)
class FCKernel:
    """The estimators' fully-connected kernel as a function of two blocks of tensors,
    ``(N1, d), (N2, d) -> (N1, N2)``, for the Nyström solver: ``which`` is ``"ntk"`` (with
    ``fix`` frozen layers) or ``"nngp"``."""

    depth: int
    fix: int
    which: str
    activation: Activation
    W_std: float
    b_std: float

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor | None) -> torch.Tensor:
        family = fc_kernel_family(x1, x2, max_depth=self.depth, activation=self.activation,
                                  W_std=self.W_std, b_std=self.b_std)
        return family.ntk(self.depth, self.fix) if self.which == "ntk" \
            else family.nngp(self.depth)

    def diagonal(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self(b, None).diagonal() for b in x.split(256)])
