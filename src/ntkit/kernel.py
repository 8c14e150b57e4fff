"""The :class:`Kernel` record: the one object that flows through the layers' kernel maps.

A layer's infinite-width kernel map takes a ``Kernel`` describing the covariance of its
inputs (as infinitely wide random fields) and returns the ``Kernel`` of its outputs. Nothing
else in ntkit stores kernel state.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Kernel", "RawInputs"]


@dataclass(frozen=True, eq=False)
class Kernel:
    """NNGP and NTK of a layer's outputs for two batches of inputs, with what later layers need.

    **Fields** (``N1 = len(x1)``, ``N2 = len(x2)``):

    - ``nngp``: ``(N1, N2)`` covariance ``K(x1_i, x2_j)`` of one output unit, or ``(N1,)``
      holding ``K(x1_i, x1_i)`` when ``diagonal`` is true. Images (``shape1`` ``(N, C, *S)``
      with spatial shape ``S``, e.g. ``(H, W)``) carry spatial covariances of one channel:
      ``(N1, N2, *S, *S)`` (full: ``K(x1_i, p; x2_j, p')`` for positions ``p, p'``) or, when
      ``diagonal_spatial``, ``(N1, N2, *S)`` (same position only); with ``diagonal`` the
      leading ``N2`` axis is absent.
    - ``ntk``: the NTK ``Theta`` in the same shape, ``None`` when it was not requested, or a
      0-d zero at the inputs (no parameters yet).
    - ``cov1``: ``(N1,)`` variances ``K(x1_i, x1_i)`` that nonlinearities need; for images
      ``(N1, *S, *S)`` or ``(N1, *S)`` (``diagonal_spatial``), as ``nngp`` with one batch.
    - ``cov2``: the same for ``x2``; ``None`` when ``x1_is_x2`` or ``diagonal``.
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
    - ``diagonal_spatial``: image kernels hold only same-position covariances (chosen by the
      block driver when no later layer mixes positions, see ``ntkit.layers``); ignored for
      fully-connected kernels.
    - ``inputs``: the raw ``(N, d)`` inputs behind the record (:class:`RawInputs`), set by
      ``from_inputs`` for a first layer whose kernel is not a function of inner products
      alone (``SirenInput``'s uniform weights); later records carry it unchanged, so read it
      through :meth:`raw_inputs`, which returns it only while the record still describes them.
    - ``mask1``, ``mask2``: ``(N1, *S)``, ``(N2, *S)`` booleans, ``True`` at masked
      positions of sequence inputs (``Layer.kernel(..., mask_constant=c)``, see
      ``ntkit.layers._mask``), or ``None``: no masking (``mask2`` also ``None`` when
      ``x1_is_x2`` or ``diagonal``: ``mask1`` serves both).

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
    diagonal_spatial: bool = False
    inputs: RawInputs | None = None
    mask1: Tensor | None = None
    mask2: Tensor | None = None

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
        diagonal_spatial: bool = False,
    ) -> Kernel:
        """The input kernel ``K0(x, x') = x . x' / d`` of ``(N, d)`` inputs (neural-tangents').

        Images ``(N, C, *S)`` get ``K0(x, p; x', p') = sum_c x[c, p] x'[c, p'] / C`` for every
        pair of positions (or the same position only, with ``diagonal_spatial``).
        ``x2=None`` means ``x1`` against itself; the diagonal is then set to ``cov1`` exactly
        and the matrix made exactly symmetric, so that later layers see ``c = 1`` there.
        Inputs are assumed validated (see ``ntkit.layers.Layer.kernel``); ``cov1``, ``cov2``
        may pass their variances (``input_variances``) when already known (blocks of one batch).
        """
        if x1.ndim > 2:
            return _image_inputs(cls, x1, x2, diagonal, ntk, cov1, cov2, diagonal_spatial)
        d = x1.shape[1]
        if cov1 is None:
            cov1 = input_variances(x1)
        if diagonal:
            return cls(cov1, _zero_ntk(x1, ntk), cov1, None, True, True, tuple(x1.shape),
                       tuple(x1.shape), inputs=RawInputs(x1, None, cov1))
        if x2 is None:
            gram = (x1 @ x1.T) / d
            # BLAS need not return an exactly symmetric x x^T; mirror the upper triangle.
            gram = restore_diagonal(gram.triu() + gram.triu(1).T, cov1)
            return cls(gram, _zero_ntk(x1, ntk), cov1, None, True, False, tuple(x1.shape),
                       tuple(x1.shape), inputs=RawInputs(x1, None, gram))
        if cov2 is None:
            cov2 = input_variances(x2)
        gram = (x1 @ x2.T) / d
        return cls(gram, _zero_ntk(x1, ntk), cov1, cov2, False, False, tuple(x1.shape),
                   tuple(x2.shape), inputs=RawInputs(x1, x2, gram))

    def raw_inputs(self) -> RawInputs | None:
        """The raw inputs this record describes, or ``None`` for image inputs, records not
        made by ``from_inputs`` and every record after a layer that changed the kernel:
        ``inputs`` travels on through ``replace``, so it counts only while ``nngp`` is still
        the input Gram matrix it was made with (the very tensor)."""
        raw = self.inputs
        return raw if raw is not None and raw.nngp is self.nngp else None

    def replace(self, **changes) -> Kernel:
        """A copy with the given fields changed (the record itself is immutable)."""
        return dataclasses.replace(self, **changes)

    @property
    def n_spatial(self) -> int:
        """Number of spatial axes of the finite twin's activations (0 when fully connected)."""
        return len(self.shape1) - 2

    @property
    def full_spatial(self) -> bool:
        """The kernel holds covariances between every pair of positions ``(*S, *S)``."""
        return self.n_spatial > 0 and not self.diagonal_spatial

    @property
    def var1(self) -> Tensor:
        """Variances of ``x1`` broadcastable against ``nngp``: ``(N1, 1)``, or ``(N1,)``.

        For images, per position: ``(N1, 1, *S, *1)`` (full), ``(N1, 1, *S)`` (spatial
        diagonal), without the ``1`` for ``N2`` when ``diagonal``."""
        if self.diagonal:
            return self.self_variances(self.cov1)[0]
        return self.self_variances(self.cov1)[0].unsqueeze(1)

    @property
    def var2(self) -> Tensor:
        """Variances of ``x2`` broadcastable against ``nngp``: ``(1, N2)``, or ``(N1,)``."""
        if self.diagonal:
            return self.self_variances(self.cov1)[1]
        cov = self.cov1 if self.cov2 is None else self.cov2
        return self.self_variances(cov)[1].unsqueeze(0)

    def self_variances(self, cov: Tensor) -> tuple[Tensor, Tensor]:
        """Per-position variances of one batch's covariance ``cov`` (as ``cov1``), broadcastable
        against it as rows and columns: ``(cov, cov)`` unless full spatial, where they are
        ``(N, *S, *1)`` and ``(N, *1, *S)`` (its spatial diagonal)."""
        if not self.full_spatial:
            return cov, cov
        s = self.n_spatial
        n = cov.shape[0]
        sizes = cov.shape[1:1 + s]
        p = math.prod(sizes)
        var = cov.reshape(n, p, p).diagonal(dim1=1, dim2=2).reshape(n, *sizes)
        ones = (1,) * s
        return var.reshape(n, *sizes, *ones), var.reshape(n, *ones, *sizes)

    def __repr__(self) -> str:
        ntk = None if self.ntk is None else tuple(self.ntk.shape)
        return (
            f"Kernel(nngp={tuple(self.nngp.shape)}, ntk={ntk}, dtype={self.nngp.dtype}, "
            f"x1_is_x2={self.x1_is_x2}, diagonal={self.diagonal}, shape1={self.shape1}, "
            f"shape2={self.shape2}, is_gaussian={self.is_gaussian}"
            + (f", diagonal_spatial={self.diagonal_spatial})" if self.n_spatial else ")")
        )


@dataclass(frozen=True, eq=False)
class RawInputs:
    """The raw fully-connected inputs of a :class:`Kernel` made by ``Kernel.from_inputs``.

    - ``x1``: ``(N1, d)`` inputs, in the dtype the kernel is computed in.
    - ``x2``: ``(N2, d)`` inputs, or ``None`` when the record is ``x1`` against itself (or
      only its diagonal).
    - ``nngp``: the input kernel ``from_inputs`` made of them (``Kernel.raw_inputs`` compares
      it with the record's own ``nngp``).
    """

    x1: Tensor
    x2: Tensor | None
    nngp: Tensor


def restore_diagonal(nngp: Tensor, cov1: Tensor) -> Tensor:
    """``nngp``, a kernel ``(N, N, ...)`` of one batch with itself, with its entries
    ``K(x_i, x_i)`` set to the variances ``cov1`` ``(N, ...)`` exactly, in place.

    A layer computes the two by different formulas (a pair's and a variance's), equal only up
    to rounding; made identical, the next nonlinearity sees a correlation of exactly 1 there.
    """
    nngp.diagonal(dim1=0, dim2=1).copy_(cov1.movedim(0, -1))
    return nngp


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel of inputs of ``dtype`` is computed in: float32 for float16 and
    bfloat16, whose sums of squares overflow (float16 at ``|x|`` around 10 with 784
    features) and whose rounding would dominate the kernel; ``dtype`` itself otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def in_finite_dtype(run, x1: Tensor, x2: Tensor | None):
    """``run(dtype)``'s result, computed in ``compute_dtype`` of the inputs, or again in
    float64 when that came out non-finite in float32 (``run`` returns ``(result, finite)``).

    Finite inputs can still overflow: the input Gram matrix sums ``d`` squares, and
    nonlinearities multiply variances (``K11 K22``), which in float32 overflows once the
    variances pass ``sqrt(3.4e38)``, about ``2e19``. Raises ``ValueError`` when even float64
    overflows (or a layer made a NaN): NaN or inf is never returned.
    """
    work = compute_dtype(x1.dtype)
    while True:
        result, finite = run(work)
        if finite:
            return result
        if work != torch.float32:
            largest = max(float(x.abs().max()) for x in (x1, x2) if x is not None)
            raise ValueError(
                f"the kernel came out with NaN or infinite entries although the inputs are "
                f"finite: with inputs as large as {largest:.3g}, its values overflow "
                f"{x1.dtype} (computed in {work}); rescale the inputs, e.g. standardise the "
                f"features"
            )
        work = torch.float64


def input_variances(x: Tensor, *, diagonal_spatial: bool = False) -> Tensor:
    """``(N,)`` input variances ``x_i . x_i / d`` of ``(N, d)`` inputs; for images
    ``(N, C, *S)`` the covariances ``(N, *S, *S)`` over positions (``(N, *S)`` with
    ``diagonal_spatial``), summed over channels and divided by ``C``. In
    ``compute_dtype(x.dtype)``."""
    x = x.to(compute_dtype(x.dtype))
    if x.ndim == 2:
        return torch.einsum("nd,nd->n", x, x) / x.shape[1]
    if diagonal_spatial:
        return torch.einsum("nc...,nc...->n...", x, x) / x.shape[1]
    n, c, sizes = x.shape[0], x.shape[1], tuple(x.shape[2:])
    flat = x.reshape(n, c, -1)
    cov = torch.bmm(flat.transpose(1, 2), flat) / c
    # Exactly symmetric in the two positions (bmm need not be): mirror the upper triangle.
    cov = cov.triu() + cov.triu(1).transpose(1, 2)
    return cov.reshape(n, *sizes, *sizes)


def _image_inputs(cls, x1, x2, diagonal, ntk, cov1, cov2, diagonal_spatial) -> Kernel:
    """``Kernel.from_inputs`` for ``(N, C, *S)`` images (see there)."""
    if cov1 is None:
        cov1 = input_variances(x1, diagonal_spatial=diagonal_spatial)
    flags = dict(diagonal_spatial=diagonal_spatial)
    if diagonal:
        return cls(cov1, _zero_ntk(x1, ntk), cov1, None, True, True, tuple(x1.shape),
                   tuple(x1.shape), **flags)
    other = x1 if x2 is None else x2
    c = x1.shape[1]
    if diagonal_spatial:
        gram = torch.einsum("ac...,bc...->ab...", x1, other) / c
    else:
        n1, n2 = x1.shape[0], other.shape[0]
        sizes = tuple(x1.shape[2:])
        a = x1.reshape(n1, c, -1).transpose(1, 2).reshape(-1, c)
        b = other.reshape(n2, c, -1).transpose(1, 2).reshape(-1, c)
        p = a.shape[0] // n1
        gram = (a @ b.T / c).reshape(n1, p, n2, p).transpose(1, 2)
        gram = gram.reshape(n1, n2, *sizes, *sizes)
    if x2 is None:
        gram = restore_diagonal(mirror(gram, diagonal_spatial=diagonal_spatial), cov1)
        return cls(gram, _zero_ntk(x1, ntk), cov1, None, True, False, tuple(x1.shape),
                   tuple(x1.shape), **flags)
    if cov2 is None:
        cov2 = input_variances(x2, diagonal_spatial=diagonal_spatial)
    return cls(gram, _zero_ntk(x1, ntk), cov1, cov2, False, False, tuple(x1.shape),
               tuple(x2.shape), **flags)


def transpose_pairs(k: Tensor, *, diagonal_spatial: bool) -> Tensor:
    """``K(x2, x1)`` from ``K(x1, x2)``: swap the batch axes and, for a full spatial kernel
    ``(N1, N2, *S, *S)``, the two sets of positions."""
    s = (k.ndim - 2) if diagonal_spatial else (k.ndim - 2) // 2
    if diagonal_spatial or s == 0:
        return k.transpose(0, 1)
    return k.permute(1, 0, *range(2 + s, 2 + 2 * s), *range(2, 2 + s))


def mirror(k: Tensor, *, diagonal_spatial: bool) -> Tensor:
    """The square kernel ``K(x, x)`` made exactly symmetric from its upper triangle of pairs
    (``i <= j``; on the diagonal ``i = j`` the upper triangle of positions)."""
    n = k.shape[0]
    kt = transpose_pairs(k, diagonal_spatial=diagonal_spatial)
    if k.ndim == 2:
        return k.triu() + k.triu(1).T
    upper = torch.ones(n, n, dtype=torch.bool, device=k.device).triu(1)
    shape = (n, n) + (1,) * (k.ndim - 2)
    out = torch.where(upper.reshape(shape), k, kt)
    if not diagonal_spatial:
        # Same example: K(x, p; x, p') from the upper triangle of flattened positions.
        idx = torch.arange(n, device=k.device)
        diag = k[idx, idx]
        p = math.prod(diag.shape[1:1 + (diag.ndim - 1) // 2])
        flat = diag.reshape(n, p, p)
        flat = flat.triu() + flat.triu(1).transpose(1, 2)
        out[idx, idx] = flat.reshape(diag.shape)
    return out


def _zero_ntk(x: Tensor, wanted: bool) -> Tensor | None:
    # The input has no parameters: Theta starts at zero (a 0-d tensor broadcasts for free).
    return torch.zeros((), dtype=x.dtype, device=x.device) if wanted else None
