"""Combinators: serial composition, parallel branches, fan-out and fan-in (sum, concat)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
from torch import Tensor, nn

from .._checks import positive_int
from ..kernel import Kernel
from ._activation import Activation
from ._activation import Identity as _Identity
from ._base import Layer
from ._elementwise import compose
from ._mask import remask
from ._serialize import register_layer
from ._shape import SpatialDiagonal, drop_to_diagonal

__all__ = ["serial", "parallel", "Serial", "Parallel", "FanOut", "FanInSum", "FanInConcat"]


def _layers(layers, who: str) -> tuple[Layer, ...]:
    if not layers:
        raise ValueError(f"{who}() needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            hint = " (did you pass the class instead of an instance, e.g. ReLU not ReLU()?)" \
                if isinstance(layer, type) else ""
            raise TypeError(f"{who}(): argument {i} is not an ntkit layer: {layer!r}{hint}")
    return tuple(layers)


@register_layer(fields={"layers": "layers"}, required=("layers",))
@dataclass(frozen=True)
class Serial(Layer):
    """Layers applied one after another (build with :func:`serial`)."""

    layers: tuple[Layer, ...]

    def kernel_fn(self, k):
        for layer in self.layers:
            # Masked positions stay zero feature vectors (neural-tangents' remask_kernel).
            k = remask(layer.kernel_fn(k))
        return k

    def fc_role(self):
        return "serial"

    def mask_role(self):
        return "chain"

    def out_shape(self, in_shape):
        for layer in self.layers:
            in_shape = layer.out_shape(in_shape)
        return in_shape

    def children(self):
        return self.layers

    def footprint(self, in_shape, layout):
        worst = 0.0
        for layer in self.layers:
            in_shape, layout, cost = layer.footprint(in_shape, layout)
            worst = max(worst, cost)
        return in_shape, layout, worst

    def plan(self, out_full):
        planned: list[Layer] = []
        need = out_full
        for layer in reversed(self.layers):
            after = need
            layer, need = layer.plan(need)
            if _any(need) and not _any(after) and planned:
                # This layer needs positions mixed; nothing after it does: drop to the diagonal
                # layout right after it, (H W)^2 times cheaper per pair from there on.
                planned.insert(0, SpatialDiagonal())
            planned.insert(0, layer)
        return Serial(tuple(planned)), need

    def build(self, in_shape, generator, dtype) -> nn.Module:
        modules = []
        for layer in self.layers:
            modules.append(layer.build(in_shape, generator, dtype))
            in_shape = layer.out_shape(in_shape)
        return nn.Sequential(*modules)

    def __repr__(self):
        return f"serial({', '.join(map(repr, self.layers))})"


def serial(*layers: Layer) -> Serial:
    """Compose layers in order; nested ``serial`` are flattened.

    Nonlinearities written next to each other (e.g. ``ReLU(), Erf()``) are composed into one
    :class:`Elementwise` activation, because the second one's input is not Gaussian and no
    closed form applies (``Identity`` between them is dropped).

    Example:
        >>> from ntkit import layers as L
        >>> L.serial(L.Dense(8), L.ReLU(), L.serial(L.Dense(1)))
        serial(Dense(8), ReLU(), Dense(1))
    """
    flat: list[Layer] = []
    for layer in _layers(layers, "serial"):
        flat.extend(layer.layers if isinstance(layer, Serial) else (layer,))
    fused: list[Layer] = []
    run: list[Activation] = []
    for layer in flat + [None]:
        if isinstance(layer, Activation):
            run.append(layer)
            continue
        if run and isinstance(layer, _Identity):
            continue  # an identity between nonlinearities changes nothing
        if run:
            fused.append(run[0] if len(run) == 1 else compose(*run))
            run = []
        if layer is not None:
            fused.append(layer)
    return Serial(tuple(fused))


@register_layer(fields={"layers": "layers"}, required=("layers",))
@dataclass(frozen=True)
class Parallel(Layer):
    """Applies the i-th layer to the i-th branch (build with :func:`parallel`)."""

    layers: tuple[Layer, ...]

    def _match(self, branches) -> list:
        branches = self._many(branches)
        if len(branches) != len(self.layers):
            raise ValueError(
                f"parallel() has {len(self.layers)} layers but received {len(branches)} "
                f"branches; use FanOut({len(self.layers)}) before it"
            )
        return branches

    def kernel_fn(self, k):
        pairs = zip(self.layers, self._match(k), strict=True)
        return [layer.kernel_fn(b) for layer, b in pairs]

    def children(self):
        return self.layers

    def footprint(self, in_shape, layout):
        # Every branch is alive at once.
        outs = [layer.footprint(s, lay)
                for layer, s, lay in zip(self.layers, in_shape, layout, strict=True)]
        return [o[0] for o in outs], [o[1] for o in outs], sum(o[2] for o in outs)

    def plan(self, out_full):
        wants = out_full if isinstance(out_full, list) else [out_full] * len(self.layers)
        if len(wants) != len(self.layers):
            return self, out_full  # the branch count error is raised when run
        plans = [layer.plan(w) for layer, w in zip(self.layers, wants, strict=True)]
        # A branch that needs no mixing of positions drops to the diagonal layout at once,
        # even when its input is full for the sake of another branch.
        layers = tuple(p[0] if _any(p[1]) else serial(SpatialDiagonal(), p[0]) for p in plans)
        return Parallel(layers), [_any(p[1]) for p in plans]

    def out_shape(self, in_shape):
        pairs = zip(self.layers, self._match(in_shape), strict=True)
        return [layer.out_shape(s) for layer, s in pairs]

    def build(self, in_shape, generator, dtype) -> nn.Module:
        pairs = zip(self.layers, self._match(in_shape), strict=True)
        return _ParallelModule([layer.build(s, generator, dtype) for layer, s in pairs])

    def __repr__(self):
        return f"parallel({', '.join(map(repr, self.layers))})"


def parallel(*layers: Layer) -> Parallel:
    """One layer per branch: branch ``i`` goes through ``layers[i]``.

    Example (a residual block: ``x + f(x)``):
        >>> from ntkit import layers as L
        >>> block = L.serial(L.FanOut(2), L.parallel(L.serial(L.ReLU(), L.Dense(64)),
        ...                                          L.Identity()), L.FanInSum())
    """
    return Parallel(_layers(layers, "parallel"))


@register_layer(fields={"n": "branches"}, required=("n",))
@dataclass(frozen=True)
class FanOut(Layer):
    """Copies one input into ``n`` identical branches."""

    n: int

    def __post_init__(self):
        object.__setattr__(self, "n", positive_int(self.n, "n"))

    def kernel_fn(self, k):
        return [self._one(k)] * self.n

    def plan(self, out_full):
        return self, _any(out_full)

    def footprint(self, in_shape, layout):
        return [in_shape] * self.n, [layout] * self.n, 0.0

    def out_shape(self, in_shape):
        return [self._one(in_shape)] * self.n

    def build(self, in_shape, generator, dtype) -> nn.Module:
        return _FanOutModule(self.n)


@register_layer
@dataclass(frozen=True)
class FanInSum(Layer):
    """Sums branches of equal shape.

    The kernel of a sum is the sum of the kernels only when the branches' cross-covariances
    vanish. That holds when, for each pair, one branch is linear with zero mean in fresh
    weights the other does not depend on (e.g. ``f(x) + x`` with ``f`` ending in ``Dense``);
    anything else (two copies of one field, a field plus a nonlinearity of it) raises rather
    than silently dropping cross terms.
    """

    def kernel_fn(self, k):
        ks = _same_layout(self._many(k))
        _same_shapes(ks, "FanInSum")
        for (i, a), (j, b) in combinations(enumerate(ks), 2):
            if not (_independent(a, b) or _independent(b, a)):
                raise ValueError(
                    f"FanInSum: branches {i} and {j} are correlated (e.g. copies of the same "
                    f"field, or a field and a nonlinearity of it), and the kernel of their sum "
                    f"would need cross-covariances ntkit does not compute; end at least one of "
                    f"each pair with its own Dense, as in parallel(serial(..., Dense(n)), "
                    f"Identity())"
                )
        all_fresh = all(
            a.linear_in and all(not (a.linear_in & b.depends_on) for b in ks if b is not a)
            for a in ks
        )
        return ks[0].replace(
            nngp=_sum(a.nngp for a in ks),
            ntk=None if ks[0].ntk is None else _sum(a.ntk for a in ks),
            cov1=_sum(a.cov1 for a in ks),
            cov2=None if ks[0].cov2 is None else _sum(a.cov2 for a in ks),
            is_gaussian=all(a.is_gaussian for a in ks),
            linear_in=frozenset().union(*(a.linear_in for a in ks)) if all_fresh else frozenset(),
            depends_on=frozenset().union(*(a.depends_on for a in ks)),
        )

    def out_shape(self, in_shape):
        shapes = self._many(in_shape)
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"FanInSum: branches must have equal shapes; got {shapes}{_SUM_HINT}")
        return shapes[0]

    def build(self, in_shape, generator, dtype) -> nn.Module:
        self.out_shape(in_shape)
        return _SumModule()


@register_layer
@dataclass(frozen=True)
class FanInConcat(Layer):
    """Concatenates branches along the feature (channel) axis, axis 1.

    The kernel is the width-weighted mean of the branches' kernels (neural-tangents). The
    result is a mixture, not one Gaussian field, so a ``Dense`` must follow before any
    nonlinearity.
    """

    def kernel_fn(self, k):
        ks = _same_layout(self._many(k))
        widths = [a.shape1[1] for a in ks]
        out = self.out_shape([a.shape1[1:] for a in ks])
        total = float(sum(widths))

        def mean(values):
            return _sum(v * (w / total) for v, w in zip(values, widths, strict=True))

        return ks[0].replace(
            nngp=mean(a.nngp for a in ks),
            ntk=None if ks[0].ntk is None else mean(a.ntk for a in ks),
            cov1=mean(a.cov1 for a in ks),
            cov2=None if ks[0].cov2 is None else mean(a.cov2 for a in ks),
            shape1=(ks[0].shape1[0],) + out,
            shape2=(ks[0].shape2[0],) + out,
            is_gaussian=False,
            linear_in=frozenset(),
            depends_on=frozenset().union(*(a.depends_on for a in ks)),
        )

    def out_shape(self, in_shape):
        shapes = self._many(in_shape)
        if any(len(s) != len(shapes[0]) or s[1:] != shapes[0][1:] for s in shapes):
            raise ValueError(
                f"FanInConcat: branches must agree in every axis but the feature axis; got "
                f"per-example shapes {shapes}: flatten them first"
            )
        return (sum(s[0] for s in shapes),) + tuple(shapes[0][1:])

    def build(self, in_shape, generator, dtype) -> nn.Module:
        self.out_shape(in_shape)
        return _ConcatModule()


_SUM_HINT = ("; give every branch the same width (end each with a Dense of the same size) or "
             "join them with FanInConcat()")


def _any(need) -> bool:
    return any(need) if isinstance(need, list) else bool(need)


def _same_layout(ks: list[Kernel]) -> list[Kernel]:
    """Branches in one spatial layout: if some arrive diagonal, no later layer needs the full
    one (the layout plan gives every branch of a merge the same request), so drop them all."""
    if any(k.diagonal_spatial for k in ks) and any(k.full_spatial for k in ks):
        return [drop_to_diagonal(k) for k in ks]
    return ks


def _independent(a: Kernel, b: Kernel) -> bool:
    """``a`` is linear with zero mean in weights that ``b`` does not depend on."""
    return bool(a.linear_in) and not (a.linear_in & b.depends_on)


def _same_shapes(ks: list[Kernel], who: str) -> None:
    shapes = [k.shape1[1:] for k in ks]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"{who}: branches must have equal shapes; got {shapes}{_SUM_HINT}")


def _sum(tensors):
    tensors = iter(tensors)
    total = next(tensors)
    for t in tensors:
        total = total + t
    return total


class _ParallelModule(nn.Module):
    def __init__(self, modules):
        super().__init__()
        self.branches = nn.ModuleList(modules)

    def forward(self, xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return tuple(m(x) for m, x in zip(self.branches, xs, strict=True))


class _FanOutModule(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return (x,) * self.n


class _SumModule(nn.Module):
    def forward(self, xs: tuple[Tensor, ...]) -> Tensor:
        return _sum(xs)


class _ConcatModule(nn.Module):
    def forward(self, xs: tuple[Tensor, ...]) -> Tensor:
        return torch.cat(xs, dim=1)

