"""Empirical NTK of networks of dense layers, factorised layer by layer.

A dense layer ``z = w W a + b B`` (scales ``w``, ``b``; ``w = b = 1`` for ``nn.Linear``) has
per-example gradients ``dz_o/dW = w g a^T`` and ``dz_o/dB = b g``, where ``a`` is the layer's
input and ``g = df_o/dz`` the gradient at its output. Their inner products over two examples
factorise, ``w^2 (a . a') (g . g') + b^2 (g . g')``, so with the inputs ``A`` and output
gradients ``G`` of all examples stacked row-wise,

    Theta = sum_layers sum_o (w^2 A1 A2^T + b^2) * (G1_o G2_o^T)      (elementwise *)

(the structure neural-tangents exploits in its "structured derivatives" NTK; Novak et al.
2022, "Fast Finite Width Neural Tangent Kernel"). Because the examples are independent, one
backward pass of ``sum_n f_o(x_n)`` gives ``G_o`` for every example and layer at once: a
forward pass and ``K`` backward passes replace ``N`` per-example Jacobians.

The factorisation silently breaks if a weight is used twice (tied weights need cross terms
between uses), used outside its layer, or the layer sees rows other than the examples, so
each of these raises ``NotStructured`` (a ``NotImplementedError``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..layers import DenseModule
from ._model import check_outputs, functional_tensors

__all__ = ["NotStructured", "structured_layers", "structured_ntk"]

# Examples per forward pass by default: big enough for efficient GEMMs, and the autograd
# graph of one pass stays a fraction of the features kept for the Gram matrices.
_DEFAULT_BATCH_SIZE = 2048

_HINT = "; use strategy='jacobian' (works for any model with independent examples)"


class NotStructured(NotImplementedError):
    """The model is outside what the structured strategy computes correctly."""


@dataclass
class _Layer:
    """One dense layer: its squared scales (``None`` for a frozen or absent parameter)."""

    name: str
    module: nn.Module
    weight_scale2: float | None
    bias_scale2: float | None


def structured_layers(model: nn.Module) -> list[_Layer]:
    """The dense layers holding all of ``model``'s trainable parameters, or ``NotStructured``."""
    layers: list[_Layer] = []
    owner: dict[int, str] = {}
    for name, m in model.named_modules():
        trainable = {n: p for n, p in m.named_parameters(recurse=False) if p.requires_grad}
        if not trainable:
            continue
        where = f"module {name!r} ({type(m).__name__})" if name else type(m).__name__
        if not _is_dense(m):
            raise NotStructured(
                f"strategy='structured' supports trainable parameters only in nn.Linear and "
                f"ntkit.layers.DenseModule; {where} has trainable parameters "
                f"{sorted(trainable)}{_HINT}"
            )
        for p in trainable.values():
            if id(p) in owner:
                raise NotStructured(
                    f"strategy='structured' cannot handle tied weights: {where} shares a "
                    f"parameter with module {owner[id(p)]!r}{_HINT}"
                )
            owner[id(p)] = name
        dense = isinstance(m, DenseModule)
        w2 = float(m.weight_scale) ** 2 if dense else 1.0
        b2 = float(m.bias_scale) ** 2 if dense else 1.0
        layers.append(_Layer(name, m, w2 if "weight" in trainable else None,
                             b2 if "bias" in trainable else None))
    return layers


def structured_ntk(model: nn.Module, x1: Tensor, x2: Tensor | None, *,
                   batch_size: int | None, layers: list[_Layer] | None = None) -> Tensor:
    """``(N1, N2)`` empirical NTK (``x2=None``: ``x1`` against itself); see ``empirical_ntk``."""
    layers = structured_layers(model) if layers is None else layers
    params, constants = functional_tensors(model, x1.dtype, requires_grad=True)
    bs = batch_size or _DEFAULT_BATCH_SIZE
    features1 = _features(model, params, constants, layers, x1, bs)
    features2 = features1 if x2 is None else _features(model, params, constants, layers, x2, bs)
    theta = x1.new_zeros(x1.shape[0], (x1 if x2 is None else x2).shape[0])
    for layer, (a1, g1), (a2, g2) in zip(layers, features1, features2, strict=True):
        gram_g = g1 @ g2.T
        if layer.weight_scale2 is not None:
            # (w^2 A1 A2^T + b^2) * G1 G2^T, in place on the N1 x N2 temporary.
            scale = torch.mm(a1, a2.T).mul_(layer.weight_scale2)
            if layer.bias_scale2:
                scale.add_(layer.bias_scale2)
            theta.addcmul_(scale, gram_g)
        elif layer.bias_scale2:
            theta.add_(gram_g, alpha=layer.bias_scale2)
    return theta


def _features(model: nn.Module, params: dict[str, Tensor], constants: dict[str, Tensor],
              layers: list[_Layer], x: Tensor, bs: int) -> list[tuple[Tensor, Tensor]]:
    """Per layer, ``(A, G)``: inputs ``(N, in)`` and output gradients ``(N, K * out)``
    (``G = [G_1 ... G_K]``, one block of columns per output unit)."""
    passes = [_one_pass(model, params, constants, layers, x[i:i + bs])
              for i in range(0, x.shape[0], bs)]
    if len(passes) == 1:
        return passes[0]
    return [(torch.cat([p[k][0] for p in passes]), torch.cat([p[k][1] for p in passes]))
            for k in range(len(layers))]


def _one_pass(model: nn.Module, params: dict[str, Tensor], constants: dict[str, Tensor],
              layers: list[_Layer], x: Tensor) -> list[tuple[Tensor, Tensor]]:
    """``(A, G)`` per layer for one batch: a forward pass and ``K`` backward passes."""
    n = x.shape[0]
    calls: dict[int, list[tuple[Tensor, int, Tensor]]] = {id(ly.module): [] for ly in layers}

    def record(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        calls[id(module)].append((args[0], args[0]._version, output))
        # Downstream in-place ops (e.g. ReLU(inplace=True)) must not rewrite the recorded
        # output, or autograd would differentiate with respect to the modified tensor.
        return output.clone()

    handles = [ly.module.register_forward_hook(record) for ly in layers]
    try:
        with torch.enable_grad():
            f = check_outputs(functional_call(model, (params, constants), (x,)), n)
    finally:
        for h in handles:
            h.remove()

    inputs, outputs = [], []
    for ly in layers:
        where = f"module {ly.name!r} ({type(ly.module).__name__})"
        got = calls[id(ly.module)]
        if len(got) != 1:
            raise NotStructured(
                f"strategy='structured' needs each dense layer called exactly once per "
                f"forward pass; {where} was called {len(got)} times (a layer used twice "
                f"shares its weights, whose NTK needs cross terms between the uses)" + _HINT
            )
        a, version, z = got[0]
        if a.ndim != 2 or a.shape[0] != n:
            raise NotStructured(
                f"strategy='structured' needs each dense layer to act on (N, in) rows, one per "
                f"example; {where} received shape {tuple(a.shape)} for N = {n}" + _HINT
            )
        if a._version != version:
            raise NotStructured(
                f"strategy='structured' records each dense layer's input, but the input of "
                f"{where} was modified in place later in the forward pass" + _HINT
            )
        inputs.append(a.detach())
        outputs.append(z)
    _check_single_use(f, params)

    n_out = f.shape[1]
    grads: list[list[Tensor]] = [[] for _ in layers]
    for o in range(n_out):
        # Examples are independent, so d(sum_n f_o(x_n))/dz_n = df_o(x_n)/dz_n for each n.
        gs = (torch.autograd.grad(f[:, o].sum(), outputs, retain_graph=o < n_out - 1,
                                  allow_unused=True)
              if f.requires_grad else [None] * len(outputs))
        for acc, g, z in zip(grads, gs, outputs, strict=True):
            acc.append(torch.zeros_like(z) if g is None else g)
    return [(a, torch.cat(acc, dim=1)) for a, acc in zip(inputs, grads, strict=True)]


def _check_single_use(f: Tensor, params: dict[str, Tensor]) -> None:
    """Each trainable tensor enters the autograd graph of ``f`` through exactly one edge.

    A dense layer's weight used anywhere else (e.g. ``F.linear(h, lin.weight)`` in a custom
    forward) would add gradient terms that its recorded ``A`` and ``G`` do not see.
    """
    uses = {id(p): 0 for p in params.values()}
    seen = set()
    stack = [f.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for nxt, _ in node.next_functions:
            if nxt is None:
                continue
            variable = getattr(nxt, "variable", None)
            if variable is not None and id(variable) in uses:
                uses[id(variable)] += 1
            stack.append(nxt)
    for name, p in params.items():
        if uses[id(p)] > 1:
            raise NotStructured(
                f"strategy='structured' needs each weight used once, by its own layer; "
                f"parameter {name!r} enters the computation {uses[id(p)]} times" + _HINT
            )


def _is_dense(m: nn.Module) -> bool:
    """``nn.Linear`` or ``DenseModule`` with their own forward and only weight and bias."""
    if isinstance(m, nn.Linear):
        forward = nn.Linear.forward
    elif isinstance(m, DenseModule):
        forward = DenseModule.forward
    else:
        return False
    return type(m).forward is forward and set(m._parameters) <= {"weight", "bias"}
