"""Empirical NTK by explicit per-example Jacobians (``torch.func``), contracted block by block.

Works for any model whose examples are independent: ``vmap(jacrev(f))`` gives each example's
Jacobian ``J(x) = df(x)/dp`` of shape ``(K, P)``, and a block of the kernel is one matrix
product of two blocks of Jacobians (``Theta(x, x') = J(x) J(x')^T``, in the layout asked).
Recurrent modules (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``) have no ``vmap`` rule: for a model
with one, each example's Jacobian is ``K`` plain backward passes instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from ._blocks import contract_jacobians, fill_blocks, new_result
from ._memory import DEFAULT_BUDGET, block_size
from ._model import check_outputs, functional_tensors
from ._probe import Probe

__all__ = ["jacobian_cost", "jacobian_ntk", "per_example_jacobians", "vmappable"]


def vmappable(model: nn.Module) -> bool:
    """Whether ``torch.func.vmap`` can batch the model (no recurrent module)."""
    return not any(isinstance(m, nn.RNNBase) for m in model.modules())


def per_example_jacobians(model: nn.Module, params: dict[str, Tensor],
                          constants: dict[str, Tensor], x: Tensor) -> list[Tensor]:
    """``[(B, K, P_i)]``: the Jacobian of each example's outputs w.r.t. each tensor of
    ``params`` (flattened, in ``params``' order; not concatenated, which would copy them);
    every other tensor is held at ``constants``."""

    def f(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        # One example (features...) -> its K outputs; the model sees a batch of one.
        return check_outputs(functional_call(model, (p, constants), (xi.unsqueeze(0),)), 1)[0]

    b = x.shape[0]
    if not vmappable(model):
        return _looped_jacobians(f, params, x)
    jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    return [jac[k].reshape(b, jac[k].shape[1], -1) for k in params]


def _looped_jacobians(f, params: dict[str, Tensor], x: Tensor) -> list[Tensor]:
    """``per_example_jacobians`` without ``vmap``: per example, one forward pass and one
    backward pass per output unit."""
    leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    rows: list[list[Tensor]] = [[] for _ in leaves]
    with torch.enable_grad():
        for xi in x:
            out = f(leaves, xi)
            per_unit = [torch.autograd.grad(out[o], list(leaves.values()),
                                            retain_graph=o < out.shape[0] - 1,
                                            allow_unused=True) for o in range(out.shape[0])]
            for i, p in enumerate(leaves.values()):
                rows[i].append(torch.stack([
                    (torch.zeros_like(p) if g[i] is None else g[i]).reshape(-1)
                    for g in per_unit]))
    return [torch.stack(r) for r in rows]


def jacobian_cost(pr: Probe, n1: int, n2: int, outputs: str) -> float:
    """FLOPs: ``K`` backward passes per example, then ``N1 N2 (K or K^2) P`` multiply-adds."""
    k = pr.n_out
    pairs = n1 * n2 * (k * k if outputs == "full" else k)
    return (n1 + n2) * k * 3 * pr.flops + 2.0 * pairs * pr.n_params


def jacobian_ntk(model: nn.Module, x1: Tensor, x2: Tensor | None, *, selected: set[int],
                 outputs: str, batch_size: int | None, max_memory: int | None,
                 pr: Probe) -> Tensor:
    """The kernel in ``outputs`` layout (``x2=None``: ``x1`` against itself); see
    ``empirical_ntk``."""
    params, constants = functional_tensors(model, pr.dtype, selected=selected,
                                           requires_grad=False)
    k, item = pr.n_out, pr.itemsize
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    # Per example: its Jacobian, the vmapped backward's gradient of the largest parameter
    # while the next block's Jacobian is being made (measured), and K sets of activations.
    largest = max((p.numel() for p in params.values()), default=0)
    per_example = item * k * (pr.n_params + largest + 2 * pr.activations)
    per_pair = item * (k * k if outputs == "full" else k)
    bs = block_size(max(n1, n2), per_example=per_example, per_pair=per_pair,
                    max_memory=max_memory, batch_size=batch_size, strategy="jacobian")
    budget = DEFAULT_BUDGET if max_memory is None else max_memory
    out = new_result(n1, n2, k, outputs, x1.new_empty(0, dtype=pr.dtype))
    return fill_blocks(
        out, x1, x2, block=bs,
        left=lambda x: per_example_jacobians(model, params, constants, x), right=None,
        pair=lambda a, b: contract_jacobians(a, b, outputs), outputs=outputs,
        cache_right=(n2 + bs) * per_example <= budget)
