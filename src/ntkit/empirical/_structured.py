"""Empirical NTK factorised layer by layer ("structured derivatives").

A weight used in rows ``s`` of an example (a dense layer on a sequence, a convolution's
patches) has the per-example gradient ``dz/dW = sum_s a_s g_s^T``, where ``a_s`` is the
layer's input row and ``g_s = df_o/dz_s`` the gradient at its output. The NTK contribution
of two examples is then either

- the **Gram route**: ``sum_{s,s'} (a_s . a'_s') (g_s . g'_s')``: Gram matrices of the
  inputs and of the output gradients, never a Jacobian (for ``nn.Linear`` on ``(N, in)``
  inputs, ``S = 1``: ``(A1 A2^T) * (G1 G2^T)``); or
- the **Jacobian route**: form each example's ``sum_s a_s g_s^T`` (``in x out`` per output
  unit) and contract those,

whichever the shapes make cheaper (``S^2 (in + K out)`` against ``K in out`` per pair of
examples, for ``K`` output units; ``K^2`` for the full layout). Biases are a column of ones
in ``a``; embeddings have one-hot rows (equal indices); normalisation layers' affine
parameters get their small per-example gradients directly. One forward pass records every
supported layer's input and ``K`` backward passes give all ``g`` for every example at once,
because examples are independent (Novak et al. 2022, "Fast Finite Width Neural Tangent
Kernel", for the same structure). With a convolution in the model the ``K`` passes are one
forward and one backward pass on ``K`` copies of each example instead, because ``vmap`` has
no fast batching rule for a convolution's backward. The products of two blocks' factors
are in ``ntkit.empirical._pairs``.

Every parameter that this cannot capture exactly falls back to per-example Jacobians of the
model w.r.t. that parameter alone (``torch.func``): parameters of other modules, a module
whose input lacks the batch axis first or is modified in place later, and any parameter that
enters the autograd graph more often than its supported modules were called (e.g. a weight
also used directly in a custom forward). Tied weights used by several calls of supported
modules stay factorised: the rows of all calls are concatenated, which gives the cross terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ._blocks import fill_blocks, new_result
from ._factors import Handler, handler_for
from ._jacobian import per_example_jacobians
from ._memory import DEFAULT_BUDGET, block_size
from ._model import check_outputs, functional_tensors
from ._pairs import pair_block
from ._probe import Probe

__all__ = ["Plan", "plan_structured", "structured_ntk"]

_Call = tuple[int, int]  # (id of the module, index of the call in one forward pass)


@dataclass
class _Group:
    """Parameters used by the same calls of modules of one kind, factorised together."""

    handler: Handler
    names: list[str]
    roles: dict[int, list[str]]  # module id -> its attributes ("weight", "bias") in the group
    calls: list[_Call]
    route: str = "jacobian"  # or "gram"
    n_params: int = 0


@dataclass
class Plan:
    """How ``structured_ntk`` computes each parameter's contribution, and what it costs."""

    modules: dict[int, tuple[nn.Module, Handler]]
    groups: list[_Group]
    fallback: list[str]  # parameters computed by per-example Jacobians
    reasons: dict[str, str] = field(default_factory=dict)  # why each one fell back
    cost: float = 0.0  # FLOPs
    per_example: float = 0.0  # bytes of state per example
    per_pair: float = 0.0  # bytes of temporaries per pair of examples
    replicate: bool = False  # output gradients by one backward pass on K copies of a block


def _forward(model: nn.Module, params: dict[str, Tensor], constants: dict[str, Tensor],
             modules: dict[int, tuple[nn.Module, Handler]], x: Tensor, rep: int = 1):
    """``f`` as ``(B, K)`` and, per hooked module, its calls ``[feature or reason, output]``.

    ``rep > 1``: ``x`` holds each example ``rep`` times in a row; features are recorded from
    the first copies only (``B / rep`` examples), outputs for all.
    """
    n = x.shape[0] // rep
    calls: dict[int, list[list]] = {i: [] for i in modules}

    def hook(m: nn.Module, args: tuple, output):
        x_in = args[0] if args else None
        if not isinstance(output, Tensor) or x_in is None:
            calls[id(m)].append(["it was called without one tensor input and output", None,
                                 None, None])
            return None
        if rep == 1:
            feature = modules[id(m)][1].record(m, x_in, n)
        elif isinstance(x_in, Tensor) and x_in.ndim and x_in.shape[0] == n * rep:
            feature = modules[id(m)][1].record(m, x_in[::rep], n)
        else:
            feature = "its input lost the batch axis when the examples were repeated"
        # Downstream in-place ops (e.g. ReLU(inplace=True)) must not rewrite the recorded
        # output, or autograd would differentiate with respect to the modified tensor.
        calls[id(m)].append([feature, x_in, getattr(x_in, "_version", None), output])
        return output.clone()

    handles = [m.register_forward_hook(hook) for m, _ in modules.values()]
    try:
        with torch.enable_grad():
            f = check_outputs(functional_call(model, (params, constants), (x,)), n * rep)
    finally:
        for h in handles:
            h.remove()
    for per_module in calls.values():
        for call in per_module:
            if isinstance(call[1], Tensor) and call[1]._version != call[2]:
                call[0] = "its input was modified in place later in the forward pass"
    return f, calls


def _edge_counts(f: Tensor, params: dict[str, Tensor]) -> dict[str, int]:
    """How many times each parameter enters the autograd graph of ``f``."""
    by_id = {id(p): name for name, p in params.items()}
    counts = dict.fromkeys(params, 0)
    seen, stack = set(), [f.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for nxt, _ in node.next_functions:
            if nxt is None:
                continue
            variable = getattr(nxt, "variable", None)
            if variable is not None and id(variable) in by_id:
                counts[by_id[id(variable)]] += 1
            stack.append(nxt)
    return counts


def plan_structured(model: nn.Module, x: Tensor, *, selected: set[int], outputs: str,
                    n1: int, n2: int, pr: Probe) -> Plan:
    """Decide, from one forward pass on two examples, how each parameter is computed."""
    params, constants = functional_tensors(model, x.dtype, selected=selected,
                                           requires_grad=True)
    canonical = {id(p): name for name, p in model.named_parameters()}
    owners: dict[str, list[tuple[nn.Module, str]]] = {}
    for m in model.modules():
        for attr, p in m._parameters.items():
            if p is not None and id(p) in selected:
                owners.setdefault(canonical[id(p)], []).append((m, attr))
    modules = {}
    for own in owners.values():
        for m, _ in own:
            handler = handler_for(m)
            if handler is not None:
                modules[id(m)] = (m, handler)
    f, calls = _forward(model, params, constants, modules, x[:2])
    edges = _edge_counts(f, params) if f.requires_grad else dict.fromkeys(params, 0)

    reasons: dict[str, str] = {}
    keyed: dict[tuple, _Group] = {}
    for name, own in owners.items():
        kinds = {id(modules[id(m)][1]) if id(m) in modules else None for m, _ in own}
        n_calls = sum(len(calls[id(m)]) for m, _ in own if id(m) in modules)
        bad = [c[0] for m, _ in own if id(m) in modules for c in calls[id(m)]
               if isinstance(c[0], str)]
        if None in kinds:
            m = next(m for m, _ in own if id(m) not in modules)
            reasons[name] = f"{type(m).__name__} has no factorisation here"
        elif len(kinds) > 1:
            reasons[name] = "it is tied across modules of different kinds"
        elif bad:
            reasons[name] = bad[0]
        elif edges[name] != n_calls:
            reasons[name] = (f"it enters the computation {edges[name]} times but its modules "
                             f"are called {n_calls} times")
        if name in reasons:
            continue
        handler = modules[id(own[0][0])][1]
        call_list = [(id(m), i) for m, _ in own for i in range(len(calls[id(m)]))]
        if not call_list:
            continue  # unused: contributes nothing
        key = (tuple(sorted(call_list)), name if handler.kind == "direct" else "")
        group = keyed.setdefault(key, _Group(handler, [], {}, sorted(call_list)))
        group.names.append(name)
        for m, attr in own:
            group.roles.setdefault(id(m), []).append(attr)
    groups = list(keyed.values())
    for g in groups:
        for roles in g.roles.values():
            roles.sort(key=lambda r: r != "weight")  # weight columns first, then the bias
        g.n_params = sum(params[n].numel() for n in g.names)
    plan = Plan(modules, groups, [n for n in params if n in reasons], reasons)
    # vmap has no fast batching rule for convolutions' backward (it loops over the K output
    # units): with one in the model, repeat each example K times and run one backward pass.
    plan.replicate = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    _choose_routes(plan, calls, outputs, n1, n2, pr,
                   sum(params[n].numel() for n in plan.fallback))
    return plan


def _choose_routes(plan: Plan, calls, outputs: str, n1: int, n2: int, pr: Probe,
                   n_fallback: int) -> None:
    """Gram or Jacobian route per group, and the plan's FLOPs and bytes (see module doc)."""
    k, item = pr.n_out, pr.itemsize
    c = k * k if outputs == "full" else k
    pairs = float(n1) * n2
    # One forward and K backward passes (or K forward and backward passes, replicated).
    plan.cost = (n1 + n2) * (3 * k if plan.replicate else 1 + 2 * k) * pr.flops
    plan.per_example = plan.per_pair = 0.0
    if plan.replicate:  # the autograd graph of K copies of each example
        plan.per_example += 2.0 * item * k * pr.activations
    jac_params = 0
    for g in plan.groups:
        if g.handler.kind == "direct":
            jac_params += g.n_params
            continue
        rows, width_in, width_out, n_groups = 0, 0, 0, 1
        for mid, i in g.calls:
            m = plan.modules[mid][0]
            feature, _, _, out = calls[mid][i]
            roles = g.roles[mid]
            if g.handler.kind == "index":  # (B, S) indices
                rows += feature.shape[1]
                width_in = 1
            else:  # (B, groups, S, in)
                n_groups = feature.shape[1]
                rows += feature.shape[2]
                width_in = feature.shape[3] * ("weight" in roles) + ("bias" in roles)
            width_out = g.handler.grads(m, out.unsqueeze(1)).shape[-1]
        # FLOPs per pair of examples (Gram, Jacobian route) and per example (forming the
        # Jacobian route's per-example gradients).
        gram = rows * rows * (2 * width_in + 2 * c * width_out + c)
        jac = 2.0 * c * n_groups * width_in * width_out
        form = 2.0 * rows * n_groups * width_in * k * width_out
        factors = item * rows * n_groups * (width_in + k * width_out)
        if g.handler.kind == "index" or (n_groups == 1 and gram < jac + 2 * form / n2):
            g.route = "gram"
            plan.cost += pairs * gram
            plan.per_example += factors
            plan.per_pair += item * rows * rows * (2 + 2 * c)
        else:
            plan.cost += (n1 + n2) * form + pairs * jac
            plan.per_example += factors + item * k * n_groups * width_in * width_out
    if n_fallback:
        # Per-example Jacobians w.r.t. the fallback parameters: K backward passes each.
        plan.cost += (n1 + n2) * k * 3 * pr.flops
        plan.per_example += item * k * (n_fallback + 2 * pr.activations)
    plan.cost += 2.0 * pairs * c * (jac_params + n_fallback)
    plan.per_example += item * k * (jac_params + n_fallback)
    plan.per_pair += item * c


def structured_ntk(model: nn.Module, x1: Tensor, x2: Tensor | None, *, selected: set[int],
                   outputs: str, batch_size: int | None, max_memory: int | None, pr: Probe,
                   plan: Plan | None = None) -> Tensor:
    """The kernel in ``outputs`` layout (``x2=None``: ``x1`` against itself); see
    ``empirical_ntk``."""
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    if plan is None:
        plan = plan_structured(model, x1, selected=selected, outputs=outputs, n1=n1, n2=n2,
                               pr=pr)
    params, constants = functional_tensors(model, x1.dtype, selected=selected,
                                           requires_grad=True)
    fb_params = {n: params[n].detach() for n in plan.fallback}
    fb_constants = {**constants, **{n: p.detach() for n, p in params.items()
                                    if n not in fb_params}}
    k = pr.n_out

    def state(x: Tensor):
        return _features(plan, model, params, constants, fb_params, fb_constants, x, k)

    bs = block_size(max(n1, n2), per_example=plan.per_example, per_pair=plan.per_pair,
                    max_memory=max_memory, batch_size=batch_size, strategy="structured")
    budget = DEFAULT_BUDGET if max_memory is None else max_memory
    out = new_result(n1, n2, k, outputs, x1)
    return fill_blocks(out, x1, x2, block=bs, left=state, right=None,
                       pair=lambda a, b: pair_block(a, b, outputs, k), outputs=outputs,
                       cache_right=(n2 + bs) * plan.per_example <= budget)


def _features(plan: Plan, model: nn.Module, params, constants, fb_params, fb_constants,
              x: Tensor, k: int):
    """A block's state for ``pair_block``: ``(x, grams, jacobians)``, with Gram-route factors
    ``(kind, A, G, G G^T if G is the same for every example else None)`` and the Jacobians
    ``(B, K, P)`` of everything else, concatenated (``None`` if there are none)."""
    n = x.shape[0]
    rep = k if plan.replicate else 1
    xr = x if rep == 1 else x.repeat_interleave(rep, dim=0)
    f, calls = _forward(model, params, constants, plan.modules, xr, rep)
    used = [(mid, i) for g in plan.groups for mid, i in g.calls]
    for mid, i in used:
        if isinstance(calls[mid][i][0], str):
            raise RuntimeError(f"model: {type(plan.modules[mid][0]).__name__} changed between "
                               f"forward passes ({calls[mid][i][0]}); use "
                               f"strategy='jacobian'")
    outs = list({(mid, i): calls[mid][i][3] for mid, i in used}.items())
    g_of = dict(zip([c for c, _ in outs], _output_grads(f, [z for _, z in outs], k, rep),
                    strict=True))  # (B, K, *out) per call
    grams, jacs = [], []
    for g in plan.groups:
        handler = g.handler
        if handler.kind == "direct":
            role = next(iter(g.roles.values()))[0]
            jacs.append(sum(handler.jacobian(plan.modules[mid][0], calls[mid][i][0],
                                             g_of[(mid, i)], role) for mid, i in g.calls))
            continue
        a_parts, g_parts = [], []
        for mid, i in g.calls:
            m = plan.modules[mid][0]
            feature = calls[mid][i][0]
            g_parts.append(handler.grads(m, g_of[(mid, i)]))
            a_parts.append(feature if handler.kind == "index"
                           else _columns(handler, m, feature, g.roles[mid]))
        grad = g_parts[0] if len(g_parts) == 1 else torch.cat(g_parts, dim=2)
        a = a_parts[0] if len(a_parts) == 1 else torch.cat(
            a_parts, dim=-1 if handler.kind == "index" else 2)
        if g.route == "gram":  # grad: (B, 1, S, K, out), contiguous for the products
            grad = grad[:, 0].contiguous()
            const = None
            if grad.shape[1] == 1 and torch.equal(grad, grad[:1].expand_as(grad)):
                const = grad[0, 0] @ grad[0, 0].T
            grams.append((handler.kind, a if handler.kind == "index" else a[:, 0], grad, const))
        else:
            jacs.append(_route_jacobian(plan, a, grad, g_of, g.calls, n, k))
    if fb_params:
        jacs.append(per_example_jacobians(model, fb_params, fb_constants, x))
    return x, grams, (jacs[0] if len(jacs) == 1 else torch.cat(jacs, dim=2) if jacs else None)


def _route_jacobian(plan: Plan, a: Tensor, grad: Tensor, g_of, calls: list[_Call], n: int,
                    k: int) -> Tensor:
    """``(B, K, P)``: a group's per-example gradients ``sum_s a_s g_s^T`` (columns in a fixed
    order of the group's parameters)."""
    m = plan.modules[calls[0][0]][0]
    if len(calls) == 1 and isinstance(m, nn.modules.conv._ConvNd) and m.groups == 1:
        # One ungrouped convolution: its output gradient (B, K, out, *spatial) is already
        # the left factor of one batched product, (B, K out, S) @ (B, S, in).
        g0 = g_of[calls[0]]
        return torch.bmm(g0.reshape(n, k * g0.shape[2], -1), a[:, 0]).view(n, k, -1)
    return torch.einsum("bgsi,bgsoc->bogic", a, grad).reshape(n, k, -1)


def _output_grads(f: Tensor, outs: list[Tensor], k: int, rep: int = 1) -> list[Tensor]:
    """``df_o/dz`` for every ``z`` in ``outs``, stacked over ``o`` as ``(B, K, *z.shape[1:])``.

    Examples are independent, so ``d(sum_n f_o(x_n))/dz_n = df_o(x_n)/dz_n`` for each ``n``:
    one backward pass per output unit, batched over the units by ``is_grads_batched`` (one
    pass of ``K``-times wider matrix products) when every op has a batching rule. ``rep = K``:
    the forward pass ran on ``K`` copies of each example (``f`` is ``(B K, K)``), and one
    ordinary backward pass of ``sum_{n,o} f_o(x_n copy o)`` gives the same.
    """
    if not outs:
        return []
    with torch.enable_grad():  # also under a caller's torch.no_grad()
        if rep > 1:
            n = f.shape[0] // rep
            select = torch.eye(k, dtype=f.dtype, device=f.device).repeat(n, 1)
            gs = torch.autograd.grad(f, outs, select, allow_unused=True)
            return [torch.zeros((n, k, *z.shape[1:]), dtype=z.dtype, device=z.device)
                    if g is None else g.view(n, k, *z.shape[1:])
                    for z, g in zip(outs, gs, strict=True)]
        try:
            eye = torch.eye(k, dtype=f.dtype, device=f.device)
            gs = torch.autograd.grad(f, outs, eye.unsqueeze(1).expand(k, *f.shape),
                                     retain_graph=True, allow_unused=True,
                                     is_grads_batched=True)
            return [torch.zeros((z.shape[0], k, *z.shape[1:]), dtype=z.dtype, device=z.device)
                    if g is None else g.transpose(0, 1) for z, g in zip(outs, gs, strict=True)]
        except RuntimeError:
            pass
        grads: list[list[Tensor]] = [[] for _ in outs]
        for o in range(k):
            gs = torch.autograd.grad(f[:, o].sum(), outs, retain_graph=o < k - 1,
                                     allow_unused=True)
            for acc, z, g in zip(grads, outs, gs, strict=True):
                acc.append(torch.zeros_like(z) if g is None else g)
    return [torch.stack(acc, dim=1) for acc in grads]


def _columns(handler: Handler, m: nn.Module, feature: Tensor, roles: list[str]) -> Tensor:
    """``(B, groups, S, in')``: the scaled input rows, then a column of ones for a bias."""
    w_scale, b_scale = handler.scales(m)
    cols = []
    if "weight" in roles:
        cols.append(feature if w_scale == 1.0 else feature * w_scale)
    if "bias" in roles:
        cols.append(feature.new_full((*feature.shape[:3], 1), b_scale))
    return torch.cat(cols, dim=3) if len(cols) > 1 else cols[0]
