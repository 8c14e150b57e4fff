"""Evaluating a network's kernel map on inputs, block by block.

Every kernel entry ``K(x1_i, x2_j)`` depends only on the pair of inputs, so the kernel of two
batches is a grid of blocks, each the kernel map applied to one block of ``x1`` and one of
``x2``. For a fully-connected network everything after the input Gram matrix is per-entry
arithmetic; running the whole depth on one cache-sized block before moving on is several times
faster than sweeping each layer over the whole matrix, and when ``x2`` is ``None`` only the
upper triangle of blocks is computed and mirrored. For images the block size also bounds the
memory: a pair of ``H x W`` images carries ``(HW)^2`` covariances where positions mix.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._alloc import empty
from .._bytes import human_bytes as human
from .._bytes import parse_bytes
from .._checks import all_finite, as_inputs, check_get, check_pair, positive_int
from ..kernel import Kernel, in_finite_dtype, input_variances, mirror, transpose_pairs
from ._budget import block_cost
from ._fc_chain import FCChain
from ._mask import remask
from ._protocol import LayerProtocol

# 512 x 512 entries: ~1 MB per float32 temporary, so one block's layer-by-layer work stays in
# a 1 MB L2 or shared L3 cache (chosen with bench/kernels_fc.py).
DEFAULT_BATCH_SIZE = 512
# Working memory of one block when the network takes images and no max_memory is given.
DEFAULT_MAX_MEMORY = "1GiB"
# Kernel entries (of the largest layer, all arrays counted) per block for image networks.
BLOCK_ENTRIES = 2**21


def compute_kernel(net: LayerProtocol, x1, x2, *, get, diagonal: bool, batch_size: int | None,
                   max_memory=None, progress: bool = True, masks=None, only: str | None = None,
                   out: Tensor | None = None) -> Kernel:
    """See :meth:`ntkit.layers.Layer.kernel`; ``masks``: ``(mask1, mask2)`` of masked
    positions (``ntkit.layers._mask``) or ``None``; ``only``, ``out``: see
    :func:`kernel_matrix`."""
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
    _check_network_input(net, x1)
    # The layout plan: keep the covariances between all pairs of positions only where a later
    # layer mixes positions (pooling); a network's spatial output is returned in full.
    planned, full, diag_sp = layout(net, x1)

    def run(work: torch.dtype) -> tuple[Kernel, bool]:
        return _blocks(planned, x1.to(work), None if x2 is None else x2.to(work),
                       out_dtype=x1.dtype, need_ntk=need_ntk, diagonal=diagonal, full=full,
                       diag_sp=diag_sp, batch_size=batch_size, max_memory=max_memory,
                       progress=progress, masks=masks, only=only, out=out)

    return in_finite_dtype(run, x1, x2)


def kernel_matrix(net: LayerProtocol, x1, x2, *, get: str, out: Tensor | None = None,
                  batch_size: int | None = None) -> Tensor:
    """One kernel, ``get`` (``"nngp"`` or ``"ntk"``), of ``(N1, d)`` inputs ``x1`` against
    ``(N2, d)`` inputs ``x2``: an ``(N1, N2)`` tensor of ``x1``'s dtype, written into ``out``
    (contiguous, that shape and dtype) when given.

    For solvers that stream rows of a kernel many times (``ntkit.solve.krr``): the same
    entries as ``net.kernel(x1, x2, get=get)`` without the record, without assembling the
    other kernel, and with no fresh memory per call when ``out`` is reused.

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> net = L.serial(L.Dense(8, b_std=0.1), L.ReLU(), L.Dense(1))
        >>> x, c = torch.randn(6, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
        >>> buffer = torch.empty(6, 4, dtype=torch.float64)
        >>> k = L.kernel_matrix(net, x, c, get="ntk", out=buffer)
        >>> k.data_ptr() == buffer.data_ptr(), bool(torch.allclose(k, net.kernel(x, c).ntk))
        (True, True)
    """
    if get not in ("nngp", "ntk"):
        raise ValueError(f"get must be 'nngp' or 'ntk'; got {get!r}")
    if out is not None:
        n1, n2 = len(x1), len(x2)
        if not isinstance(out, Tensor) or out.shape != (n1, n2) or not out.is_contiguous() \
                or out.dtype != torch.as_tensor(x1[:0]).dtype:
            raise ValueError(f"out must be a contiguous ({n1}, {n2}) tensor of x1's dtype; "
                             f"got {getattr(out, 'shape', type(out).__name__)}")
    k = compute_kernel(net, x1, x2, get=get, diagonal=False, batch_size=batch_size,
                       progress=False, only=get, out=out)
    return getattr(k, get)


def _blocks(planned: LayerProtocol, x1: Tensor, x2: Tensor | None, *, out_dtype: torch.dtype,
            need_ntk: bool, diagonal: bool, full: bool, diag_sp: bool, batch_size: int | None,
            max_memory, progress: bool, masks=None, only: str | None = None,
            out: Tensor | None = None) -> tuple[Kernel, bool]:
    """``(kernel, finite)``: :func:`compute_kernel` on validated inputs, computed in their
    dtype and returned in ``out_dtype``; ``finite`` says whether every entry is finite.
    ``only``, ``out``: see :func:`kernel_matrix` (the other kernel is then ``None``)."""
    bs = _block_size(planned, x1, x2, need_ntk=need_ntk, diagonal=diagonal, full=full,
                     batch_size=batch_size, max_memory=max_memory)

    var1 = input_variances(x1, diagonal_spatial=diag_sp)
    var2 = None if x2 is None else input_variances(x2, diagonal_spatial=diag_sp)
    block = block_function(planned, x1, need_ntk=need_ntk, diag_sp=diag_sp)

    def run(i: int, j: int | None, diag: bool = False) -> Kernel:
        """The kernel map on rows ``i:i+bs`` of x1 and rows ``j:j+bs`` of x2 (None: same)."""
        rows = slice(i, i + bs)
        cols = None if j is None else slice(j, j + bs)
        other, other_var = (x1, var1) if x2 is None else (x2, var2)
        return block(x1[rows], None if cols is None else other[cols], var1[rows],
                     None if cols is None else other_var[cols], diagonal=diag,
                     masks=None if masks is None else (
                         masks[0][rows], None if cols is None
                         else masks[0 if x2 is None else 1][cols]))

    def whole(k: Kernel) -> dict:  # the masks of all rows, where the output still has them
        return {} if k.mask1 is None else dict(
            mask1=masks[0], mask2=None if x2 is None or diagonal else masks[1])

    starts1 = range(0, x1.shape[0], bs)
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    if diagonal:
        blocks = list(starts1)
    else:
        blocks = [(i, j) for i in starts1 for j in range(i if x2 is None else 0, n2, bs)]
    # disable=None: a bar on terminals only; delay: only for runs longer than a few seconds.
    bar = tqdm(total=len(blocks), disable=None if progress else True, delay=3.0,
               desc="kernel blocks", leave=False)
    if diagonal:
        parts = []
        for i in blocks:
            parts.append(run(i, None, diag=True))
            bar.update(1)
        bar.close()
        nngp = torch.cat([p.nngp for p in parts]).to(out_dtype)
        ntk = torch.cat([_full(p.ntk, p.nngp) for p in parts]).to(out_dtype) if need_ntk \
            else None
        finite = all_finite(nngp) and (ntk is None or all_finite(ntk))
        return parts[0].replace(nngp=nngp, ntk=ntk, cov1=nngp, shape1=_rows(parts[0].shape1, x1),
                                shape2=_rows(parts[0].shape2, x1), inputs=None,
                                **whole(parts[0])), finite

    out = _Assembly(n1, n2, symmetric=x2 is None, need_ntk=need_ntk, dtype=out_dtype,
                    only=only, out=out)
    cov1: list[Tensor] = []
    cov2: list[Tensor] = []
    last = None
    for i, j in blocks:
        if x2 is None and j == i:
            last = run(i, None)
            cov1.append(last.cov1)
        else:
            last = run(i, j)
            if x2 is not None and j == 0:
                cov1.append(last.cov1)
            if x2 is not None and i == 0:
                cov2.append(last.cov2)
        out.put(last, i, j)
        bar.update(1)
    bar.close()
    return last.replace(
        nngp=out.nngp, ntk=out.ntk, cov1=torch.cat(cov1).to(out_dtype),
        cov2=None if x2 is None else torch.cat(cov2).to(out_dtype),
        x1_is_x2=x2 is None, shape1=_rows(last.shape1, x1),
        shape2=_rows(last.shape2, x1 if x2 is None else x2), inputs=None, **whole(last),
    ), out.finite()


def block_function(planned: LayerProtocol, x1: Tensor, *, need_ntk: bool, diag_sp: bool):
    """``f(x1, x2, var1, var2, *, diagonal=False, masks=None) -> Kernel``:
    :func:`kernel_block` of ``planned`` for inputs like ``x1`` (a batch or its blocks), by
    the fused in-place chain of ``_fc_chain`` when the network is a fully connected chain of
    ``Dense`` and closed-form activations. Its results may be views of buffers that the next
    call overwrites: copy them out (``_Assembly.put``) before calling again."""
    def general(a, b, va, vb, *, need_ntk=need_ntk, diagonal=False, masks=None):
        return kernel_block(planned, a, b, va, vb, need_ntk=need_ntk, diag_sp=diag_sp,
                            diagonal=diagonal, masks=masks)

    chain = FCChain.of(planned, general) if x1.ndim == 2 else None
    if chain is None:
        return general

    def fused(a, b, va, vb, *, diagonal=False, masks=None):
        if masks is not None:  # masks are for sequences; never with flat inputs
            return general(a, b, va, vb, diagonal=diagonal, masks=masks)
        return chain.kernel_block(a, b, va, vb, need_ntk=need_ntk, diagonal=diagonal)

    return fused


def kernel_block(planned: LayerProtocol, x1: Tensor, x2: Tensor | None, var1: Tensor,
                 var2: Tensor | None, *, need_ntk: bool, diag_sp: bool,
                 diagonal: bool = False, masks=None) -> Kernel:
    """The kernel map of the planned network on one block: ``(B1, ...)`` inputs ``x1`` against
    ``(B2, ...)`` inputs ``x2`` (``None``: ``x1`` against itself, exactly symmetric), with
    their input variances ``var1``, ``var2`` (``input_variances`` of the whole batch, sliced).
    A pure function of its arguments: the same block gives the same bits wherever it runs."""
    k0 = Kernel.from_inputs(x1, x2, diagonal=diagonal, ntk=need_ntk, cov1=var1, cov2=var2,
                            diagonal_spatial=diag_sp)
    if masks is not None:
        k0 = k0.replace(mask1=masks[0], mask2=masks[1])
    out = remask(planned.kernel_fn(k0))
    if isinstance(out, list):
        raise ValueError(
            f"the network ends in {len(out)} branches; merge them with FanInSum() or "
            f"FanInConcat() to get one kernel"
        )
    return out if need_ntk else out.replace(ntk=None)


def kernel_tile(planned: LayerProtocol, x1: Tensor, x2: Tensor | None, var1: Tensor,
                var2: Tensor | None, *, need_ntk: bool, diag_sp: bool,
                batch_size: int) -> tuple[Tensor, Tensor | None]:
    """``(nngp, ntk)`` of one tile, ``(T1, T2)`` each (``ntk`` ``None`` unless ``need_ntk``),
    assembled from blocks of ``batch_size`` exactly as :meth:`Layer.kernel` assembles the
    whole matrix: ``x2=None`` is a diagonal tile (upper-triangle blocks, mirrored).

    When the tile starts at a multiple of ``batch_size`` of the whole input, its blocks are
    the whole computation's blocks, so the tile equals that part of
    ``net.kernel(x1, x2, batch_size=batch_size)`` bit for bit.

    Computed as :func:`compute_kernel` computes: in ``compute_dtype``, or again in float64
    when float32 overflowed (then the tile need not equal the whole computation bit for bit),
    and returned in ``x1``'s dtype; raises ``ValueError`` rather than return NaN or inf.
    """
    def run(work: torch.dtype) -> tuple[tuple[Tensor, Tensor | None], bool]:
        a = x1.to(work)
        b = None if x2 is None else x2.to(work)
        v1 = var1 if var1.dtype == work else input_variances(a, diagonal_spatial=diag_sp)
        v2 = var2
        if b is not None and var2.dtype != work:
            v2 = input_variances(b, diagonal_spatial=diag_sp)
        n1 = a.shape[0]
        n2 = n1 if b is None else b.shape[0]
        out = _Assembly(n1, n2, symmetric=b is None, need_ntk=need_ntk, dtype=x1.dtype)
        block = block_function(planned, a, need_ntk=need_ntk, diag_sp=diag_sp)
        for i in range(0, n1, batch_size):
            for j in range(i if b is None else 0, n2, batch_size):
                rows, cols = slice(i, i + batch_size), slice(j, j + batch_size)
                if b is None and i == j:
                    k = block(a[rows], None, v1[rows], None)
                else:
                    other, other_var = (a, v1) if b is None else (b, v2)
                    k = block(a[rows], other[cols], v1[rows], other_var[cols])
                out.put(k, i, j)
        return (out.nngp, out.ntk), out.finite()

    return in_finite_dtype(run, x1, x2)


def layout(net: LayerProtocol, x1: Tensor) -> tuple:
    """``(planned network, full, diag_sp)``: the layout plan of :func:`compute_kernel`."""
    planned, full = net.plan(True)
    full = x1.ndim > 2 and (any(full) if isinstance(full, list) else bool(full))
    return planned, full, x1.ndim > 2 and not full


def _check_network_input(net: LayerProtocol, x1: Tensor) -> None:
    """The network must accept ``x1``'s per-example shape (clear errors before any work)."""
    shape = tuple(x1.shape[1:])
    try:
        net.out_shape(shape)
    except ValueError:
        if x1.ndim > 2:
            try:
                net.out_shape((math.prod(shape),))
            except ValueError:
                pass
            else:
                raise ValueError(
                    f"fully-connected networks take inputs of shape (N, features); got x1 of "
                    f"shape {tuple(x1.shape)}: flatten them with x.reshape(len(x), -1)"
                ) from None
        raise


def _block_size(planned, x1: Tensor, x2: Tensor | None, *, need_ntk: bool, diagonal: bool,
                full: bool, batch_size: int | None, max_memory) -> int:
    """Inputs per block: ``batch_size`` if given, else the largest that keeps the estimated
    peak under ``max_memory`` (or ``DEFAULT_MAX_MEMORY`` for images), capped at
    ``DEFAULT_BATCH_SIZE`` for the cache. Raises when not even one pair fits."""
    if batch_size is not None:
        batch_size = positive_int(batch_size, "batch_size")
    if max_memory is None and (batch_size is not None or x1.ndim == 2):
        return DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    budget = parse_bytes(DEFAULT_MAX_MEMORY if max_memory is None else max_memory)
    peak, output, per_pair = peak_estimate(planned, x1, x2, need_ntk=need_ntk,
                                           diagonal=diagonal, full=full)
    work = per_pair / ((2 if need_ntk else 1) * x1.element_size())
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]

    if peak(1) > budget:
        raise ValueError(
            f"max_memory={max_memory!r} ({human(budget)}) cannot hold the computation: the "
            f"assembled output needs {human(output)} and one pair of inputs about "
            f"{human(3 * per_pair)} more (estimated from the shapes before starting); raise "
            f"max_memory, ask for get='nngp' only, or split x1/x2"
        )
    if batch_size is not None:
        if peak(batch_size) > budget:
            raise ValueError(
                f"batch_size={batch_size} needs about {human(peak(batch_size))}, over "
                f"max_memory={max_memory!r} ({human(budget)}); leave batch_size=None to choose "
                f"the largest block that fits"
            )
        return batch_size
    lo, hi = 1, max(n1, n2)
    while lo < hi:  # the largest b with peak(b) <= budget
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if peak(mid) <= budget else (lo, mid - 1)
    # Work per pair dominates for images: blocks of ~BLOCK_ENTRIES entries are as fast per
    # entry as larger ones, and for x2=None smaller blocks skip more of the lower triangle.
    cache = max(1, math.isqrt(int(BLOCK_ENTRIES / work)))
    return min(lo, DEFAULT_BATCH_SIZE, cache if x1.ndim > 2 else DEFAULT_BATCH_SIZE)


def peak_estimate(planned, x1: Tensor, x2: Tensor | None, *, need_ntk: bool, diagonal: bool,
                  full: bool):
    """``(peak(b), output bytes, working bytes per pair)``: the estimated peak memory of a
    run in blocks of ``b`` inputs (see ``_budget``), from shapes alone."""
    work, out_entries = block_cost(planned, tuple(x1.shape[1:]), full)
    item = x1.element_size()
    kinds = 2 if need_ntk else 1
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    output = (n1 if diagonal else n1 * n2) * out_entries * kinds * item
    # cov1/cov2 of a block are per-example arrays of at most the working size of one pair.
    per_pair = work * kinds * item

    def peak(b: int) -> float:
        pairs = b if diagonal else b * b
        return output + pairs * per_pair + 2 * b * per_pair

    return peak, output, per_pair


class _Assembly:
    """The ``(n1, n2, ...)`` NNGP (and NTK) of ``dtype`` being assembled from blocks; allocated
    on the first block, whose trailing (spatial) shape it takes."""

    def __init__(self, n1: int, n2: int, *, symmetric: bool, need_ntk: bool,
                 dtype: torch.dtype, only: str | None = None, out: Tensor | None = None):
        self.n1, self.n2, self.symmetric, self.need_ntk = n1, n2, symmetric, need_ntk
        self.dtype = dtype
        # ``only`` ("nngp" or "ntk"): assemble that kernel alone, into ``out`` when given.
        self.only, self.out = only, out
        self.nngp: Tensor | None = None
        self.ntk: Tensor | None = None
        # The running sum of every block's entries (see finite()), one 0-d tensor: a list of
        # per-block sums would scatter small long-lived allocations between the blocks' large
        # temporaries and keep the heap from reusing them.
        self._total: Tensor | None = None

    def put(self, k: Kernel, i: int, j: int) -> None:
        """Write block ``k`` (rows from ``i``, columns from ``j``); see :func:`_put`."""
        if self._total is None:
            shape = (self.n1, self.n2) + tuple(k.nngp.shape[2:])

            def target(name: str) -> Tensor:
                if self.out is not None and self.only == name:
                    return self.out
                return empty(shape, k.nngp.new_empty(0, dtype=self.dtype))

            self.nngp = target("nngp") if self.only in (None, "nngp") else None
            self.ntk = target("ntk") if self.need_ntk and self.only in (None, "ntk") else None
        if self.nngp is not None:
            _put(self.nngp, k.nngp, i, j, symmetric=self.symmetric,
                 diag_sp=k.diagonal_spatial)
            # Summed while the block is in cache (no synchronisation): see finite().
            self._add(k.nngp.sum())
        if self.ntk is not None:
            ntk = _full(k.ntk, k.nngp)
            _put(self.ntk, ntk, i, j, symmetric=self.symmetric, diag_sp=k.diagonal_spatial)
            self._add(ntk.sum())

    def _add(self, block_sum: Tensor) -> None:
        if self._total is None:
            self._total = block_sum
        else:
            self._total.add_(block_sum)

    def finite(self) -> bool:
        """Whether every entry is finite: a finite sum of the blocks' sums says so at once (as
        ``all_finite``); otherwise, or when the blocks were computed in another dtype (the cast
        may overflow), every entry is tested."""
        if self._total is not None and self._total.dtype == self.dtype \
                and bool(torch.isfinite(self._total)):
            return True
        return all(all_finite(t) for t in (self.nngp, self.ntk) if t is not None)


def _put(out: Tensor, block: Tensor, i: int, j: int, *, symmetric: bool,
         diag_sp: bool) -> None:
    """Write ``block`` at rows ``i``, columns ``j``; for a symmetric kernel also mirror it.

    A diagonal block keeps its upper triangle only: an entry is computed as
    ``f(x_a, x_b)`` with ``a < b`` everywhere, so the result is exactly symmetric and the
    same for every block size, even where ``f`` is not exactly symmetric in floating point
    (vectorised vs scalar transcendental functions, quadrature that conditions on ``u``).
    Spatial kernels mirror the positions with the examples (``transpose_pairs``).
    """
    rows, cols = slice(i, i + block.shape[0]), slice(j, j + block.shape[1])
    if not symmetric:
        out[rows, cols] = block
    elif i == j and block.ndim == 2 and block.dtype == out.dtype:
        # mirror() in one pass, straight into the output.
        torch.where(_upper(block.shape[0], block.device), block, block.T, out=out[rows, cols])
    elif i == j:
        out[rows, cols] = mirror(block, diagonal_spatial=diag_sp)
    else:
        out[rows, cols] = block
        out[cols, rows] = transpose_pairs(block, diagonal_spatial=diag_sp)


_UPPER: dict = {}


def _upper(n: int, device: torch.device) -> Tensor:
    """``(n, n)`` boolean mask of the upper triangle with the diagonal (cached)."""
    key = (n, str(device))
    if key not in _UPPER:
        if len(_UPPER) > 8:
            _UPPER.clear()
        _UPPER[key] = torch.ones(n, n, dtype=torch.bool, device=device).triu()
    return _UPPER[key]


def _full(ntk: Tensor, like: Tensor) -> Tensor:
    # A network without parameters (e.g. only activations) leaves the 0-d zero NTK.
    return ntk if ntk.shape == like.shape else ntk.expand_as(like)


def _rows(shape: tuple[int, ...], x: Tensor) -> tuple[int, ...]:
    return (x.shape[0],) + tuple(shape[1:])
