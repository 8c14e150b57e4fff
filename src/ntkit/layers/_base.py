"""The layer contract: one spec, two worlds (infinite-width kernel map and finite twin)."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ..kernel import Kernel
from ._budget import leaf_footprint
from ._compute import compute_kernel
from ._protocol import Layouts, Shapes
from ._serialize import to_dict, to_json

__all__ = ["Layer"]

# A single flow, or several parallel branches (after FanOut / parallel).
Kernels = Kernel | list[Kernel]

_tokens = itertools.count()


def fresh_token() -> int:
    """A new id for one application of a layer with random weights (see ``Kernel.linear_in``)."""
    return next(_tokens)


class Layer:
    """A network layer: its infinite-width kernel map and its finite ``torch.nn.Module`` twin.

    Subclasses implement :meth:`kernel_fn` (``Kernel -> Kernel``), :meth:`out_shape` and
    :meth:`build`; combinators also :meth:`children` and :meth:`footprint`. Users call
    :meth:`kernel` and :meth:`module`. A layer class registered with
    :func:`~ntkit.layers.register_layer` also has a spec (:meth:`to_dict`, :meth:`to_json`).
    """

    # -- what subclasses provide ---------------------------------------------------------
    def kernel_fn(self, k: Kernels) -> Kernels:
        """The infinite-width map from the kernel of the inputs to that of the outputs."""
        raise NotImplementedError

    def out_shape(self, in_shape: Shapes) -> Shapes:
        """Per-example output shape (no batch axis) of the finite twin for ``in_shape``."""
        raise NotImplementedError

    def build(self, in_shape: Shapes, generator: torch.Generator | None,
              dtype: torch.dtype) -> nn.Module:
        """The finite twin for per-example inputs of ``in_shape`` (see :meth:`module`)."""
        raise NotImplementedError

    def plan(self, out_full: bool | list[bool]) -> tuple[Layer, bool | list[bool]]:
        """The layout plan: given whether the kernel after this layer must keep covariances
        between all pairs of positions (``out_full``; a list for branches, a bool for "every
        branch alike"), return the layer to run (possibly rewritten to drop to the diagonal
        layout early) and whether its input must be full. Layers that mix positions (pooling)
        return ``True``; layers that act position by position pass ``out_full`` through."""
        return self, out_full

    def fc_role(self) -> str | None:
        """This layer's part in the fused fully connected chain (``_fc_chain``): ``"dense"``
        (:meth:`Dense.update` is its kernel map), ``"activation"`` (its kernel map is
        :class:`Activation`'s, from ``expectations_into``), ``"serial"`` (a chain of
        children) or ``None``: such networks take the general route."""
        return None

    def mask_role(self) -> str | None:
        """How masked positions (``kernel(..., mask_constant=c)``) pass this layer:
        ``"keep"`` (it acts position by position, or masks as attention does: the mask goes
        on), ``"end"`` (a global pooling over the unmasked positions: no mask after it),
        ``"chain"`` (a serial chain: its children's roles in order) or ``None``: masks are not
        supported here and ``kernel`` raises before any work (see ``ntkit.layers._mask``)."""
        return None

    def children(self) -> tuple[Layer, ...]:
        """The layers this one is made of, in order (a combinator's sublayers); ``()`` for a
        leaf."""
        return ()

    def footprint(self, in_shape: Shapes, layout: Layouts) -> tuple[Shapes, Layouts, float]:
        """``(out_shape, out_layout, entries)``: the per-example output shape, the kernel's
        layout after this layer (``"fc"``, ``"full"`` or ``"diag"``; one per branch) and the
        largest number of kernel entries per pair of inputs alive while it runs, for the
        memory budget of :meth:`kernel` (see ``ntkit.layers._budget``). The default counts
        the input and output kernels and a nonlinearity's temporaries; combinators combine
        their children's."""
        return leaf_footprint(self.out_shape(in_shape), in_shape, layout)

    # -- what users call -----------------------------------------------------------------
    def kernel(
        self,
        x1,
        x2=None,
        *,
        get: str | tuple[str, ...] = ("nngp", "ntk"),
        diagonal: bool = False,
        batch_size: int | None = None,
        max_memory: int | str | None = None,
        progress: bool = True,
        mask_constant: float | None = None,
    ) -> Kernel:
        """The infinite-width NNGP and NTK of this network between two batches of inputs.

        **Arguments:**

        - ``x1``: ``(N1, d)`` inputs, or ``(N1, C, *S)`` channels-first sequences/images for
          convolutional networks (tensor or NumPy array, floating point, finite).
        - ``x2``: ``(N2, ...)`` inputs of the same per-example shape, or ``None`` for ``x1``
          against itself.
        - ``get``: which kernels to return, ``"nngp"`` and/or ``"ntk"`` (the NNGP is always
          computed: the NTK recursion needs it).
        - ``diagonal``: return only ``k(x1_i, x1_i)`` (``x2`` must be ``None``).
        - ``batch_size``: inputs per block; the kernel is computed block by block (only the
          upper triangle of blocks when ``x2`` is ``None``), which keeps the per-entry work
          in cache. ``None`` picks a size (see ``max_memory``).
        - ``max_memory``: peak-memory budget, bytes or a string such as ``"4GB"`` /
          ``"512MiB"``: the block size is chosen so that the peak, estimated from the shapes
          before anything is allocated (output included), stays under it; a budget too small
          for even one pair of inputs raises ``ValueError`` at once. ``None``: 1 GiB of
          working memory for image networks, no limit for fully-connected ones.
        - ``progress``: show a progress bar over the blocks on terminals (after 3 s).
        - ``mask_constant``: a number (or ``float("nan")``) marking padding in sequence
          inputs ``(N, C, *S)``: a position whose channels all equal it is masked, as in
          neural-tangents (``SelfAttention`` gives it no weight as a key and a zero output,
          ``GlobalAvgPool`` averages over the other positions; see
          :func:`~ntkit.layers.input_mask`). ``None``: no masking.

        **Returns:** a :class:`~ntkit.Kernel` whose ``nngp`` and ``ntk`` are ``(N1, N2)``
        tensors (``(N1,)`` with ``diagonal=True``) of the inputs' dtype and device; ``ntk``
        is ``None`` unless requested. A network whose output is still spatial (e.g. ending in
        ``Conv``) returns ``(N1, N2, *S, *S)``, covariances between all output positions.
        The layout in between is chosen from the network: covariances between all pairs of
        positions only up to the last layer that mixes positions (pooling), same-position
        ones after it.

        **Precision:** float16 and bfloat16 inputs are computed in float32 and the result
        rounded once; a float32 kernel that overflows (inputs beyond about ``1e9``) is
        recomputed in float64. A kernel that is still not finite in the inputs' dtype raises
        ``ValueError``: NaN or inf is never returned.

        Example:
            >>> import torch
            >>> from ntkit import layers as L
            >>> net = L.serial(L.Dense(512, W_std=1.5, b_std=0.05), L.ReLU(), L.Dense(1))
            >>> k = net.kernel(torch.randn(5, 3, dtype=torch.float64))
            >>> k.nngp.shape, k.ntk.shape
            (torch.Size([5, 5]), torch.Size([5, 5]))
        """
        masks = None
        if mask_constant is not None:
            from ._mask import check_maskable, input_mask
            check_maskable(self)
            x1, m1 = input_mask(x1, mask_constant, name="x1")
            m2 = m1
            if x2 is not None:
                x2, m2 = input_mask(x2, mask_constant, name="x2")
            masks = (m1, m2)
        return compute_kernel(self, x1, x2, get=get, diagonal=diagonal, batch_size=batch_size,
                              max_memory=max_memory, progress=progress, masks=masks)

    def module(
        self,
        in_shape: tuple[int, ...] | int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> nn.Module:
        """The finite network with this spec, initialised with the same parametrization.

        **Arguments:**

        - ``in_shape``: per-example input shape without the batch axis, e.g. ``(784,)``.
        - ``generator``: a ``torch.Generator`` for reproducible initialisation.
        - ``dtype``: dtype of the parameters (default ``torch.get_default_dtype()``).

        **Returns:** a ``torch.nn.Module`` mapping ``(N, *in_shape)`` to the network's outputs.

        Example:
            >>> import torch
            >>> from ntkit import layers as L
            >>> net = L.serial(L.Dense(512), L.ReLU(), L.Dense(1))
            >>> model = net.module((3,), generator=torch.Generator().manual_seed(0))
            >>> model(torch.randn(5, 3)).shape
            torch.Size([5, 1])
        """
        if isinstance(in_shape, int):
            in_shape = (in_shape,)
        in_shape = tuple(in_shape)
        if not in_shape or any(not isinstance(s, int) or s <= 0 for s in in_shape):
            raise ValueError(
                f"in_shape must be a non-empty tuple of positive ints (no batch axis), e.g. "
                f"(784,); got {in_shape!r}"
            )
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch dtype; got {dtype}")
        dtype = dtype or torch.get_default_dtype()
        self.out_shape(in_shape)  # raises on incompatible shapes before any allocation
        return self.build(in_shape, generator, dtype)

    def to_dict(self) -> dict:
        """This network as a versioned spec document of plain JSON data (see
        :func:`ntkit.layers.from_dict`, the inverse)."""
        return to_dict(self)

    def to_json(self, *, indent: int | None = 2) -> str:
        """This network's spec document as JSON text (see :func:`ntkit.layers.from_json`)."""
        return to_json(self, indent=indent)

    # -- helpers for subclasses -------------------------------------------------------------
    def _one(self, k):
        """``k`` must be a single flow, not branches."""
        if isinstance(k, list):
            raise ValueError(
                f"{self!r} takes one input but received {len(k)} branches; merge them first "
                f"with FanInSum() or FanInConcat()"
            )
        return k

    def _many(self, k) -> list:
        """``k`` must be branches (a list), not a single flow."""
        if not isinstance(k, list):
            raise ValueError(
                f"{self!r} takes several branches but received a single input; split it "
                f"first with FanOut(n)"
            )
        return k

