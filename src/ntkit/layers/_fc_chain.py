"""Fully connected networks evaluated block by block in reused buffers.

A fully connected network's kernel map is, after the input Gram matrix, a chain of per-entry
updates: ``Dense`` is affine in ``(nngp, ntk)``, a nonlinearity maps each entry through its
Gaussian expectations. :func:`compute_kernel` runs it on cache-sized blocks; through the
layers' ``kernel_fn`` every step allocates fresh block-sized tensors, and allocations of that
size go back and forth to the operating system (each one page-faults its memory anew) and
leave the cache. Here the same formulas (:meth:`Dense.update`,
:meth:`Activation.expectations_into`: one source for both routes) run in place on four
buffers allocated once per computation, which is what brings a fully connected kernel close
to the cost of its Gram matrix (``bench/kernels_fc.py``).

Used for networks that are a flat chain of ``Dense`` and activations (``Layer.fc_role``);
the closed forms of ``_closed_form`` work in the buffers, other activations (quadrature,
compositions) join through the default ``expectations_into``, which copies. Anything else
(images, fan-out, normalization, SIREN's first layer) takes the general route, and so does
``diagonal=True``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import Tensor

from ..kernel import Kernel, input_variances, restore_diagonal

__all__ = ["FCChain"]

# The block buffers of each thread, kept between kernel calls (a solver streaming kernel rows
# calls once per block of rows; fresh buffers would page-fault anew each time). Per thread:
# two threads computing kernels at once (Dask's threaded workers) never share one.
_LOCAL = threading.local()


class FCChain:
    """The kernel map of a flat chain of :class:`Dense` and activations, applied in place.

    ``kernel_block`` has the signature and the result of ``_compute.kernel_block`` for
    ``(B, d)`` inputs (an entry differs from that route's only by rounding: the same formulas,
    with the products formed in another order) and returns views of its buffers, valid until
    its next call: the caller copies them out first (``_compute._Assembly.put`` does).
    """

    def __init__(self, layers: tuple, template: Callable[..., Kernel]):
        self.layers = layers
        self._template = template
        self._meta_cache: dict = {}

    @classmethod
    def of(cls, planned, template: Callable[..., Kernel]) -> FCChain | None:
        """The chain of ``planned`` (a planned network) or ``None`` when it is not one.

        ``template(x1, x2, var1, var2)`` is the general route's block (used for the record's
        bookkeeping fields, on one input pair, and for ``diagonal=True``)."""
        # Roles, not classes: the layer modules import this one (through Layer.kernel).
        layers = tuple(planned.layers) if planned.fc_role() == "serial" else (planned,)
        roles = [layer.fc_role() for layer in layers]
        if not roles or roles[0] != "dense" or any(r not in ("dense", "activation")
                                                   for r in roles):
            return None
        if any(a == b == "activation" for a, b in zip(roles, roles[1:], strict=False)):
            return None  # two nonlinearities in a row: the general route raises
        return cls(layers, template)

    def kernel_block(self, x1: Tensor, x2: Tensor | None, var1: Tensor, var2: Tensor | None,
                     *, need_ntk: bool, diagonal: bool = False) -> Kernel:
        """See ``_compute.kernel_block`` (``(B1, d)`` and ``(B2, d)`` inputs)."""
        if diagonal:
            return self._template(x1, x2, var1, var2, need_ntk=need_ntk, diagonal=True)
        same = x2 is None
        b1 = x1.shape[0]
        b2 = b1 if same else x2.shape[0]
        q, t, tdot, scratch = self._views(b1, b2, x1.dtype, x1.device, need_ntk)
        d = x1.shape[1]
        # The input kernel as Kernel.from_inputs forms it (x2=None: only the upper triangle
        # of a diagonal block is kept by the assembly, so it is not mirrored here).
        torch.mm(x1, (x1 if same else x2).T, out=q)
        q.div_(d)
        v1 = var1
        v2 = var1 if same else var2
        if same:
            restore_diagonal(q, v1)
        ntk = t if need_ntk else None
        zero = True  # the NTK of the inputs is 0 until the first Dense
        pending = None  # a nonlinearity's E[phi' phi'], multiplied in by the next Dense
        fan_in = d
        for layer in self.layers:
            if layer.fc_role() == "dense":
                if need_ntk:
                    _, ntk = layer.update(q, q.new_zeros(()) if zero else ntk, fan_in=fan_in,
                                          out=(q, t), factor=pending)
                else:
                    layer.update(q, None, fan_in=fan_in, out=(q, None))
                v1 = layer.update(v1, None, fan_in=fan_in)[0]
                v2 = v1 if same else layer.update(v2, None, fan_in=fan_in)[0]
                zero, pending = False, None
                fan_in = layer.out_features
            else:
                layer.expectations_into(q, v1[:, None], v2[None, :], ntk=need_ntk, out=q,
                                        tdot=tdot, scratch=scratch)
                pending = tdot if need_ntk else None
                v1 = layer.expectations(v1, v1, v1, ntk=False)[0]
                v2 = v1 if same else layer.expectations(v2, v2, v2, ntk=False)[0]
                if same:
                    restore_diagonal(q, v1)
        if pending is not None:  # the network ends in a nonlinearity
            t.mul_(pending)
        meta = self._meta(x1, need_ntk)
        return meta.replace(nngp=q, ntk=ntk, cov1=v1, cov2=None if same else v2,
                            x1_is_x2=same, shape1=(b1,) + meta.shape1[1:],
                            shape2=(b2,) + meta.shape2[1:])

    def _meta(self, x1: Tensor, need_ntk: bool) -> Kernel:
        """The record's bookkeeping (shapes, Gaussianity, sources) from the general route on
        one input, computed once."""
        key = ("meta", need_ntk)
        if key not in self._meta_cache:
            one = x1[:1]
            self._meta_cache[key] = self._template(one, None, input_variances(one), None,
                                                need_ntk=need_ntk, diagonal=False)
        return self._meta_cache[key]

    def _views(self, b1: int, b2: int, dtype: torch.dtype, device: torch.device,
               need_ntk: bool) -> list[Tensor]:
        """Four contiguous ``(b1, b2)`` views of this thread's buffers (grown to the largest
        block so far). The views are used by one block at a time: a call copies its block out
        (``_Assembly.put``) before the next block starts."""
        pool = getattr(_LOCAL, "buffers", None)
        if pool is None:
            pool = _LOCAL.buffers = {}
        key = (dtype, str(device))
        flat = pool.get(key)
        size = b1 * b2
        if flat is None or flat.shape[1] < size:
            flat = torch.empty(4, size, dtype=dtype, device=device)
            pool[key] = flat
        return [row[:size].view(b1, b2) for row in flat]
