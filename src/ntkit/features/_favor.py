"""Positive random features for the exponential (softmax) kernel ``exp(x . y)``: FAVOR+.

Choromanski et al., "Rethinking Attention with Performers" (ICLR 2021), Lemma 1: for
``w ~ N(0, I_d)``, ``E[exp(w.x - |x|^2/2) exp(w.y - |y|^2/2)] = exp(x . y)``, so
``phi(x) = exp(W x - |x|^2/2) / sqrt(m)`` (rows of ``W`` Gaussian) has
``E[phi(x) . phi(y)] = exp(x . y)`` with every feature positive; softmax attention's
``exp(q . k / sqrt(d))`` is this kernel at ``q / d^(1/4)``, ``k / d^(1/4)``. Orthogonal rows
(Section 2.4 there; Yu et al. 2016) lower the variance and keep the estimator unbiased.
The same features are the ``exp`` case of the universal random features of
:mod:`ntkit.features._snnk`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._base import RandomFeatureMap

__all__ = ["FAVORFeatures", "gaussian_projection", "positive_random_features"]


def gaussian_projection(
    n_rows: int,
    dim: int,
    *,
    orthogonal: bool = False,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """An ``(n_rows, dim)`` matrix whose rows are each distributed as ``N(0, I_dim)``.

    With ``orthogonal=True`` the rows come in blocks of ``dim`` mutually orthogonal rows (the
    Q factor of a Gaussian matrix, sign-corrected so that it is Haar distributed), each row
    rescaled to the norm of an independent ``N(0, I_dim)`` vector (a chi variable with ``dim``
    degrees of freedom): every row is still marginally ``N(0, I)``, so estimators that are
    unbiased for i.i.d. rows stay unbiased (Yu et al. 2016, "Orthogonal Random Features";
    Choromanski et al. 2021, Theorem 2). Drawn in float64 and cast to ``dtype``.

    **Arguments:**

    - ``n_rows``, ``dim``: the shape, both ``>= 1``.
    - ``orthogonal``: orthogonal blocks as above, or i.i.d. Gaussian rows.
    - ``generator``: the torch generator (CPU) that makes the draw repeatable.

    **Returns:** ``(n_rows, dim)`` tensor of ``dtype`` on ``device``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> w = gaussian_projection(4, 4, orthogonal=True, generator=g, dtype=torch.float64)
        >>> gram = w @ w.T
        >>> bool((gram - torch.diag(gram.diagonal())).abs().max() < 1e-12)
        True
    """
    if not orthogonal:
        w = torch.randn(n_rows, dim, generator=generator, dtype=torch.float64)
        return w.to(dtype=dtype, device=device)
    blocks = []
    for start in range(0, n_rows, dim):
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        # Multiplying by sign(diag(R)) makes Q Haar distributed (Mezzadri 2007).
        q = q * torch.sign(torch.diagonal(r)).masked_fill(torch.diagonal(r) == 0, 1.0)
        blocks.append(q.T[: min(dim, n_rows - start)])
    w = torch.cat(blocks)
    norms = torch.linalg.vector_norm(
        torch.randn(n_rows, dim, generator=generator, dtype=torch.float64), dim=1)
    return (w * norms[:, None]).to(dtype=dtype, device=device)


def positive_random_features(x: Tensor, projection: Tensor, *, stabilize: bool = False) -> Tensor:
    """FAVOR+ features ``exp(x W^T - |x|^2 / 2) / sqrt(m)`` of ``x`` for the rows of ``W``.

    **Arguments:**

    - ``x``: ``(..., d)``.
    - ``projection``: ``W``, ``(m, d)``, rows ``N(0, I_d)`` (:func:`gaussian_projection`).
    - ``stabilize``: subtract, before the exponential, the maximum of the exponent over the
      last two axes (one constant per leading index). The features are then exact up to one
      positive factor per leading index, which cancels in normalised attention but not in a
      kernel estimate; it keeps long sequences from overflowing.

    **Returns:** ``(..., m)``, positive.

    Example:
        >>> x = torch.zeros(2, 3)
        >>> positive_random_features(x, torch.randn(4, 3))
        tensor([[0.5000, 0.5000, 0.5000, 0.5000],
                [0.5000, 0.5000, 0.5000, 0.5000]])
    """
    m = projection.shape[0]
    exponent = x @ projection.T - 0.5 * (x * x).sum(-1, keepdim=True)
    if stabilize:
        exponent = exponent - exponent.amax(dim=(-2, -1), keepdim=True).detach()
    return torch.exp(exponent) / math.sqrt(m)


class FAVORFeatures(RandomFeatureMap):
    """Positive random features whose inner products are unbiased for ``exp(x . y)``.

    ``phi(x) = exp(W x - |x|^2 / 2) / sqrt(m)`` (FAVOR+, Choromanski et al. 2021, Lemma 1)
    with ``W`` of shape ``(m, d)`` drawn at ``fit``. Every feature is positive, so an estimate
    of a sum of kernel values is positive too (what normalised attention needs). Variance of
    ``phi(x) . phi(y)`` for i.i.d. rows: ``exp(2 x . y) (exp(|x + y|^2) - 1) / m`` (their
    Lemma 2): it grows with the norms, so scale inputs to norms of order 1 (attention uses
    ``q / d^(1/4)``).

    **Arguments:**

    - ``n_components``: ``m``, the number of features, ``>= 1``.
    - ``orthogonal``: draw the rows in orthogonal blocks (:func:`gaussian_projection`).
    - ``random_state``: ``None``, an ``int`` seed, or a ``torch.Generator``.

    **Returns** (``forward`` / ``transform``): ``(N, d)`` -> ``(N, m)``, positive.

    Example:
        >>> x = torch.tensor([[0.3, -0.2], [0.1, 0.4]], dtype=torch.float64)
        >>> phi = FAVORFeatures(20000, random_state=0).fit(x)
        >>> k_hat = phi(x) @ phi(x).T
        >>> bool(((k_hat - torch.exp(x @ x.T)).abs() < 0.03).all())
        True
    """

    _parameter_constraints: dict = {
        **RandomFeatureMap._parameter_constraints,
        "orthogonal": ["boolean"],
    }

    def __init__(self, n_components: int = 256, *, orthogonal: bool = False,
                 random_state: int | torch.Generator | None = None):
        super().__init__()
        self.n_components = n_components
        self.orthogonal = orthogonal
        self.random_state = random_state

    def _draw(self, d: int, generator: torch.Generator) -> dict[str, Tensor]:
        return {"projection": gaussian_projection(
            self.n_components, d, orthogonal=self.orthogonal, generator=generator,
            dtype=torch.float64)}

    def _features(self, x: Tensor) -> Tensor:
        return positive_random_features(x, self._buffer("projection_", x))
