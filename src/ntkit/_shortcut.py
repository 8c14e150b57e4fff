"""The two-feature shortcut-learning task of Hermann, Mobahi, Fel & Mozer, "On the Foundations
of Shortcut Learning" (ICLR 2024), re-exported as :func:`ntkit.datasets.shortcut`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import positive_int, real_number

__all__ = ["ShortcutData", "shortcut"]


@dataclass(frozen=True)
class ShortcutData:
    """A draw of :func:`shortcut`.

    - ``x``: ``(n, dim)`` inputs; ``y``: ``(n,)`` labels in ``{-1, +1}``.
    - ``z``: ``(n, 2)`` latent features, column 0 the core ``z_c``, column 1 the shortcut
      ``z_s``.
    - ``means``: ``(2,)`` the class-conditional means ``mu`` (``z | y ~ N(y mu, Sigma)``).
    - ``covariance``: ``(2, 2)`` ``Sigma`` (unit variances, the within-class correlation).
    - ``embedding``: ``(2, dim)`` orthonormal rows; ``availability``: ``(2,)`` amplitudes.
    """

    x: Tensor
    y: Tensor
    z: Tensor
    means: Tensor
    covariance: Tensor
    embedding: Tensor
    availability: Tensor

    def embed(self, z: Tensor) -> Tensor:
        """Inputs ``(m, dim)`` for latents ``z`` ``(m, 2)`` (e.g. the probes of a reliance
        measure), by the same amplification and embedding, without noise."""
        return (z.to(self.embedding.dtype) * self.availability) @ self.embedding

    def bayes_direction(self) -> Tensor:
        """``(2,)`` the optimal (LDA) linear rule in latent space: ``sign(z . w)`` with
        ``w = Sigma^{-1} mu`` is Bayes-optimal for two Gaussians with a shared covariance."""
        return torch.linalg.solve(self.covariance, self.means)


def _pair(value, name: str, ok, expected: str) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (core, shortcut); got {value!r}")
    out = []
    for v, which in zip(value, ("core", "shortcut"), strict=True):
        v = real_number(v, f"{name} ({which})")
        if not ok(v):
            raise ValueError(f"{name} ({which}) must be {expected}; got {v}")
        out.append(v)
    return out[0], out[1]


def shortcut(n: int, *, predictivity=(0.9, 0.7), availability=(1.0, 1.0),
             correlation: float = 0.0, dim: int = 100, noise: float = 0.0, seed: int = 0,
             dtype: torch.dtype = torch.float64) -> ShortcutData:
    """Two latent features of controlled predictivity and availability (Hermann et al. 2024).

    Labels ``y = +-1`` with equal probability; latents ``z = (z_c, z_s) | y ~ N(y mu,
    Sigma)`` with unit variances and within-class correlation ``correlation``. The
    predictivity ``p_i`` of feature ``i`` is the accuracy of ``sign(z_i)`` alone, so
    ``mu_i = Phi^{-1}(p_i)`` (``p = 0.5``: useless, ``p -> 1``: perfect). Availability is the
    amplification ``alpha_i`` of the latent in the input: ``x = (alpha_c z_c, alpha_s z_s) Q
    + noise * N(0, I)``, with ``Q`` a random ``(2, dim)`` matrix of orthonormal rows, so each
    feature spans one direction of the input with amplitude ``alpha_i`` (spreading it over
    ``r`` orthogonal directions with amplitude ``alpha`` each is, for a rotation-invariant
    kernel, the same as one direction with amplitude ``alpha sqrt(r)``).

    **Arguments:**

    - ``n``: number of examples.
    - ``predictivity``: ``(p_core, p_shortcut)``, each in ``[0.5, 1)``.
    - ``availability``: ``(alpha_core, alpha_shortcut)``, each ``> 0``.
    - ``correlation``: within-class correlation of the two latents, in ``(-1, 1)``.
    - ``dim``: input dimension (``>= 2``); ``noise``: std of isotropic input noise (``>= 0``).
    - ``seed``: seeds labels, latents, embedding and noise.

    **Returns:** a :class:`ShortcutData` (``x (n, dim)``, ``y (n,)``, ``z (n, 2)``, ...).

    Example:
        >>> data = shortcut(1000, predictivity=(0.9, 0.7), availability=(1.0, 4.0), dim=10)
        >>> data.x.shape, data.y.shape
        (torch.Size([1000, 10]), torch.Size([1000]))
        >>> ((data.z[:, 1] > 0) == (data.y > 0)).double().mean().item() > 0.65
        True
    """
    n = positive_int(n, "n")
    # p = 1 would put the class means at infinity.
    p_core, p_short = _pair(predictivity, "predictivity", lambda v: 0.5 <= v < 1.0,
                            "in [0.5, 1)")
    a_core, a_short = _pair(availability, "availability", lambda v: v > 0.0, "> 0")
    correlation = real_number(correlation, "correlation")
    if not -1.0 < correlation < 1.0:
        raise ValueError(f"correlation must be in (-1, 1); got {correlation}")
    dim = positive_int(dim, "dim")
    if dim < 2:
        raise ValueError(f"dim must be >= 2 (two latent directions); got {dim}")
    noise = real_number(noise, "noise", minimum=0.0)
    g = torch.Generator().manual_seed(int(seed))
    # mu = Phi^{-1}(p) = sqrt(2) erfinv(2 p - 1)
    means = 2 ** 0.5 * torch.erfinv(torch.tensor([2 * p_core - 1, 2 * p_short - 1], dtype=dtype))
    cov = torch.tensor([[1.0, correlation], [correlation, 1.0]], dtype=dtype)
    y = torch.randint(0, 2, (n,), generator=g).to(dtype) * 2 - 1
    eps = torch.randn(n, 2, generator=g, dtype=dtype) @ torch.linalg.cholesky(cov).T
    z = y[:, None] * means + eps
    q, _ = torch.linalg.qr(torch.randn(dim, 2, generator=g, dtype=dtype))
    availability = torch.tensor([a_core, a_short], dtype=dtype)
    x = (z * availability) @ q.T
    if noise > 0:
        x = x + noise * torch.randn(n, dim, generator=g, dtype=dtype)
    return ShortcutData(x=x, y=y, z=z, means=means, covariance=cov, embedding=q.T.contiguous(),
                        availability=availability)
