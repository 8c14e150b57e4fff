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
Kernel", for the same structure). The ``K`` passes are batched by ``vmap`` when the model
has no convolution, and run one after another on the same graph otherwise (``vmap`` has no
fast batching rule for a convolution's backward; ``K`` copies of each example would repeat
the forward pass ``K`` times). The products of two blocks' factors are in
``ntkit.empirical._pairs``.

Which module types are factorised, and how, is the registry of ``_factors``
(``ntkit.empirical.register_structured``); the state of each hooked module and call is kept
in the records ``_Hooked`` and ``_Call``, that of a group of parameters in ``_Group``.
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

from .._alloc import empty, zeros
from ..layers import ConvModule
from ._blocks import fill_blocks, new_result
from ._factors import CONV_HANDLER, StructuredHandler, handler_for
from ._formed import LazyJacobians, column_bytes, fill_jacobian
from ._jacobian import per_example_jacobians, vmappable
from ._memory import DEFAULT_BUDGET, block_size
from ._model import check_outputs, functional_tensors
from ._pairs import BlockState, GramFactor, pair_block
from ._probe import Probe

__all__ = ["Plan", "plan_structured", "structured_ntk"]

_CallId = tuple[int, int]  # (id of the module, index of the call in one forward pass)
# vmap has no fast batching rule for a convolution's backward: with one of these in the model
# the K backward passes run one after another.
_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                 nn.ConvTranspose3d, ConvModule)
_NARROW = 1024  # Jacobians with fewer columns are concatenated (see _features)
_THIN = 32  # a convolution's patches narrower than this are multiplied transposed


@dataclass
class _Hooked:
    """A module whose calls are recorded, and the handler that factorises it."""

    module: nn.Module
    handler: StructuredHandler


@dataclass
class _Call:
    """One call of a hooked module in a forward pass."""

    feature: Tensor | str  # the handler's record of the input, or why it is not factorised
    input: Tensor | None
    version: int | None  # the input's autograd version when the call returned
    output: Tensor | None
    output_version: int | None = None  # the output's autograd version when the call returned


@dataclass
class _Group:
    """Parameters used by the same calls of modules of one kind, factorised together."""

    handler: StructuredHandler
    names: list[str]
    roles: dict[int, list[str]]  # module id -> its attributes ("weight", "bias") in the group
    calls: list[_CallId]
    route: str = "jacobian"  # or "gram"
    n_params: int = 0


@dataclass
class Plan:
    """How ``structured_ntk`` computes each parameter's contribution, and what it costs."""

    modules: dict[int, _Hooked]
    groups: list[_Group]
    fallback: list[str]  # parameters computed by per-example Jacobians
    reasons: dict[str, str] = field(default_factory=dict)  # why each one fell back
    cost: float = 0.0  # FLOPs
    per_example: float = 0.0  # bytes of state per example
    per_pair: float = 0.0  # bytes of temporaries per pair of examples
    sequential: bool = False  # the K backward passes one by one (a convolution), not vmapped
    formed: float = 0.0  # bytes per example in per_example that LazyJacobians need not hold


def _forward(model: nn.Module, params: dict[str, Tensor], constants: dict[str, Tensor],
             modules: dict[int, _Hooked], x: Tensor,
             clone: bool = False) -> tuple[Tensor, dict[int, list[_Call]]]:
    """``f`` as ``(B, K)`` and, per hooked module, its calls. ``clone``: each module's
    output ``z`` is recorded and a copy passed on (else ``z`` itself, and the pass is
    repeated with copies if an in-place op later rewrote one)."""
    n = x.shape[0]
    calls: dict[int, list[_Call]] = {i: [] for i in modules}

    def hook(m: nn.Module, args: tuple, kwargs: dict, output):
        handler = modules[id(m)].handler
        split = handler.split(m, args, kwargs, output)
        if isinstance(split, str):
            calls[id(m)].append(_Call(split, None, None, None))
            return None
        if split is not None:  # the linear map's output z is inside the module's forward
            x_in, z, output = split
        else:
            x_in = args[0] if args else None
            if not isinstance(output, Tensor) or x_in is None:
                calls[id(m)].append(_Call("it was called without one tensor input and "
                                          "output", None, None, None))
                return None
            # Downstream in-place ops (e.g. ReLU(inplace=True)) must not rewrite the
            # recorded output, or autograd would differentiate w.r.t. the modified tensor.
            z, output = output, (output.clone() if clone else None)
        feature = handler.record(m, x_in, n)
        calls[id(m)].append(_Call(feature, x_in, getattr(x_in, "_version", None), z,
                                  z._version))
        return output

    handles = [h.module.register_forward_hook(hook, with_kwargs=True)
               for h in modules.values()]
    try:
        with torch.enable_grad():
            f = check_outputs(functional_call(model, (params, constants), (x,)), n)
    finally:
        for h in handles:
            h.remove()
    done = [c for per_module in calls.values() for c in per_module if c.output is not None]
    if not clone and any(c.output._version != c.output_version for c in done):
        return _forward(model, params, constants, modules, x, clone=True)
    for per_module in calls.values():
        for call in per_module:
            if isinstance(call.input, Tensor) and call.input._version != call.version:
                call.feature = "its input was modified in place later in the forward pass"
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
    params, constants = functional_tensors(model, pr.dtype, selected=selected,
                                           requires_grad=True)
    canonical = {id(p): name for name, p in model.named_parameters()}
    owners: dict[str, list[tuple[nn.Module, str]]] = {}
    for m in model.modules():
        for attr, p in m.named_parameters(recurse=False, remove_duplicate=False):
            if id(p) in selected:
                owners.setdefault(canonical[id(p)], []).append((m, attr))
    modules = {}
    for own in owners.values():
        for m, _ in own:
            handler = handler_for(m)
            if handler is not None:
                modules[id(m)] = _Hooked(m, handler)
    f, calls = _forward(model, params, constants, modules, x[:2])
    edges = _edge_counts(f, params) if f.requires_grad else dict.fromkeys(params, 0)
    for mid, per_module in calls.items():
        for call in per_module:
            if not isinstance(call.feature, str):
                reason = modules[mid].handler.check(modules[mid].module, call.feature,
                                                    call.output)
                call.feature = reason or call.feature

    reasons: dict[str, str] = {}
    keyed: dict[tuple, _Group] = {}
    for name, own in owners.items():
        kinds = {id(modules[id(m)].handler) if id(m) in modules else None for m, _ in own}
        n_calls = sum(len(calls[id(m)]) for m, _ in own if id(m) in modules)
        bad = [c.feature for m, _ in own if id(m) in modules for c in calls[id(m)]
               if isinstance(c.feature, str)]
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
        handler = modules[id(own[0][0])].handler
        call_list = [(id(m), i) for m, _ in own for i in range(len(calls[id(m)]))]
        if not call_list:
            continue  # unused: contributes nothing
        key = (tuple(sorted(call_list)), name if handler.kind == "direct" else "")
        group = keyed.setdefault(key, _Group(handler, [], {}, sorted(call_list)))
        group.names.append(name)
        for m, attr in own:
            group.roles.setdefault(id(m), []).append(handler.parameters[attr])
    groups = list(keyed.values())
    for g in groups:
        for roles in g.roles.values():
            roles.sort(key=lambda r: r != "weight")  # weight columns first, then the bias
        g.n_params = sum(params[n].numel() for n in g.names)
    plan = Plan(modules, groups, [n for n in params if n in reasons], reasons)
    # vmap has no fast batching rule for convolutions' backward (it loops over the K output
    # units, slower than K plain backward passes of the same graph), and none at all for
    # recurrent modules.
    plan.sequential = (any(isinstance(m, _CONVOLUTIONS) for m in model.modules())
                       or not vmappable(model))
    _choose_routes(plan, calls, outputs, n1, n2, pr,
                   sum(params[n].numel() for n in plan.fallback))
    return plan


def _choose_routes(plan: Plan, calls: dict[int, list[_Call]], outputs: str, n1: int, n2: int,
                   pr: Probe, n_fallback: int) -> None:
    """Gram or Jacobian route per group, and the plan's FLOPs and bytes (see module doc)."""
    k, item = pr.n_out, pr.itemsize
    c = k * k if outputs == "full" else k
    pairs = float(n1) * n2
    # One forward and K backward passes.
    plan.cost = (n1 + n2) * (1 + 2 * k) * pr.flops
    plan.per_example = plan.per_pair = plan.formed = 0.0
    jac_params = 0
    for g in plan.groups:
        if g.handler.kind == "direct":
            jac_params += g.n_params
            continue
        rows, width_in, width_out, n_groups = 0, 0, 0, 1
        for mid, i in g.calls:
            m = plan.modules[mid].module
            feature, out = calls[mid][i].feature, calls[mid][i].output
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
            if not (g.handler is CONV_HANDLER and len(g.calls) == 1 and n_groups == 1):
                plan.formed += item * k * n_groups * width_in * width_out
    if n_fallback:
        # Per-example Jacobians w.r.t. the fallback parameters: K backward passes each.
        plan.cost += (n1 + n2) * k * 3 * pr.flops
        plan.per_example += item * k * (n_fallback + 2 * pr.activations)
    plan.cost += 2.0 * pairs * c * (jac_params + n_fallback)
    plan.per_example += item * k * (jac_params + n_fallback)
    plan.formed += item * k * jac_params
    # The block, its tiles while they are summed, and the syrk buffer and its mirror
    # image's temporary (_pairs, _syrk).
    plan.per_pair += 4 * item * c


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
    params, constants = functional_tensors(model, pr.dtype, selected=selected,
                                           requires_grad=True)
    fb_params = {n: params[n].detach() for n in plan.fallback}
    fb_constants = {**constants, **{n: p.detach() for n, p in params.items()
                                    if n not in fb_params}}
    k = pr.n_out

    bs = block_size(max(n1, n2), per_example=plan.per_example, per_pair=plan.per_pair,
                    max_memory=max_memory, batch_size=batch_size, strategy="structured")
    budget = DEFAULT_BUDGET if max_memory is None else max_memory
    lean = plan.per_example - plan.formed + column_bytes() / n1
    if (x2 is None and bs < n1 and (batch_size is None or batch_size >= n1)
            and 2 * n1 * lean + n1 * n1 * plan.per_pair <= budget):
        bs = n1  # formed a chunk at a time (_formed.LazyJacobians), the Jacobians fit one block
    # One block against itself: each state is contracted once, so Jacobians can be formed
    # when their products are due, in one reused buffer.
    lazy = x2 is None and bs >= n1

    like = x1.new_empty(0, dtype=pr.dtype)  # the computation's dtype (x1 may hold indices)

    def state(x: Tensor) -> BlockState:
        return _features(plan, model, params, constants, fb_params, fb_constants, x, k, like,
                         lazy)

    out = new_result(n1, n2, k, outputs, like)
    return fill_blocks(out, x1, x2, block=bs, left=state, right=None,
                       pair=lambda a, b: pair_block(a, b, outputs, k), outputs=outputs,
                       cache_right=(n2 + bs) * plan.per_example <= budget,
                       symmetric_pairs=True)  # pair_block mirrors a block against itself


def _features(plan: Plan, model: nn.Module, params, constants, fb_params, fb_constants,
              x: Tensor, k: int, like: Tensor, lazy: bool = False) -> BlockState:
    """A block's state for ``pair_block``: Gram-route factors and a list of the Jacobians
    ``(B, K, P_i)`` of everything else (kept apart: concatenating would copy them);
    ``lazy``: convolution weights' Jacobians as ``LazyJacobian`` factors instead, and the
    others' as one ``LazyJacobians``."""
    n = x.shape[0]
    f, calls = _forward(model, params, constants, plan.modules, x)
    used = [(mid, i) for g in plan.groups for mid, i in g.calls]
    for mid, i in used:
        if isinstance(calls[mid][i].feature, str):
            raise RuntimeError(f"model: {type(plan.modules[mid].module).__name__} changed "
                               f"between forward passes ({calls[mid][i].feature}); use "
                               f"strategy='jacobian'")
    outs = list({(mid, i): calls[mid][i].output for mid, i in used}.items())
    g_of = dict(zip([c for c, _ in outs],
                    _output_grads(f, [z for _, z in outs], k, plan.sequential),
                    strict=True))  # (B, K, *out) per call
    grams: list[GramFactor] = []
    jacs: list[Tensor | LazyJacobian] = []
    # Jacobian-route rows groups and direct groups are written into one buffer (B, K, P'):
    # one product per pair of blocks instead of one per group, and no copies into it.
    pieces: list[tuple[int, object]] = []  # (columns per output unit, what fills them)
    for g in plan.groups:
        handler = g.handler
        if handler.kind == "direct":
            role = next(iter(g.roles.values()))[0]
            pieces.append((g.n_params, sum(
                handler.jacobian(plan.modules[mid].module, calls[mid][i].feature,
                                 g_of[(mid, i)], role) for mid, i in g.calls)))
            continue
        first = calls[g.calls[0][0]][g.calls[0][1]].feature
        if (g.route == "jacobian" and len(g.calls) == 1 and handler is CONV_HANDLER
                and first.shape[1] == 1):  # one ungrouped convolution
            m = plan.modules[g.calls[0][0]].module
            jacs.extend(_conv_jacobians(first, g_of[g.calls[0]], g.roles[id(m)],
                                        handler.scales(m), lazy))
            continue
        a_parts, g_parts = [], []
        for mid, i in g.calls:
            m = plan.modules[mid].module
            feature = calls[mid][i].feature
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
            grams.append(GramFactor(handler.kind, a if handler.kind == "index" else a[:, 0],
                                    grad, const))
        else:
            pieces.append((a.shape[1] * a.shape[3] * grad.shape[4], (a, grad)))
    if fb_params:
        jacs.extend(per_example_jacobians(model, fb_params, fb_constants, x))
    # Narrow Jacobians join the buffer: many thin products cost more than a copy.
    pieces += [(j.shape[2], j) for j in jacs if isinstance(j, Tensor) and j.shape[2] < _NARROW]
    jacs = [j for j in jacs if not (isinstance(j, Tensor) and j.shape[2] < _NARROW)]
    if pieces:
        jacs.append(LazyJacobians(pieces, n, k, like) if lazy
                    else fill_jacobian(pieces, n, k, like))
    return BlockState(n, like, grams, jacs)


def _conv_jacobians(patches: Tensor, g: Tensor, roles: list[str], scales: tuple[float, float],
                    lazy: bool = False) -> list[Tensor | LazyJacobian]:
    """Per-example gradients of one ungrouped convolution's ``roles`` from its patches
    ``(B, 1, S, in)`` and output gradient ``(B, K, out, *spatial)``: the weight's is one
    batched product ``(B, K out, S) @ (B, S, in)`` (``lazy``: its factors, if it is wide),
    the bias's the sum over positions; ``scales``: ``(w_scale, b_scale)`` of the module."""
    b, k, c = g.shape[:3]
    g = g.reshape(b, k * c, -1)
    w_scale, b_scale = scales
    jacs: list[Tensor | LazyJacobian] = []
    if "weight" in roles:
        a = patches[:, 0] if w_scale == 1.0 else patches[:, 0] * w_scale
        weight = LazyJacobian(g, a, k)
        jacs.append(weight if lazy and weight.shape[2] >= _NARROW else weight.form())
    if "bias" in roles:
        bias = g.sum(2).view(b, k, c)
        jacs.append(bias if b_scale == 1.0 else bias * b_scale)
    return jacs


class LazyJacobian:
    """A convolution weight's per-example gradients ``(B, K, out in)`` as the factors of one
    batched product, formed when its kernel products are due (``pair_block``), into a buffer
    that the next one reuses: one buffer instead of one per layer, whose first touch costs
    page faults as long as the product."""

    def __init__(self, g: Tensor, a: Tensor, k: int):
        self.g, self.a = g, a  # (B, K out, S), (B, S, in)
        b, rows, _ = g.shape
        self.shape = (b, k, rows // k * a.shape[-1])

    def form(self, buffer: Tensor | None = None, units: slice = slice(None)) -> Tensor:
        """The Jacobian ``(B, K', out in)`` of the output units ``units`` (all by default),
        written into ``buffer`` (at least its size) or a new one."""
        b, k, width = self.shape
        start, stop, _ = units.indices(k)
        per_unit = self.g.shape[1] // k
        g = self.g[:, start * per_unit:stop * per_unit]
        rows, inner = g.shape[1], self.a.shape[-1]
        n = b * rows * inner
        out = empty((n,), self.a) if buffer is None else buffer[:n]
        if inner < _THIN:  # transposed, then copied: faster for the benchmark CNN's 1st conv
            flipped = torch.bmm(self.a.transpose(1, 2), g.transpose(1, 2))
            out.view(b, rows, inner).copy_(flipped.transpose(1, 2))
        else:
            torch.bmm(g, self.a, out=out.view(b, rows, inner))
        return out.view(b, stop - start, width)


def _output_grads(f: Tensor, outs: list[Tensor], k: int, sequential: bool) -> list[Tensor]:
    """``df_o/dz`` for every ``z`` in ``outs``, stacked over ``o`` as ``(B, K, *z.shape[1:])``.

    Examples are independent, so ``d(sum_n f_o(x_n))/dz_n = df_o(x_n)/dz_n`` for each ``n``:
    one backward pass per output unit, batched over the units by ``is_grads_batched`` (one
    pass of ``K``-times wider matrix products) unless ``sequential`` or an op has no
    batching rule, else one after another on the same graph.
    """
    if not outs:
        return []
    with torch.enable_grad():  # also under a caller's torch.no_grad()
        if not sequential:
            try:
                eye = torch.eye(k, dtype=f.dtype, device=f.device)
                gs = torch.autograd.grad(f, outs, eye.unsqueeze(1).expand(k, *f.shape),
                                         retain_graph=True, allow_unused=True,
                                         is_grads_batched=True)
                return [zeros((z.shape[0], k, *z.shape[1:]), z) if g is None
                        else g.transpose(0, 1) for z, g in zip(outs, gs, strict=True)]
            except RuntimeError:
                pass
        grads = [empty((z.shape[0], k, *z.shape[1:]), z) for z in outs]
        for o in range(k):
            gs = torch.autograd.grad(f[:, o].sum(), outs, retain_graph=o < k - 1,
                                     allow_unused=True)
            for acc, g in zip(grads, gs, strict=True):
                if g is None:  # f_o does not depend on this output
                    acc[:, o].zero_()
                else:
                    acc[:, o] = g
    return grads


def _columns(handler: StructuredHandler, m: nn.Module, feature: Tensor, roles: list[str]) -> Tensor:
    """``(B, groups, S, in')``: the scaled input rows, then a column of ones for a bias."""
    w_scale, b_scale = handler.scales(m)
    cols = []
    if "weight" in roles:
        cols.append(feature if w_scale == 1.0 else feature * w_scale)
    if "bias" in roles:
        cols.append(feature.new_full((*feature.shape[:3], 1), b_scale))
    return torch.cat(cols, dim=3) if len(cols) > 1 else cols[0]
