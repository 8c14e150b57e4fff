"""Any elementwise nonlinearity, by Gauss-Hermite quadrature on the 2-D Gaussian."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from .._checks import positive_int
from ._activation import Activation
from ._functions import Chain
from ._serialize import register_layer

__all__ = ["Elementwise", "compose"]

# Smallest variance used to form u / sqrt(q11); a zero-variance input has u = 0 exactly.
_TINY = 1e-30


@register_layer(fields={"fn": "function", "d_fn": "function or null", "deg": "deg"},
                required=("fn",))
@dataclass(frozen=True)
class Elementwise(Activation):
    """Elementwise ``fn`` whose Gaussian expectations are computed numerically.

    ``E[g(u) g(v)]`` for ``(u, v) ~ N(0, [[q11, q12], [q12, q22]])`` is a tensor-product
    Gauss-Hermite rule with ``deg`` nodes per axis on ``u = sqrt(q11) z1``,
    ``v = q12 / sqrt(q11) z1 + sqrt(q22 - q12^2 / q11) z2`` (``deg^2`` evaluations per kernel
    entry). ``g = fn`` gives the NNGP and ``g = d_fn`` (by default ``fn``'s autograd
    derivative) the NTK factor.

    **Accuracy** (measured in ``tests/test_elementwise.py``, float64, default ``deg=26``):
    the rule is exact for polynomials of degree ``< 2 deg`` and converges quickly for smooth
    ``fn`` at small variance, slowly for saturating ``fn`` at large variance and for kinks.
    Largest error relative to ``sqrt(E[g(u)^2] E[g(v)^2])``, over correlations in
    ``[-0.9, 0.99]``, for the NNGP (``g = fn``) / the NTK factor (``g = d_fn``):

    ========  ====================  ====================
    ``fn``    variances <= 1        variances <= 4
    ========  ====================  ====================
    gelu      1e-8 / 1e-7           3e-4 / 5e-3
    erf       4e-6 / 5e-5           1e-2 / 1e-1
    tanh      4e-5 / 4e-4           1e-2 / 1e-1
    relu      1.5e-2 / 6e-2         1.5e-2 / 6e-2
    ========  ====================  ====================

    Raise ``deg`` for large variances, and use the closed-form layer when one exists. Keep
    ``deg`` even: an odd rule has a node at 0, where the derivative of a kink at 0 (relu,
    abs) jumps, and the NTK factor of ``relu`` is then off by ~20% (at ``deg=25``).

    **Arguments:**

    - ``fn``: a torch function applied elementwise (``Tensor -> Tensor`` of the same shape),
      e.g. ``torch.tanh``, ``torch.nn.functional.silu``.
    - ``d_fn``: its derivative, if known; otherwise autograd differentiates ``fn``.
    - ``deg``: quadrature nodes per axis (even; see the accuracy table).

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> x = torch.eye(2, dtype=torch.float64)
        >>> net = L.serial(L.Dense(3), L.Elementwise(torch.erf), L.Dense(1))
        >>> ref = L.serial(L.Dense(3), L.Erf(), L.Dense(1))
        >>> bool(torch.allclose(net.kernel(x).ntk, ref.kernel(x).ntk, rtol=0, atol=1e-7))
        True
    """

    fn: Callable[[Tensor], Tensor]
    d_fn: Callable[[Tensor], Tensor] | None = None
    deg: int = 26

    def __post_init__(self):
        object.__setattr__(self, "deg", positive_int(self.deg, "deg"))
        for name in ("fn", "d_fn"):
            g = getattr(self, name)
            if g is None and name == "d_fn":
                continue
            if not callable(g):
                raise TypeError(f"{name} must be a callable Tensor -> Tensor; got {g!r}")
            probe = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
            try:
                out = g(probe)
            except Exception as err:  # noqa: BLE001 - re-raised with what we expected
                raise TypeError(
                    f"{name} must accept a torch.Tensor and work elementwise; calling it on a "
                    f"float64 tensor failed: {err}"
                ) from err
            if not isinstance(out, Tensor) or out.shape != probe.shape:
                raise TypeError(
                    f"{name} must return a tensor of its input's shape (elementwise); got "
                    f"{type(out).__name__} {getattr(out, 'shape', '')}"
                )

    def phi(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def dphi(self, x: Tensor) -> Tensor:
        """The derivative: ``d_fn`` if given, else autograd of ``fn``."""
        if self.d_fn is not None:
            return self.d_fn(x)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.fn(x).sum(), x)
        return grad

    def expectations(self, q12, q11, q22, *, ntk):
        nodes, weights = _gauss_hermite(self.deg, q12.dtype, q12.device)
        q12, q11, q22 = torch.broadcast_tensors(q12, q11, q22)
        sd1 = q11.clamp(min=_TINY).sqrt()
        a = q12 / sd1  # v = a z1 + b z2
        # Two rounded products (no fused multiply-add): exactly 0 at q11 = q22 = q12.
        b = ((q11 * q22).sub_(q12 * q12).clamp_(min=0.0) / q11.clamp(min=_TINY)).sqrt_()
        u = sd1[..., None] * nodes
        nngp = _pair_mean(self.phi, u, a, b, nodes, weights)
        tdot = _pair_mean(self.dphi, u, a, b, nodes, weights) if ntk else None
        return nngp, tdot


def _pair_mean(g, u: Tensor, a: Tensor, b: Tensor, nodes: Tensor, weights: Tensor) -> Tensor:
    """``sum_k sum_l w_k w_l g(u_k) g(a z_k + b z_l)``, looping over ``k`` to bound memory."""
    gu = g(u)
    out = torch.zeros_like(a)
    bz = b[..., None] * nodes
    for k in range(nodes.shape[0]):
        gv = g(bz + (a * nodes[k])[..., None]) @ weights
        out.addcmul_(gu[..., k], gv, value=float(weights[k]))
    return out


@lru_cache(maxsize=32)
def _gauss_hermite(deg: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    # Probabilists' Hermite nodes (weight exp(-x^2/2)); weights normalised to sum to 1.
    x, w = np.polynomial.hermite_e.hermegauss(deg)
    w = w / w.sum()
    return (torch.tensor(x, dtype=dtype, device=device),
            torch.tensor(w, dtype=dtype, device=device))


def compose(*activations: Activation, deg: int = 26) -> Elementwise:
    """One activation ``phi_n o ... o phi_1`` from nonlinearities applied in a row.

    The input of the second nonlinearity is not Gaussian, so its closed form does not apply;
    the composition is elementwise, and its expectations over the Gaussian pre-activation of
    the first are exact up to the quadrature error of :class:`Elementwise`. ``serial`` calls
    this for consecutive nonlinearities.
    """
    return Elementwise(Chain(tuple(activations)), deg=deg)
