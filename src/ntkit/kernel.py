"""The :class:`Kernel` record: the one object that flows through the layers' kernel maps.

A layer's infinite-width kernel map takes a ``Kernel`` describing the covariance of its
inputs (as infinitely wide random fields) and returns the ``Kernel`` of its outputs. Nothing
else in ntkit stores kernel state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Kernel"]


@dataclass(frozen=True, eq=False)
class Kernel:
    """NNGP and NTK of a layer's outputs for two batches of inputs, with what later layers need.

    **Fields** (``N1 = len(x1)``, ``N2 = len(x2)``):

    - ``nngp``: ``(N1, N2)`` covariance ``K(x1_i, x2_j)`` of one output unit, or ``(N1,)``
      holding ``K(x1_i, x1_i)`` when ``diagonal`` is true.
    - ``ntk``: the NTK ``Theta`` in the same shape, ``None`` when it was not requested, or a
      0-d zero at the inputs (no parameters yet).
    - ``cov1``: ``(N1,)`` variances ``K(x1_i, x1_i)`` that nonlinearities need.
    - ``cov2``: ``(N2,)`` variances of ``x2``; ``None`` when ``x1_is_x2`` or ``diagonal``.
    - ``x1_is_x2``: the two batches are the same inputs (the kernel is symmetric and its
      diagonal equals ``cov1`` exactly).
    - ``diagonal``: only ``K(x_i, x_i)`` was asked for.
    - ``shape1``, ``shape2``: shapes ``(N, features)`` of the finite twin's activations at
      this point (the feature counts weight concatenations and the standard parametrization).
    - ``is_gaussian``: the outputs are Gaussian pre-activations (true after ``Dense``), so an
      elementwise nonlinearity may be applied by its Gaussian expectation.
    - ``linear_in``, ``depends_on``: bookkeeping that makes ``FanInSum`` exact: the outputs
      are a sum of terms each linear, with zero mean, in the fresh weights of one of the
      layer applications in ``linear_in``; ``depends_on`` holds every layer application the
      outputs depend on. Two branches may be summed without cross terms only if one is linear
      in weights the other does not depend on.

    Example:
        >>> import torch
        >>> k = Kernel.from_inputs(torch.ones(3, 4, dtype=torch.float64))
        >>> k.nngp.shape, k.cov1.tolist()
        (torch.Size([3, 3]), [1.0, 1.0, 1.0])
    """

    nngp: Tensor
    ntk: Tensor | None
    cov1: Tensor
    cov2: Tensor | None
    x1_is_x2: bool
    diagonal: bool
    shape1: tuple[int, ...]
    shape2: tuple[int, ...]
    is_gaussian: bool = False
    linear_in: frozenset[int] = frozenset()
    depends_on: frozenset[int] = frozenset()

    @classmethod
    def from_inputs(
        cls,
        x1: Tensor,
        x2: Tensor | None = None,
        *,
        diagonal: bool = False,
        ntk: bool = True,
        cov1: Tensor | None = None,
        cov2: Tensor | None = None,
    ) -> Kernel:
        """The input kernel ``K0(x, x') = x . x' / d`` of ``(N, d)`` inputs (neural-tangents').

        ``x2=None`` means ``x1`` against itself; the diagonal is then set to ``cov1`` exactly
        and the matrix made exactly symmetric, so that later layers see ``c = 1`` there.
        Inputs are assumed validated (see ``ntkit.layers.Layer.kernel``); ``cov1``, ``cov2``
        may pass their variances ``x . x / d`` when already known (blocks of one batch).
        """
        d = x1.shape[1]
        if cov1 is None:
            cov1 = input_variances(x1)
        if diagonal:
            return cls(cov1, _zero_ntk(x1, ntk), cov1, None, True, True, tuple(x1.shape),
                       tuple(x1.shape))
        if x2 is None:
            gram = (x1 @ x1.T) / d
            # BLAS need not return an exactly symmetric x x^T; mirror the upper triangle.
            gram = gram.triu() + gram.triu(1).T
            gram.diagonal().copy_(cov1)
            return cls(gram, _zero_ntk(x1, ntk), cov1, None, True, False, tuple(x1.shape),
                       tuple(x1.shape))
        if cov2 is None:
            cov2 = input_variances(x2)
        gram = (x1 @ x2.T) / d
        return cls(gram, _zero_ntk(x1, ntk), cov1, cov2, False, False, tuple(x1.shape),
                   tuple(x2.shape))

    def replace(self, **changes) -> Kernel:
        """A copy with the given fields changed (the record itself is immutable)."""
        return dataclasses.replace(self, **changes)

    @property
    def var1(self) -> Tensor:
        """Variances of ``x1`` broadcastable against ``nngp``: ``(N1, 1)``, or ``(N1,)``."""
        return self.cov1 if self.diagonal else self.cov1[:, None]

    @property
    def var2(self) -> Tensor:
        """Variances of ``x2`` broadcastable against ``nngp``: ``(1, N2)``, or ``(N1,)``."""
        if self.diagonal:
            return self.cov1
        return (self.cov1 if self.cov2 is None else self.cov2)[None, :]

    def __repr__(self) -> str:
        ntk = None if self.ntk is None else tuple(self.ntk.shape)
        return (
            f"Kernel(nngp={tuple(self.nngp.shape)}, ntk={ntk}, dtype={self.nngp.dtype}, "
            f"x1_is_x2={self.x1_is_x2}, diagonal={self.diagonal}, shape1={self.shape1}, "
            f"shape2={self.shape2}, is_gaussian={self.is_gaussian})"
        )


def input_variances(x: Tensor) -> Tensor:
    """``(N,)`` input variances ``x_i . x_i / d`` of ``(N, d)`` inputs."""
    return torch.einsum("nd,nd->n", x, x) / x.shape[1]


def _zero_ntk(x: Tensor, wanted: bool) -> Tensor | None:
    # The input has no parameters: Theta starts at zero (a 0-d tensor broadcasts for free).
    return torch.zeros((), dtype=x.dtype, device=x.device) if wanted else None
