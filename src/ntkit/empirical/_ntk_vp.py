"""Empirical NTK by NTK-vector products: a vjp, then a jvp; no Jacobian of ``x1`` is stored.

For an example ``x'`` of ``x2`` and an output unit ``b``, the vjp of ``f(x')`` with the unit
cotangent ``e_b`` is the parameter vector ``t = J(x')^T e_b``; the jvp of ``f`` on a block
of ``x1`` along ``t`` is ``J(x1) t = Theta(x1, x')[:, :, b]``. Memory holds the ``K``
tangents of a block of ``x2`` and one jvp per tangent; the cost is about ``N1 N2 K``
forward passes of one example, so it pays off over ``"jacobian"`` when ``P`` is large
against the model's activations (neural-tangents' "NTK-vector products", Novak et al. 2022).
A model with a recurrent module, which ``vmap`` cannot batch, runs the same vjps and jvps
one after another.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from ._blocks import fill_blocks, new_result, reduce_full
from ._jacobian import vmappable
from ._memory import DEFAULT_BUDGET, block_size
from ._model import check_outputs, functional_tensors
from ._probe import Probe

__all__ = ["ntk_vp", "ntk_vp_cost"]


def ntk_vp_cost(pr: Probe, n1: int, n2: int) -> float:
    """FLOPs: ``K`` vjps per example of ``x2``, then one jvp per pair and output unit."""
    return 3.0 * pr.n_out * pr.flops * (n2 + n1 * n2)


def ntk_vp(model: nn.Module, x1: Tensor, x2: Tensor | None, *, selected: set[int],
           outputs: str, batch_size: int | None, max_memory: int | None, pr: Probe) -> Tensor:
    """The kernel in ``outputs`` layout (``x2=None``: ``x1`` against itself); see
    ``empirical_ntk``."""
    params, constants = functional_tensors(model, pr.dtype, selected=selected,
                                           requires_grad=False)
    k, item = pr.n_out, pr.itemsize
    eye = torch.eye(k, dtype=pr.dtype, device=x1.device)
    batched = vmappable(model)

    def f(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return check_outputs(functional_call(model, (p, constants), (x,)), x.shape[0])

    def tangents(x: Tensor) -> dict[str, Tensor]:
        """``name -> (B * K, *shape)``: ``J(x_j)^T e_b`` for each example ``j`` and unit ``b``."""

        def one(xj: Tensor) -> dict[str, Tensor]:
            _, pull = vjp(lambda p: f(p, xj.unsqueeze(0))[0], params)
            if not batched:
                units = [pull(e)[0] for e in eye]
                return {n: torch.stack([u[n] for u in units]) for n in params}
            return vmap(pull)(eye)[0]

        if not batched:
            per_example = [one(xj) for xj in x]
            return {n: torch.cat([t[n] for t in per_example]) for n in params}
        return {n: t.flatten(0, 1) for n, t in vmap(one)(x).items()}

    def pair(xa: Tensor, t: dict[str, Tensor]) -> Tensor:
        def push_one(v: dict[str, Tensor]) -> Tensor:
            return jvp(lambda p: f(p, xa), (params,), (v,))[1]

        if batched:
            prod = vmap(push_one)(t)  # (B2 * K, B1, K): [(j, b), i, a]
        else:
            count = next(iter(t.values())).shape[0]
            prod = torch.stack([push_one({n: v[i] for n, v in t.items()})
                                for i in range(count)])
        b2 = prod.shape[0] // k
        return reduce_full(prod.view(b2, k, xa.shape[0], k).permute(2, 0, 3, 1), outputs)

    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    # Right side: the K tangents and K backward passes of an example; pairs: K jvps (primal
    # and tangent activations) of each example of the left block.
    per_example = item * k * (2 * pr.n_params + 2 * pr.activations)
    per_pair = item * k * (3 * pr.activations + k)
    bs = block_size(max(n1, n2), per_example=per_example, per_pair=per_pair,
                    max_memory=max_memory, batch_size=batch_size, strategy="ntk_vp")
    budget = DEFAULT_BUDGET if max_memory is None else max_memory
    out = new_result(n1, n2, k, outputs, eye)
    # The fused inference path of nn.TransformerEncoderLayer and the fused attention kernels
    # have no forward-mode AD; the math attention kernel has.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            return fill_blocks(out, x1, x2, block=bs, left=lambda x: x, right=tangents, pair=pair,
                               outputs=outputs,
                               cache_right=(n2 + bs) * per_example <= budget)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
