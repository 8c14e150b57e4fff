"""Critical initialization of deep MLPs (Roberts, Yaida & Hanin, *The Principles of Deep
Learning Theory*, 2022, ch. 5): the susceptibilities and the ``(C_b, C_W)`` that make them 1.

Notation of the book: a layer is ``z^(l+1) = b + W sigma(z^(l))`` with ``Var b = C_b`` and
``Var W = C_W / n``, which is ntkit's ``Dense(W_std=sqrt(C_W), b_std=sqrt(C_b))``. For the
single-input kernel ``K`` (book ch. 5)::

    chi_parallel(K) = C_W d<sigma^2>_K / dK = (C_W / K) <z sigma'(z) sigma(z)>_K
    chi_perp(K)     = C_W <sigma'(z)^2>_K

and criticality is ``chi_parallel = chi_perp = 1`` at a fixed point ``K*`` of
``K <- C_b + C_W <sigma^2>_K``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import real_number
from ._gauss import as_activation, d_phi_sq, pair_means

__all__ = ["Criticality", "criticality", "susceptibilities"]


@dataclass(frozen=True)
class Criticality:
    """The critical initialization of one activation.

    - ``C_b``, ``C_W``: bias and weight variances (``Dense(W_std=C_W ** 0.5,
      b_std=C_b ** 0.5)``).
    - ``chi_parallel``, ``chi_perp``: the susceptibilities at ``K_star`` (1 up to round-off).
    - ``K_star``: the critical fixed point of the kernel; ``None`` for a scale-invariant
      activation, critical at every ``K``.
    - ``universality``: ``"scale_invariant"`` (ReLU, leaky ReLU, ``|x|``), ``"K*=0"`` (tanh,
      erf, sin: ``sigma(0) = 0``, the kernel decays to 0 as a power law) or ``"K*>0"``
      (GELU, SiLU: a nonzero critical fixed point, book ch. 5).
    """

    C_b: float
    C_W: float
    chi_parallel: float
    chi_perp: float
    K_star: float | None
    universality: str


def susceptibilities(activation, K: float, *, C_W: float) -> tuple[float, float]:
    """``(chi_parallel, chi_perp)`` of ``activation`` at single-input kernel ``K > 0``.

    **Arguments:** ``activation``, a layer or a name (see :func:`criticality`); ``K`` the
    pre-activation variance; ``C_W > 0`` the weight variance.

    **Returns:** two floats.

    Example:
        >>> susceptibilities("relu", 1.7, C_W=2.0)
        (1.0, 1.0)
    """
    act = as_activation(activation)
    K = real_number(K, "K")
    if K <= 0:
        raise ValueError(f"K must be > 0; got {K}")
    C_W = _positive(C_W, "C_W")
    chi_perp = C_W * float(pair_means(act, K)[1])
    return round(C_W * d_phi_sq(act, K), 12), round(chi_perp, 12)


def criticality(activation, **kwargs) -> Criticality:
    """The critical ``(C_b, C_W)`` of an activation and its susceptibilities there.

    Three universality classes (book ch. 5): a scale-invariant activation (ReLU family) is
    critical at ``C_b = 0, C_W = 1 / <sigma'^2>`` for every kernel; one with ``sigma(0) = 0``
    whose kernel map is ``K + a_1 K^2 + ...`` near 0 with ``a_1 < 0`` (tanh: ``a_1 = -2``)
    at ``C_b = 0, C_W = 1 / sigma'(0)^2``; any other is critical at a ``K* > 0`` where
    ``d<sigma^2>/dK = <sigma'^2>``, found by root search on ``K`` in ``[0.01, 1000]``.

    **Arguments:** ``activation``, an ntkit activation layer (``L.ReLU()``,
    ``L.LeakyReLU(0.1)``, ``L.Elementwise(torch.tanh)``...) or a name: one of
    :data:`ntkit.layers.ACTIVATIONS` or of the torch functions ntkit stores by name
    (``"tanh"``, ``"silu"``); ``kwargs`` go to a named activation's factory
    (``negative_slope=0.1``).

    **Returns:** a :class:`Criticality` record.

    **Raises:** ``ValueError`` for an unknown name, or an activation without a critical
    initialization with ``C_b >= 0`` (e.g. ``L.Erf(c=0.5)``, ``sigmoid``).

    Example:
        >>> c = criticality("leaky_relu", negative_slope=0.5)
        >>> c.C_W, c.C_b, c.universality
        (1.6, 0.0, 'scale_invariant')
        >>> round(criticality("tanh").C_W, 6)
        1.0
    """
    act = as_activation(activation, **kwargs)
    ks = torch.tensor([0.25, 1.0, 4.0], dtype=torch.float64)
    nngp, tdot = pair_means(act, ks)
    ratio = nngp / ks
    # Homogeneous of degree 1: <sigma^2>_K = K <sigma'^2>, the same at every K (Euler).
    if _flat(ratio) and _flat(tdot) and math.isclose(float(ratio[0]), float(tdot[0]),
                                                      rel_tol=1e-9):
        C_W = 1.0 / float(tdot[1])
        chi = susceptibilities(act, 1.0, C_W=C_W)
        return Criticality(0.0, C_W, chi[0], chi[1], None, "scale_invariant")
    zero = act.phi(torch.zeros(1, dtype=torch.float64))
    if float(zero.abs()) == 0.0:
        s1_sq = float(pair_means(act, 0.0)[1])
        if s1_sq > 0 and _a1(act, 1.0 / s1_sq) < 0:
            # d<sigma^2>/dK -> sigma'(0)^2 as K -> 0 when sigma(0) = 0: both chis are 1.
            return Criticality(0.0, 1.0 / s1_sq, 1.0, 1.0, 0.0, "K*=0")
    return _nonzero_fixed_point(act)


def _a1(act, C_W: float) -> float:
    """``a_1`` of ``C_W <sigma^2>_K = K + a_1 K^2 + O(K^3)`` (book ch. 5, the ``K* = 0``
    class), Richardson extrapolated from ``K = 1e-3, 2e-3``."""
    ks = torch.tensor([1e-3, 2e-3], dtype=torch.float64)
    g = (C_W * pair_means(act, ks)[0] - ks) / ks**2
    return float(2 * g[0] - g[1])


def _nonzero_fixed_point(act) -> Criticality:
    def gap(k: float) -> float:
        return d_phi_sq(act, k) - float(pair_means(act, k)[1])

    grid = [10 ** (-2 + 5 * i / 80) for i in range(81)]
    values = [gap(k) for k in grid]
    for lo, hi, g_lo, g_hi in zip(grid, grid[1:], values, values[1:], strict=False):
        if g_lo == 0 or g_lo * g_hi < 0:
            k_star = _bisect(gap, lo, hi, g_lo)
            nngp, tdot = pair_means(act, k_star)
            C_W = 1.0 / float(tdot)
            C_b = k_star - C_W * float(nngp)
            if C_b >= -1e-12 * k_star:
                chi = susceptibilities(act, k_star, C_W=C_W)
                return Criticality(max(C_b, 0.0), C_W, chi[0], chi[1], k_star, "K*>0")
    raise ValueError(f"activation {act!r} has no critical initialization with C_b >= 0: "
                     f"chi_parallel = chi_perp = 1 has no solution for K in [0.01, 1000]")


def _bisect(f, lo: float, hi: float, f_lo: float) -> float:
    for _ in range(200):
        mid = (lo + hi) / 2
        f_mid = f(mid)
        if (f_mid < 0) == (f_lo < 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return (lo + hi) / 2


def _flat(t: torch.Tensor) -> bool:
    return bool(((t - t[1]).abs() <= 1e-9 * t[1].abs()).all())


def _positive(value, name: str) -> float:
    value = real_number(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    return value
