"""Dense (fully-connected) layer in the NTK or the standard parametrization."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import positive_int, real_number
from ..kernel import Kernel
from ._base import Layer, fresh_token
from ._serialize import register_layer
from ._twin import AffineTwin

__all__ = ["Dense", "DenseModule"]

_PARAMETRIZATIONS = ("ntk", "standard")


@register_layer(fields={"out_features": "width", "W_std": "real", "b_std": "real or null",
                        "parametrization": "string"}, required=("out_features",))
@dataclass(frozen=True)
class Dense(Layer):
    """Fully-connected layer with ``out_features`` outputs acting on ``(N, in_features)``.

    **Arguments:**

    - ``out_features``: width of the finite twin (the kernel is its infinite-width limit).
    - ``W_std``, ``b_std``: weight and bias scales; ``b_std=None`` means no bias at all.
    - ``parametrization``:

      - ``"ntk"`` (default): ``z = W_std / sqrt(in) * W x + b_std * b`` with
        ``W, b ~ N(0, 1)``. Kernel: ``K <- W_std^2 K + b_std^2``,
        ``Theta <- W_std^2 Theta + K_new``.
      - ``"standard"``: ``z = W x + b`` with ``W ~ N(0, W_std^2 / in)``,
        ``b ~ N(0, b_std^2)``; the parameters are ``W`` and ``b`` themselves, so the NNGP is
        the same and the NTK grows with the finite widths:
        ``Theta <- in * K_old + W_std^2 Theta (+ 1 with a bias)`` (neural-tangents with width
        scale ``s = (1, 1)``). A bias with ``b_std=0`` is still a trainable parameter and adds
        the ``+ 1``.

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> k = L.Dense(8, W_std=2.0, b_std=0.5).kernel(torch.ones(2, 3, dtype=torch.float64))
        >>> k.nngp[0, 1].item(), k.ntk[0, 1].item()
        (4.25, 4.25)
    """

    out_features: int
    _: KW_ONLY
    W_std: float = 1.0
    b_std: float | None = 0.0
    parametrization: str = "ntk"

    def __post_init__(self):
        object.__setattr__(self, "out_features", positive_int(self.out_features, "out_features"))
        object.__setattr__(self, "W_std", real_number(self.W_std, "W_std", minimum=0.0))
        object.__setattr__(self, "b_std",
                           real_number(self.b_std, "b_std", minimum=0.0, allow_none=True))
        if self.parametrization not in _PARAMETRIZATIONS:
            raise ValueError(
                f"parametrization must be one of {_PARAMETRIZATIONS}; got {self.parametrization!r}"
            )

    def __repr__(self):
        opts = "".join(f", {name}={getattr(self, name)!r}"
                       for name, default in (("W_std", 1.0), ("b_std", 0.0),
                                             ("parametrization", "ntk"))
                       if getattr(self, name) != default)
        return f"Dense({self.out_features}{opts})"

    def out_shape(self, in_shape):
        in_shape = self._one(in_shape)
        if len(in_shape) != 1:
            raise ValueError(
                f"Dense acts on inputs of shape (N, features); got per-example shape "
                f"{in_shape}: flatten them first"
            )
        return (self.out_features,)

    def kernel_fn(self, k: Kernel) -> Kernel:
        k = self._one(k)
        self.out_shape(k.shape1[1:])
        nngp, ntk = self.update(k.nngp, k.ntk, fan_in=k.shape1[1])
        w2, b2 = self._variances()
        token = fresh_token()
        return k.replace(
            nngp=nngp,
            ntk=ntk,
            cov1=affine(k.cov1, w2, b2),
            cov2=None if k.cov2 is None else affine(k.cov2, w2, b2),
            shape1=(k.shape1[0], self.out_features),
            shape2=(k.shape2[0], self.out_features),
            is_gaussian=True,
            linear_in=frozenset({token}),
            depends_on=k.depends_on | {token},
        )

    def build(self, in_shape, generator, dtype) -> nn.Module:
        return DenseModule(in_shape[0], self.out_features, W_std=self.W_std, b_std=self.b_std,
                           parametrization=self.parametrization, generator=generator,
                           dtype=dtype)

    def fc_role(self):
        return "dense" if type(self).kernel_fn is Dense.kernel_fn else None

    def _variances(self) -> tuple[float, float]:
        return self.W_std**2, (self.b_std or 0.0) ** 2

    def update(self, nngp: Tensor, ntk: Tensor | None, *, fan_in: int,
               out: tuple[Tensor, Tensor | None] | None = None, factor: Tensor | None = None
               ) -> tuple[Tensor, Tensor | None]:
        """``(nngp, ntk)`` after this layer from those before it (``ntk`` ``None``: not asked;
        0-d: the zero NTK of the inputs), with ``fan_in`` input features. ``out`` receives
        them in place (they may be ``nngp`` and ``ntk`` themselves: the fused fully connected
        chain of ``_fc_chain`` works so); ``None`` allocates new tensors. ``factor``: the
        preceding nonlinearity's ``E[phi' phi']`` not yet multiplied into ``ntk`` (the
        fused chain applies it here, in the same pass)."""
        w2, b2 = self._variances()
        o_nngp, o_ntk = (None, None) if out is None else out
        if ntk is not None and ntk.ndim > 0 and factor is not None \
                and self.parametrization == "ntk":
            new = affine(nngp, w2, b2, out=o_nngp)
            return new, torch.addcmul(new, ntk, factor, value=w2, out=o_ntk)
        if factor is not None and ntk is not None:
            ntk = ntk.mul_(factor) if o_ntk is ntk else ntk * factor
        if ntk is not None and self.parametrization == "standard":
            # d z / d W = x, so this layer adds in * K_in (the input's nngp: update it first).
            new_ntk = torch.add(nngp * fan_in, ntk, alpha=w2, out=o_ntk)
            if self.b_std is not None:
                new_ntk.add_(1.0)
            return affine(nngp, w2, b2, out=o_nngp), new_ntk
        new = affine(nngp, w2, b2, out=o_nngp)
        if ntk is None:
            return new, None
        if ntk.ndim == 0:
            # The zero NTK of the inputs: Theta = K_new (shared, never mutated, unless `out`).
            return new, (new if o_ntk is None else o_ntk.copy_(new))
        return new, torch.add(new, ntk, alpha=w2, out=o_ntk)


def affine(x: Tensor, w2: float, b2: float, *, out: Tensor | None = None) -> Tensor:
    """``w2 x + b2``, into ``out`` when given (which may be ``x``)."""
    out = torch.mul(x, w2, out=out)
    return out.add_(b2) if b2 else out


class DenseModule(AffineTwin):
    """Finite twin of :class:`Dense`: ``(N, in_features) -> (N, out_features)``.

    In the NTK parametrization the trainable ``weight`` ``(out_features, in_features)`` and
    ``bias`` are standard normal and the forward pass scales them by
    ``weight_scale = W_std / sqrt(in)`` and ``bias_scale = b_std``; in the standard one the
    scales are 1 and the draws carry the variances. ``forward`` computes
    ``x @ (weight_scale * weight).T + bias_scale * bias``.
    """

    def __init__(self, in_features: int, out_features: int, *, W_std: float,
                 b_std: float | None, parametrization: str,
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None):
        super().__init__((out_features, in_features), in_features, W_std=W_std, b_std=b_std,
                         parametrization=parametrization, generator=generator, dtype=dtype)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, *self.scaled_parameters())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"weight_scale={self.weight_scale:.4g}, bias_scale={self.bias_scale:.4g}")
