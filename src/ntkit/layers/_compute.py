"""Evaluating a network's kernel map on inputs, block by block.

Every kernel entry ``K(x1_i, x2_j)`` depends only on the pair of inputs, so the kernel of two
batches is a grid of blocks, each the kernel map applied to one block of ``x1`` and one of
``x2``. For a fully-connected network everything after the input Gram matrix is per-entry
arithmetic; running the whole depth on one cache-sized block before moving on is several times
faster than sweeping each layer over the whole matrix, and when ``x2`` is ``None`` only the
upper triangle of blocks is computed and mirrored.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import as_inputs, check_get, check_pair, positive_int
from ..kernel import Kernel, input_variances

# 512 x 512 entries: ~1 MB per float32 temporary, so one block's layer-by-layer work stays in
# the 1 MB L2 / shared L3 of the machines we measured (bench/kernels_fc.py).
DEFAULT_BATCH_SIZE = 512


def compute_kernel(net, x1, x2, *, get, diagonal: bool, batch_size: int | None) -> Kernel:
    """See :meth:`ntkit.layers.Layer.kernel`."""
    get = check_get(get)
    need_ntk = "ntk" in get
    x1 = as_inputs(x1, "x1")
    if x2 is not None:
        if diagonal:
            raise ValueError("diagonal=True gives k(x, x) of x1 alone; pass x2=None")
        x2 = as_inputs(x2, "x2")
        check_pair(x1, x2)
        if x2 is x1 or (x2.shape == x1.shape and torch.equal(x1, x2)):
            x2 = None
    if x1.ndim != 2:
        raise ValueError(
            f"fully-connected networks take inputs of shape (N, features); got x1 of shape "
            f"{tuple(x1.shape)}: flatten them with x.reshape(len(x), -1)"
        )
    bs = DEFAULT_BATCH_SIZE if batch_size is None else positive_int(batch_size, "batch_size")

    var1 = input_variances(x1)
    var2 = None if x2 is None else input_variances(x2)

    def run(i: int, j: int | None, diag: bool = False) -> Kernel:
        """The kernel map on rows ``i:i+bs`` of x1 and rows ``j:j+bs`` of x2 (None: same)."""
        rows = slice(i, i + bs)
        cols = None if j is None else slice(j, j + bs)
        k0 = Kernel.from_inputs(
            x1[rows], None if cols is None else (x1 if x2 is None else x2)[cols],
            diagonal=diag, ntk=need_ntk, cov1=var1[rows],
            cov2=None if cols is None else (var1 if x2 is None else var2)[cols],
        )
        out = net.kernel_fn(k0)
        if isinstance(out, list):
            raise ValueError(
                f"the network ends in {len(out)} branches; merge them with FanInSum() or "
                f"FanInConcat() to get one kernel"
            )
        return out if need_ntk else out.replace(ntk=None)

    starts1 = range(0, x1.shape[0], bs)
    if diagonal:
        parts = [run(i, None, diag=True) for i in starts1]
        nngp = torch.cat([p.nngp for p in parts])
        ntk = torch.cat([_full(p.ntk, p.nngp) for p in parts]) if need_ntk else None
        return parts[0].replace(nngp=nngp, ntk=ntk, cov1=nngp, shape1=_rows(parts[0].shape1, x1),
                                shape2=_rows(parts[0].shape2, x1))

    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    nngp = torch.empty(n1, n2, dtype=x1.dtype, device=x1.device)
    ntk = torch.empty_like(nngp) if need_ntk else None
    cov1: list[Tensor] = []
    cov2: list[Tensor] = []
    last = None
    for i in starts1:
        for j in range(i if x2 is None else 0, n2, bs):
            if x2 is None and j == i:
                last = run(i, None)
                cov1.append(last.cov1)
            else:
                last = run(i, j)
                if x2 is not None and j == 0:
                    cov1.append(last.cov1)
                if x2 is not None and i == 0:
                    cov2.append(last.cov2)
            _put(nngp, last.nngp, i, j, symmetric=x2 is None)
            if need_ntk:
                _put(ntk, _full(last.ntk, last.nngp), i, j, symmetric=x2 is None)
    return last.replace(
        nngp=nngp, ntk=ntk, cov1=torch.cat(cov1), cov2=None if x2 is None else torch.cat(cov2),
        x1_is_x2=x2 is None, shape1=_rows(last.shape1, x1),
        shape2=_rows(last.shape2, x1 if x2 is None else x2),
    )


def _put(out: Tensor, block: Tensor, i: int, j: int, *, symmetric: bool) -> None:
    """Write ``block`` at rows ``i``, columns ``j``; for a symmetric kernel also mirror it.

    A diagonal block keeps its upper triangle only: an entry is computed as
    ``f(x_a, x_b)`` with ``a < b`` everywhere, so the result is exactly symmetric and the
    same for every block size, even where ``f`` is not exactly symmetric in floating point
    (vectorised vs scalar transcendental functions, quadrature that conditions on ``u``).
    """
    rows, cols = slice(i, i + block.shape[0]), slice(j, j + block.shape[1])
    if not symmetric:
        out[rows, cols] = block
    elif i == j:
        out[rows, cols] = block.triu() + block.triu(1).T
    else:
        out[rows, cols] = block
        out[cols, rows] = block.T


def _full(ntk: Tensor, like: Tensor) -> Tensor:
    # A network without parameters (e.g. only activations) leaves the 0-d zero NTK.
    return ntk if ntk.shape == like.shape else ntk.expand_as(like)


def _rows(shape: tuple[int, ...], x: Tensor) -> tuple[int, ...]:
    return (x.shape[0],) + tuple(shape[1:])
