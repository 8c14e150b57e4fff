"""Sketches of tensor products: TensorSRHT (Ahle et al. 2020, "Oblivious sketching of
high-degree polynomial kernels", SODA; the form used by Zandieh et al. 2021, §3).

For ``t`` in ``R^p`` and ``s`` in ``R^q``, ``Q(t ⊗ s)_i = (h_i . (sigma * t)) (h_i . (tau * s))
/ sqrt(m)``, with ``h_i`` rows of a ``P x P`` Hadamard matrix (``P`` the power of two at or
above ``max(p, q)``, entries ``±1``) and ``sigma``, ``tau`` independent Rademacher sign
vectors. Averaging over the signs, ``(h_i . sigma t)(h_i . sigma t') = t . t'`` for every row
``i``, so ``E[Q(t ⊗ s) . Q(t' ⊗ s')] = (t . t') (s . s')`` exactly, whichever rows are taken.
The rows are drawn without replacement in blocks of ``P`` (each block with fresh signs),
so rows within a block are orthogonal. Cost ``O(N P sqrt(P))`` per block in two small GEMMs
(``fwht``), nothing of size ``P x P`` is formed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["fwht", "draw_tensor_srht", "put_tensor_srht", "tensor_srht"]


def fwht(x: Tensor) -> Tensor:
    """Unnormalised Walsh-Hadamard transform along the last axis (Sylvester order).

    ``H_P = H_a ⊗ H_b`` with ``P = a b``, so ``x H_P`` is two small matrix products on ``x``
    reshaped to ``(..., a, b)``: ``H_a^T X H_b``, ``O(P (a + b))`` per row in GEMMs rather than
    ``log2 P`` passes of butterflies.

    **Arguments:** ``x``: ``(..., P)`` with ``P`` a power of two.

    **Returns:** ``x @ H_P`` with ``H_P`` the ``±1`` Sylvester-Hadamard matrix, same shape.

    Example:
        >>> fwht(torch.tensor([1.0, 0.0, 0.0, 0.0])).tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    n = x.shape[-1]
    if n < 1 or n & (n - 1):
        raise ValueError(f"fwht needs a power-of-two length; got {n}")
    k = n.bit_length() - 1
    a, b = 1 << (k // 2), 1 << (k - k // 2)
    y = x.reshape(-1, a, b)
    y = torch.matmul(_hadamard(a, x), y) @ _hadamard(b, x)
    return y.reshape(x.shape)


def _hadamard(n: int, like: Tensor) -> Tensor:
    """The ``n x n`` Sylvester-Hadamard matrix (``n`` a power of two) in ``like``'s dtype and
    device."""
    h = torch.ones(1, 1, dtype=like.dtype, device=like.device)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def draw_tensor_srht(p: int, q: int, m: int, generator: torch.Generator) -> dict[str, Tensor]:
    """The randomness of a TensorSRHT from ``R^p ⊗ R^q`` to ``R^m``: ``sigma`` ``(B, p)``,
    ``tau`` ``(B, q)`` (float64 ``±1``) and ``rows`` ``(m,)`` (int64 indices into the ``B``
    concatenated transforms of length ``P``), ``B = ceil(m / P)``."""
    size = 1 << (max(p, q, 1) - 1).bit_length()
    blocks = -(-m // size)
    sigma = torch.randint(0, 2, (blocks, p), generator=generator).double().mul_(2).sub_(1)
    tau = torch.randint(0, 2, (blocks, q), generator=generator).double().mul_(2).sub_(1)
    rows = torch.cat([torch.randperm(size, generator=generator) + b * size
                      for b in range(blocks)])[:m]
    return {"sigma": sigma, "tau": tau, "rows": rows}


def put_tensor_srht(draws: dict[str, Tensor], name: str, p: int, q: int, m: int,
                    generator: torch.Generator) -> None:
    """:func:`draw_tensor_srht` into ``draws`` under ``name + "sigma"``, ``"tau"``, ``"rows"``
    (what :meth:`~ntkit.features.RandomFeatureMap._tensor_srht` applies by ``name``)."""
    for key, value in draw_tensor_srht(p, q, m, generator).items():
        draws[name + key] = value


def tensor_srht(t: Tensor, s: Tensor, sigma: Tensor, tau: Tensor, rows: Tensor) -> Tensor:
    """``Q(t ⊗ s)`` row by row: ``(N, p)``, ``(N, q)`` -> ``(N, m)``, ``m = len(rows)``, with
    the draws of :func:`draw_tensor_srht`; ``Q(t ⊗ s) . Q(t' ⊗ s')`` is unbiased for
    ``(t . t') (s . s')``."""
    blocks = sigma.shape[0]
    size = 1 << (max(t.shape[1], s.shape[1], 1) - 1).bit_length()

    def transform(z: Tensor, signs: Tensor) -> Tensor:
        z = z[:, None, :] * signs  # (N, B, p)
        z = torch.nn.functional.pad(z, (0, size - z.shape[-1]))
        return fwht(z).reshape(z.shape[0], blocks * size)[:, rows]

    return transform(t, sigma) * transform(s, tau) * (1.0 / math.sqrt(rows.numel()))
