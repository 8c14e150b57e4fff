"""Empirical NTK by explicit per-example Jacobians (``torch.func``), contracted block by block.

Works for any model whose examples are independent: ``vmap(jacrev(f))`` gives each example's
Jacobian ``J(x) = df(x)/dp`` of shape ``(K, P)`` and ``Theta(x, x') = <J(x), J(x')>``
(trace over outputs). Only the Jacobians of two blocks of examples are live at a time; those
of ``x2`` are kept for reuse when they fit in ``_CACHE_BYTES``, and when ``x2`` is ``None``
only the upper triangle of blocks is computed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from ._model import check_outputs, functional_tensors

__all__ = ["jacobian_ntk"]

# Default block: at most 256 MiB of Jacobians per block of examples (two blocks are live).
_BLOCK_BYTES = 1 << 28
# The Jacobians of all of x2 are cached (not recomputed per block of x1) up to 1 GiB.
_CACHE_BYTES = 1 << 30


def jacobian_ntk(model: nn.Module, x1: Tensor, x2: Tensor | None, *,
                 batch_size: int | None) -> Tensor:
    """``(N1, N2)`` empirical NTK (``x2=None``: ``x1`` against itself); see ``empirical_ntk``."""
    params, constants = functional_tensors(model, x1.dtype, requires_grad=False)

    def f(p: dict[str, Tensor], x: Tensor) -> Tensor:
        # One example (features...) -> its K outputs; the model sees a batch of one.
        return check_outputs(functional_call(model, (p, constants), (x.unsqueeze(0),)), 1)[0]

    with torch.no_grad():
        # Two examples, so that outputs which ignore the batch axis are caught.
        probe = x1[:2]
        out = functional_call(model, (params, constants), (probe,))
        n_out = check_outputs(out, probe.shape[0]).shape[1]
    n_params = sum(p.numel() for p in params.values())
    per_example = n_out * n_params * x1.element_size()
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    bs = batch_size or max(1, min(max(n1, n2), _BLOCK_BYTES // per_example))
    jac = vmap(jacrev(f), in_dims=(None, 0))

    def jacobians(x: Tensor) -> list[Tensor]:
        return [j.reshape(x.shape[0], -1) for j in jac(params, x).values()]

    xb = x1 if x2 is None else x2
    cache: dict[int, list[Tensor]] | None = {} if n2 * per_example <= _CACHE_BYTES else None

    def jacobians2(j: int) -> list[Tensor]:
        if cache is None:
            return jacobians(xb[j:j + bs])
        if j not in cache:
            cache[j] = jacobians(xb[j:j + bs])
        return cache[j]

    theta = x1.new_empty(n1, n2)
    for i in range(0, n1, bs):
        j1 = jacobians2(i) if x2 is None else jacobians(x1[i:i + bs])
        for j in range(i if x2 is None else 0, n2, bs):
            block = _contract(j1, j1 if x2 is None and j == i else jacobians2(j))
            theta[i:i + bs, j:j + bs] = block
            if x2 is None and j != i:
                theta[j:j + bs, i:i + bs] = block.T
        if cache is not None and x2 is None:
            cache.pop(i)  # block i is never needed again
    return theta


def _contract(j1: list[Tensor], j2: list[Tensor]) -> Tensor:
    """``sum_p J1_p J2_p^T`` over the per-parameter ``(B, K * P_p)`` Jacobians."""
    out = j1[0] @ j2[0].T
    for a, b in zip(j1[1:], j2[1:], strict=True):
        out.addmm_(a, b.T)
    return out
