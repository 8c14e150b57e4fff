"""The single-input kernel and four-point vertex of a deep MLP at leading order in 1/width
(Roberts, Yaida & Hanin, *The Principles of Deep Learning Theory*, 2022, ch. 4-5)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import positive_int, real_number
from ._criticality import _positive
from ._gauss import as_activation, d_phi_sq, pair_means, phi_moment

__all__ = ["KernelRecursion", "kernel_recursion"]


@dataclass(frozen=True)
class KernelRecursion:
    """``K``, ``V``, ``chi_parallel``: float64 tensors of shape ``(depth,)``; entry ``l - 1``
    belongs to layer ``l``. ``K[l-1]`` is the infinite-width variance of a pre-activation
    ``z^(l)``; ``V[l-1]`` the four-point vertex, so that for hidden layers of width ``n`` the
    fourth cumulant is ``E[z^4] - 3 E[z^2]^2 = 3 V / n + O(1/n^2)``; ``chi_parallel[l-1]``
    the parallel susceptibility at ``K[l-1]``."""

    K: Tensor
    V: Tensor
    chi_parallel: Tensor


def kernel_recursion(activation, depth: int, *, C_W: float, C_b: float = 0.0,
                     K0: float = 1.0) -> KernelRecursion:
    """Iterate the kernel and the four-point vertex through ``depth`` layers.

    For one input, with equal hidden widths (the book's ch. 4 recursion for the four-point
    vertex in its single-input form, with ``n_l / n_{l-1} = 1``)::

        K^(l+1) = C_b + C_W <sigma^2>_{K^(l)}
        V^(l+1) = C_W^2 (<sigma^4>_{K^(l)} - <sigma^2>_{K^(l)}^2) + chi_parallel(K^(l))^2 V^(l)

    from ``K^(1) = K0`` and ``V^(1) = 0`` (first-layer pre-activations are Gaussian). The
    two-point means come from the layer's own ``expectations``, ``<sigma^4>`` from a
    quadrature of its ``phi``. For ReLU at criticality ``V^(l) / K^2 = 5 (l - 1)``.

    **Arguments:** ``activation``, a layer or a name (see :func:`criticality`); ``depth >= 1``
    layers; ``C_W > 0``, ``C_b >= 0``; ``K0 > 0``, the first layer's pre-activation variance
    ``C_b + C_W |x|^2 / n_0``.

    **Returns:** a :class:`KernelRecursion` with tensors of shape ``(depth,)``.

    Example:
        >>> r = kernel_recursion("relu", 4, C_W=2.0, K0=1.5)
        >>> r.K.tolist(), [round(v, 9) for v in (r.V / r.K**2).tolist()]
        ([1.5, 1.5, 1.5, 1.5], [0.0, 5.0, 10.0, 15.0])
    """
    act = as_activation(activation)
    depth = positive_int(depth, "depth")
    C_W = _positive(C_W, "C_W")
    C_b = real_number(C_b, "C_b", minimum=0.0)
    K0 = _positive(K0, "K0")
    K, V, chi = [K0], [0.0], []
    for _ in range(depth):
        k = K[-1]
        m2 = float(pair_means(act, k)[0])
        chi.append(C_W * d_phi_sq(act, k))
        if len(K) == depth:
            break
        K.append(C_b + C_W * m2)
        V.append(C_W**2 * (phi_moment(act, k, 4) - m2 * m2) + chi[-1] ** 2 * V[-1])
    return KernelRecursion(*(torch.tensor(t, dtype=torch.float64) for t in (K, V, chi)))
