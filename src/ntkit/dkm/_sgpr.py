"""The DKM's output layer: a Gaussian-likelihood GP on the top Gram through inducing points.

With Gaussian noise the optimal variational distribution of the inducing outputs is known in
closed form, so the output layer's evidence lower bound collapses to Titsias (2009)'s
``log N(y; 0, Q + s I) - tr(K_tt - Q_tt) / (2 s)`` with ``Q = K_ti K_ii^{-1} K_it`` and
``s = noise``. When the inducing points are the training points it is the exact log marginal
likelihood and the predictive mean is the exact GP mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..solve import cholesky

__all__ = ["OutputLayer", "factor", "output_layer"]

_tri = torch.linalg.solve_triangular


def factor(k: Tensor, name: str) -> Tensor:
    """Lower Cholesky factor of ``k``, differentiable; jitter and errors as
    :func:`ntkit.solve.cholesky` (called on a detached copy only when ``k`` fails to factor)."""
    chol, info = torch.linalg.cholesky_ex(k)
    if int(info) == 0:
        return chol
    jitter = cholesky(k.detach(), name=name)[1]
    return torch.linalg.cholesky(k + jitter * torch.eye(k.shape[0], dtype=k.dtype))


@dataclass(frozen=True)
class OutputLayer:
    """The fitted output layer: ``chol`` the lower factor of ``K_ii`` ``(M, M)``; ``chol_b`` of
    ``B = I + A A^T`` with ``A = chol^{-1} K_it / sqrt(noise)``; ``c = chol_b^{-1} A y /
    sqrt(noise)`` ``(M, k)``; ``log_likelihood`` the collapsed bound per output column."""

    chol: Tensor
    chol_b: Tensor
    c: Tensor
    log_likelihood: Tensor

    def predict(self, k_si: Tensor, k_ss: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``(m, k)`` and latent variance ``(m,)`` at points with top-layer kernel blocks
        ``K_si (m, M)`` and ``diag K_ss (m,)``."""
        tmp = _tri(self.chol, k_si.T, upper=False)
        tmp_b = _tri(self.chol_b, tmp, upper=False)
        var = k_ss - tmp.square().sum(0) + tmp_b.square().sum(0)
        return tmp_b.T @ self.c, var.clamp(min=0.0)


def output_layer(k_ii: Tensor, k_ti: Tensor, k_tt: Tensor, y: Tensor, noise: float) -> OutputLayer:
    """Collapsed bound (Titsias 2009) of ``y (N, k)`` under a GP with kernel blocks
    ``K_ii (M, M)``, ``K_ti (N, M)``, ``diag K_tt (N,)`` and noise variance ``noise``.

    **Returns:** an :class:`OutputLayer` whose ``log_likelihood`` (a 0-d tensor, differentiable
    in the blocks) is the bound averaged over the ``k`` output columns.
    """
    n, k = y.shape
    chol = factor(k_ii, "the top layer's inducing kernel")
    sd = math.sqrt(noise)
    a = _tri(chol, k_ti.T, upper=False) / sd
    b = a @ a.T
    b.diagonal().add_(1.0)
    chol_b = torch.linalg.cholesky(b)
    c = _tri(chol_b, a @ y, upper=False) / sd
    # Per column: -n/2 log(2 pi s) - log|B|/2 - |y|^2 / (2 s) + |c|^2 / 2; the trace term
    # tr(K_tt - Q_tt) / (2 s) is shared by the columns (tr Q_tt = s |A|_F^2).
    fit = (c.square().sum() - y.square().sum() / noise) / (2 * k)
    log_det = chol_b.diagonal().log().sum() + n * math.log(2 * math.pi * noise) / 2
    trace = (k_tt.sum() - noise * a.square().sum()) / (2 * noise)
    return OutputLayer(chol, chol_b, c, fit - log_det - trace)
