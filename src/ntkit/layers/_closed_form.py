"""Nonlinearities whose Gaussian expectations have closed forms (neural-tangents' constants).

Notation of every ``expectations``: ``q11, q22`` are the variances of ``u, v`` and ``q12`` their
covariance (broadcastable), returning ``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import real_number
from ._activation import Activation
from ._serialize import register_layer

__all__ = ["ABReLU", "ReLU", "LeakyReLU", "Abs", "Erf", "GELU", "Sin", "Cos", "Gaussian"]

_ABC = {"a": "real", "b": "real", "c": "real"}  # the spec fields of Erf, Sin and Cos


def _check_reals(layer, *names: str) -> None:
    """Validate the frozen dataclass fields ``names`` as finite reals (stored as ``float``)."""
    for name in names:
        object.__setattr__(layer, name, real_number(getattr(layer, name), name))


def _angle(q12: Tensor, q11: Tensor, q22: Tensor, *, s: Tensor | None = None,
           theta: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(S, theta)``: ``S = sqrt(q11 q22 - q12^2)``, ``theta = arccos(q12 / sqrt(q11 q22))``
    (broadcast), written into the buffers ``s`` and ``theta`` when given (distinct from the
    arguments), else new tensors.

    ``atan2`` keeps the angle accurate near ``c = 1``, where ``arccos`` turns one rounding
    error of ``c`` into ``sqrt(eps)``; at ``q11 q22 = q12^2`` exactly (the diagonal when x1 is
    x2) ``S`` and ``theta`` are exactly 0. An input with zero variance gets ``theta = pi/2``
    (independence), as in neural-tangents.
    """
    # Two rounded products, not addcmul: a fused multiply-add leaves the rounding error of
    # q11 q22 behind at q11 = q22 = q12, and its square root (~1e-8 q) would be the angle.
    s = torch.mul(q11, q22, out=s)
    s.sub_(torch.mul(q12, q12, out=theta)).clamp_(min=0.0).sqrt_()
    theta = torch.atan2(s, q12, out=theta)
    if bool((q11 == 0).any()) or bool((q22 == 0).any()):
        theta.masked_fill_((s == 0) & (q12 == 0), math.pi / 2)
    return s, theta


@register_layer(fields={"a": "real", "b": "real"}, required=("a", "b"))
@dataclass(frozen=True)
class ABReLU(Activation):
    """``phi(x) = a x`` for ``x < 0`` and ``b x`` for ``x >= 0`` (Cho & Saul 2009 arc-cosine).

    ``E[phi phi] = f S + T q12`` and ``E[phi' phi'] = T = (a^2 + b^2)/2 - f theta``, with
    ``f = (a - b)^2 / (2 pi)`` and ``S``, ``theta`` as in ``_angle``.
    """

    a: float
    b: float

    def __post_init__(self):
        _check_reals(self, "a", "b")

    def phi(self, x: Tensor) -> Tensor:
        return torch.where(x < 0, self.a * x, self.b * x)

    def expectations(self, q12, q11, q22, *, ntk):
        return self.expectations_into(q12, q11, q22, ntk=ntk)

    def expectations_into(self, q12, q11, q22, *, ntk, out=None, tdot=None, scratch=None):
        f = (self.a - self.b) ** 2 / (2 * math.pi)
        # The angle lands in `tdot` and becomes E[phi' phi'] (needed for the NNGP as well).
        s, theta = _angle(q12, q11, q22, s=scratch, theta=tdot)
        # T = (a^2 + b^2)/2 - f theta, in one pass (into theta).
        torch.sub(theta.new_full((), (self.a**2 + self.b**2) / 2), theta, alpha=f, out=theta)
        nngp = torch.addcmul(s.mul_(f), theta, q12, out=out)
        return nngp, (theta if ntk else None)


@register_layer(fields={"a": "real", "b": "real"})
@dataclass(frozen=True)
class ReLU(ABReLU):
    """``max(x, 0)``: ``E[phi phi] = (S + (pi - theta) q12) / (2 pi)``,
    ``E[phi' phi'] = (pi - theta) / (2 pi)``.

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> x = torch.eye(2, dtype=torch.float64)
        >>> L.serial(L.Dense(3), L.ReLU()).kernel(x).nngp.diagonal().tolist()
        [0.25, 0.25]
    """

    a: float = 0.0
    b: float = 1.0

    def phi(self, x):
        return torch.relu(x)

    def __repr__(self):
        return "ReLU()"


@register_layer(fields={"negative_slope": "real"})
@dataclass(frozen=True, init=False)
class LeakyReLU(ABReLU):
    """``x`` for ``x >= 0`` and ``negative_slope * x`` below (``ABReLU(negative_slope, 1)``)."""

    def __init__(self, negative_slope: float = 0.01):
        super().__init__(a=negative_slope, b=1.0)

    @property
    def negative_slope(self) -> float:
        return self.a

    def phi(self, x):
        return F.leaky_relu(x, self.a)

    def __repr__(self):
        return f"LeakyReLU(negative_slope={self.a})"


@register_layer
@dataclass(frozen=True, init=False)
class Abs(ABReLU):
    """``|x|`` (``ABReLU(-1, 1)``)."""

    def __init__(self):
        super().__init__(a=-1.0, b=1.0)

    def phi(self, x):
        return torch.abs(x)

    def __repr__(self):
        return "Abs()"


@register_layer(fields=_ABC)
@dataclass(frozen=True)
class Erf(Activation):
    """``phi(x) = a erf(b x) + c`` (Williams 1997), defaults ``a=1, b=1, c=0``.

    With ``P = (1 + 2 b^2 q11)(1 + 2 b^2 q22)`` and ``R = sqrt(P - 4 b^4 q12^2)``:
    ``E[phi phi] = a^2 (2/pi) atan2(2 b^2 q12, R) + c^2``,
    ``E[phi' phi'] = a^2 b^2 (4/pi) / R``.
    """

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self):
        _check_reals(self, "a", "b", "c")

    def phi(self, x):
        return self.a * torch.erf(self.b * x) + self.c

    def expectations(self, q12, q11, q22, *, ntk):
        return self.expectations_into(q12, q11, q22, ntk=ntk)

    def expectations_into(self, q12, q11, q22, *, ntk, out=None, tdot=None, scratch=None):
        # Differentiable by autograd when no buffers are given (nk.dkm relies on it).
        b2 = self.b**2
        r = torch.mul(1 + 2 * b2 * q11, 1 + 2 * b2 * q22, out=scratch)
        r = r.addcmul_(q12, q12, value=-4 * b2 * b2).clamp_(min=0.0).sqrt_()
        nngp = torch.atan2(torch.mul(q12, 2 * b2, out=out), r, out=out)
        nngp.mul_(self.a**2 * 2 / math.pi)
        if self.c:
            nngp.add_(self.c**2)
        if not ntk:
            return nngp, None
        return nngp, torch.div(r.new_full((), self.a**2 * b2 * 4 / math.pi), r, out=tdot)


@register_layer
@dataclass(frozen=True)
class GELU(Activation):
    """Exact ``x Phi(x)`` (Hendrycks & Gimpel), closed form as in neural-tangents' ``Gelu``.

    With ``p = q11 q22``, ``p1 = (1 + q11)(1 + q22)``, ``D = sqrt(p1 - q12^2)`` and
    ``g = atan2(q12, D)``: ``E[phi phi] = q12/4 + ((q12^2 + p D^2)/(p1 D) + q12 g) / (2 pi)``,
    ``E[phi' phi'] = 1/4 + g/(2 pi) + q12 (1/D^2 + (1 - p)/p1 + 1) / (2 pi D)``.
    """

    def phi(self, x):
        return F.gelu(x)

    def expectations(self, q12, q11, q22, *, ntk):
        p = q11 * q22
        p1 = (1 + q11) * (1 + q22)
        d2 = torch.addcmul(p1, q12, q12, value=-1.0).clamp_(min=0.0)
        d = d2.sqrt()
        g = torch.atan2(q12, d)
        nngp = (q12 * q12 + p * d2) / (p1 * d)
        nngp = nngp.addcmul_(q12, g).div_(2 * math.pi).add_(q12, alpha=0.25)
        tdot = None
        if ntk:
            tdot = (d2.reciprocal() + (1 - p) / p1 + 1).mul_(q12).div_(d * (2 * math.pi))
            tdot = tdot.add_(g, alpha=1 / (2 * math.pi)).add_(0.25)
        return nngp, tdot


@register_layer(fields=_ABC)
@dataclass(frozen=True)
class Sin(Activation):
    """``phi(x) = a sin(b x + c)``, defaults ``a=1, b=1, c=0``.

    With ``s1 = exp(b^2 (q12 - (q11 + q22)/2))`` and
    ``s2 = exp(-b^2 (q12 + (q11 + q22)/2)) cos(2c)``: ``E[phi phi] = a^2 (s1 - s2) / 2``,
    ``E[phi' phi'] = a^2 b^2 (s1 + s2) / 2``.
    """

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self):
        _check_reals(self, "a", "b", "c")

    def _phase(self) -> float:
        return self.c

    def phi(self, x):
        return self.a * torch.sin(self.b * x + self.c)

    def expectations(self, q12, q11, q22, *, ntk):
        b2 = self.b**2
        half = (q11 + q22) / 2
        s1 = torch.exp((q12 - half).mul_(b2))
        s2 = torch.exp((q12 + half).mul_(-b2)).mul_(math.cos(2 * self._phase()))
        nngp = (s1 - s2).mul_(self.a**2 / 2)
        tdot = (s1 + s2).mul_(self.a**2 * b2 / 2) if ntk else None
        return nngp, tdot


@register_layer(fields=_ABC)
@dataclass(frozen=True)
class Cos(Sin):
    """``phi(x) = a cos(b x + c)`` = ``Sin`` with phase ``c + pi/2``."""

    def _phase(self) -> float:
        return self.c + math.pi / 2

    def phi(self, x):
        return self.a * torch.cos(self.b * x + self.c)


@register_layer(fields={"a": "real", "b": "real"})
@dataclass(frozen=True)
class Gaussian(Activation):
    """``phi(x) = a exp(b x^2)``, defaults ``a=1, b=-1``.

    With ``D = sqrt((1 - 2b q11)(1 - 2b q22) - 4 b^2 q12^2)``: ``E[phi phi] = a^2 / D``,
    ``E[phi' phi'] = 4 a^2 b^2 q12 / D^3``. For ``b > 0`` the expectation is finite only while
    every variance is below ``1 / (4b)``; larger ones raise ``ValueError``.
    """

    a: float = 1.0
    b: float = -1.0

    def __post_init__(self):
        _check_reals(self, "a", "b")

    def phi(self, x):
        return self.a * torch.exp(self.b * x * x)

    def expectations(self, q12, q11, q22, *, ntk):
        if self.b > 0 and bool(torch.maximum(q11.max(), q22.max()) >= 1 / (4 * self.b)):
            raise ValueError(
                f"{self!r}: E[exp(2 b u^2)] is infinite for pre-activation variance >= "
                f"1/(4b) = {1 / (4 * self.b):.4g}; lower W_std/b_std or use b <= 0"
            )
        p = (1 - 2 * self.b * q11) * (1 - 2 * self.b * q22)
        d = torch.addcmul(p, q12, q12, value=-4 * self.b**2).clamp_(min=0.0).sqrt_()
        nngp = d.reciprocal().mul_(self.a**2)
        tdot = (q12 * (4 * self.a**2 * self.b**2)).div_(d.pow(3)) if ntk else None
        return nngp, tdot
