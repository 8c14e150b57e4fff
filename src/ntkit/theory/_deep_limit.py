"""The depth -> infinity limit of the NTK/NNGP classifier (Radhakrishnan, Belkin & Uhler,
"Wide and deep neural networks achieve optimality for classification", PNAS 2023).

Setting of the paper: inputs on the unit sphere, no biases, and the weight variance
``C_W = 1 / E[phi(z)^2]`` (``z ~ N(0, 1)``) so that every layer keeps unit variance. A layer
then maps the correlation ``xi`` of two inputs through the normalised dual activation
``psi(xi) = C_W E[phi(u) phi(v)]`` (``psi(1) = 1``), and the NTK through
``Theta <- psi(xi) + psi'(xi) Theta`` with ``psi'(xi) = C_W E[phi'(u) phi'(v)]``. The deep
limit depends on ``psi'(1)`` and on the attracting fixed point ``xi*`` of ``psi``:

- ``psi'(1) = 1`` (ReLU family): correlations creep to 1 and the normalised NTK tends to
  ``a I + b 1 1^T`` with ``b > 0``: the classifier is the **majority vote**.
- ``psi'(1) > 1``: distinct inputs decorrelate towards ``xi*``, and
  ``(psi^L(xi) - xi*) / psi'(xi*)^L`` tends to the Koenigs function ``h(xi)`` of ``psi``
  (:func:`deep_limit_kernel`). Near ``xi = 1`` a distance grows by ``psi'(1)`` per layer and
  near ``xi*`` the kernel shrinks by ``psi'(xi*)``, so ``h ~ |x - z|^(-alpha)`` with
  ``alpha = 2 log(1 / psi'(xi*)) / log psi'(1)``: a **singular kernel** classifier
  ``sign sum_i y_i h(x . x_i)``, consistent (Bayes optimal as ``n -> infinity``) when
  ``alpha`` equals the intrinsic dimension of the data (Devroye et al.'s Hilbert kernel).
  The NNGP's Gram matrix tends to ``I`` and its classifier to that one; the NTK's is
  ``L psi'(xi*)^L h + psi'(xi*)^L O(h')``, the same limit, but the ``h' ~ |x - z|^-(alpha
  + 2)`` term still dominates pairs closer than ``|x - z|^2 ~ 1/L``, so the NTK gets there
  far more slowly. ``psi'(xi*) = 0`` (``a_1 = 0`` in the Hermite expansion when
  ``xi* = 0``) makes ``alpha`` infinite: **1-nearest neighbour**.
- ``psi'(1) < 1`` (a large constant Hermite part), and the linear ``psi(xi) = xi``: the
  kernel tends to a constant or never changes: ``"degenerate"``, none of the three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import positive_int
from ..layers import Activation, Elementwise
from ._gauss import as_activation, pair_means

__all__ = ["DeepLimit", "HermiteSeries", "deep_limit_class", "deep_limit_kernel",
           "optimal_activation"]

@dataclass(frozen=True)
class DeepLimit:
    """The infinite-depth classifier of one activation.

    - ``classifier``: ``"majority_vote"``, ``"nearest_neighbor"``, ``"singular_kernel"`` or
      ``"degenerate"``.
    - ``alpha``: exponent of the singular kernel ``|x - z|^(-alpha)`` (``math.inf`` for
      1-NN, ``None`` otherwise).
    - ``C_W``: ``1 / E[phi^2]``, the weight variance of the unit-variance network.
    - ``psi_prime_1``: ``psi'(1)``; ``xi_star``: the attracting correlation (``None`` unless
      ``psi'(1) > 1``); ``psi_prime_star``: ``psi'(xi_star)``.
    """

    classifier: str
    alpha: float | None
    C_W: float
    psi_prime_1: float
    xi_star: float | None
    psi_prime_star: float | None


def _dual(act: Activation, xi: float, c_w: float) -> tuple[float, float]:
    nngp, tdot = pair_means(act, 1.0, xi)
    return c_w * float(nngp), c_w * float(tdot)


def deep_limit_class(activation, **kwargs) -> DeepLimit:
    """Which classifier the infinitely wide NTK (or NNGP) predictor of ``activation``
    becomes as depth grows.

    **Arguments:** ``activation``, an ntkit activation layer or a name (as in
    :func:`ntkit.theory.criticality`, ``kwargs`` to its factory).

    **Returns:** a :class:`DeepLimit` (see the module docstring for the taxonomy).

    Example:
        >>> deep_limit_class("relu").classifier
        'majority_vote'
        >>> d = deep_limit_class(optimal_activation(2))
        >>> d.classifier, round(d.alpha, 6)
        ('singular_kernel', 2.0)
    """
    act = as_activation(activation, **kwargs)
    m2 = float(pair_means(act, 1.0)[0])
    if not m2 > 0 or not math.isfinite(m2):
        raise ValueError(f"activation {act!r}: E[phi(z)^2] = {m2} at unit variance; need a "
                         f"finite positive value")
    c_w = 1.0 / m2
    psi0, dpsi0 = _dual(act, 0.0, c_w)
    dpsi1 = _dual(act, 1.0, c_w)[1]
    tol = 1e-9
    if abs(dpsi1 - 1) <= tol:
        linear = abs(psi0) <= tol and abs(dpsi0 - 1) <= tol
        return DeepLimit("degenerate" if linear else "majority_vote", None, c_w, dpsi1,
                         None, None)
    if dpsi1 < 1:
        return DeepLimit("degenerate", None, c_w, dpsi1, None, None)
    # psi has non-negative Hermite weights, so it increases on [0, 1]: iterating from 0 climbs
    # monotonically to the smallest fixed point, the attracting one when psi'(1) > 1.
    xi = 0.0
    for _ in range(100_000):
        nxt = _dual(act, xi, c_w)[0]
        if abs(nxt - xi) <= 1e-15:
            break
        xi = nxt
    dpsi_star = _dual(act, xi, c_w)[1]
    if dpsi_star <= 1e-12:
        return DeepLimit("nearest_neighbor", math.inf, c_w, dpsi1, xi, dpsi_star)
    alpha = 2 * math.log(1 / dpsi_star) / math.log(dpsi1)
    return DeepLimit("singular_kernel", alpha, c_w, dpsi1, xi, dpsi_star)


def deep_limit_kernel(activation, cosine, *, tol: float = 1e-7,
                      max_layers: int = 10_000) -> torch.Tensor:
    """The singular kernel ``h`` of the infinitely deep classifier (``psi'(1) > 1``).

    ``h(xi) = lim_L (psi^L(xi) - xi*) / psi'(xi*)^L``, the Koenigs function of the dual
    ``psi``: each entry is iterated until it is within ``tol`` of ``xi*`` (where ``psi`` is
    linear to relative ``O(tol)``) and rescaled then, so no entry sinks below round-off.

    **Arguments:** ``activation``, a layer or a name; ``cosine``, a tensor of cosines
    ``x . z / (|x| |z|)`` in ``[-1, 1)``, any shape.

    **Returns:** float64 tensor of ``cosine``'s shape (``inf`` for an entry still not within
    ``tol`` after ``max_layers``, i.e. ``cosine`` within round-off of 1).

    **Raises:** ``ValueError`` unless ``deep_limit_class(activation)`` is a singular kernel.

    Example:
        >>> import torch
        >>> h = deep_limit_kernel(optimal_activation(2), torch.tensor([0.0, 0.5, 0.9]))
        >>> [round(v, 4) for v in h.tolist()]  # ~ 1 / (1 - xi) = 2 / |x - z|^2 near xi = 1
        [0.0, 0.7136, 5.5912]
    """
    act = as_activation(activation)
    limit = deep_limit_class(act)
    if limit.classifier != "singular_kernel":
        raise ValueError(f"activation {act!r}: the deep limit is {limit.classifier!r}, "
                         f"not a singular kernel")
    xi = torch.as_tensor(cosine, dtype=torch.float64).clone()
    if not bool(torch.isfinite(xi).all()) or bool((xi.abs() > 1).any()):
        raise ValueError("cosine must hold finite values in [-1, 1]")
    star, log_p = limit.xi_star, math.log(limit.psi_prime_star)
    h = torch.full_like(xi, math.inf)
    todo = torch.ones_like(xi, dtype=torch.bool)
    for layer in range(max_layers + 1):
        dev = xi - star
        near = todo & (dev.abs() <= tol)
        h[near] = dev[near] * math.exp(-layer * log_p)
        todo &= ~near
        if not bool(todo.any()):
            break
        xi = limit.C_W * pair_means(act, 1.0, xi, ntk=False)[0]
    return h


@dataclass(frozen=True)
class HermiteSeries:
    """``phi(x) = sum_i coeffs[i] He_i(x) / sqrt(i!)``: a combination of the orthonormal
    (probabilists') Hermite polynomials, whose normalised dual is
    ``psi(xi) = sum_i coeffs[i]^2 xi^i`` when ``sum_i coeffs[i]^2 = 1``."""

    coeffs: tuple[float, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        prev, cur = torch.ones_like(x), x
        out = self.coeffs[0] * prev
        for i, c in enumerate(self.coeffs[1:], start=1):
            if c:
                out = out + (c / math.sqrt(math.factorial(i))) * cur
            prev, cur = cur, x * cur - i * prev  # He_{i+1} = x He_i - i He_{i-1}
        return out

    def derivative(self) -> HermiteSeries:
        """``phi'`` as a series: ``He_i' = i He_{i-1}``, so coefficient ``i - 1`` gets
        ``coeffs[i] sqrt(i)``."""
        return HermiteSeries(tuple(c * math.sqrt(i) for i, c in enumerate(self.coeffs)
                                   if i) or (0.0,))


# The paper's explicit activations (their normalised duals psi), by intrinsic dimension of the
# data's sphere: the NNGP exponent 2 log(1/a_1^2) / log psi'(1) equals that dimension.
_PAPER_DUALS = {
    1: {1: 0.5, 7: 0.5},
    2: {1: 0.5, 3: 0.5},
    4: {1: 0.25, 2: 0.5, 3: 0.25},
    8: {1: 1 / 16, 2: 7 / 8, 3: 1 / 16},
}


def optimal_activation(dim: int) -> Elementwise:
    """An activation whose infinitely deep classifier is the singular kernel with exponent
    ``dim``, the intrinsic dimension of the data (``dim = d - 1`` for the sphere in
    ``R^d``): Devroye et al.'s Hilbert kernel estimate, consistent (Bayes optimal as
    ``n -> infinity``).

    For ``dim`` in 1, 2, 4, 8 it is the paper's activation (dual ``xi/2 + xi^7/2``,
    ``xi/2 + xi^3/2``, ``xi/4 + xi^2/2 + xi^3/4``, ``xi/16 + 7 xi^2/8 + xi^3/16``, as in the
    authors' code); otherwise ``a_1 He_1 + a_3 He_3 / sqrt(6)`` with ``a_1`` solving
    ``alpha(a_1) = dim``.

    **Arguments:** ``dim >= 1``.

    **Returns:** an :class:`~ntkit.layers.Elementwise` over a :class:`HermiteSeries` with
    ``E[phi(z)^2] = 1``; its quadrature is exact (``deg`` nodes above the degree).

    Example:
        >>> import torch
        >>> phi = optimal_activation(2)
        >>> x = torch.tensor([1.0], dtype=torch.float64)
        >>> round(float(phi.phi(x)), 4)  # (x + (x^3 - 3 x) / 6 ** 0.5) / 2 ** 0.5
        0.1298
    """
    dim = positive_int(dim, "dim")
    weights = _PAPER_DUALS.get(dim) or {1: _a1_sq(dim), 3: 1 - _a1_sq(dim)}
    degree = max(weights)
    coeffs = tuple(math.sqrt(weights.get(i, 0.0)) for i in range(degree + 1))
    series = HermiteSeries(coeffs)
    return Elementwise(series, d_fn=series.derivative(), deg=degree + 1 + (degree + 1) % 2)


def _a1_sq(alpha: float) -> float:
    """``w`` in ``(0, 1)`` with ``2 log(1/w) / log(3 - 2 w) = alpha`` (dual ``w xi + (1-w)
    xi^3``: ``psi'(0) = w``, ``psi'(1) = 3 - 2 w``), by bisection; the left side falls from
    infinity to 2 as ``w`` goes from 0 to 1."""
    lo, hi = 1e-300, 1.0 - 1e-15
    for _ in range(200):
        mid = (lo + hi) / 2
        if 2 * math.log(1 / mid) / math.log(3 - 2 * mid) > alpha:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
