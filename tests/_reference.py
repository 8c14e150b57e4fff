"""Independent references for the kernel tests: nothing here imports ntkit's kernel code.

- :func:`gauss_hermite_2d`: ``E[f(u) g(v)]`` for a bivariate normal by a high-degree
  Gauss-Hermite rule in the covariance's eigenbasis (ntkit's ``Elementwise`` uses
  probabilists' nodes on a Cholesky factor, so the two share neither nodes nor rounding).
- :func:`homogeneous_2d`: the same expectation, exact up to ``scipy.integrate.quad``'s
  tolerance, for positively homogeneous ``f, g`` (ReLU-type functions and their derivatives),
  whose kinks spoil any Gauss-Hermite rule.
- :func:`explicit_ntk`: the NTK of a finite single-output ``nn.Module`` by a plain loop of
  ``torch.autograd.grad`` per example: ``sum_p df(x1_i)/dp df(x2_j)/dp``.
- :func:`twin_kernels`: per-seed finite-width kernels of a spec's twin networks, the raw
  material of every Monte Carlo comparison.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from scipy import integrate


@lru_cache(maxsize=8)
def _hermite_grid(deg: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Physicists' rule (weight exp(-x^2)): E[h(z)] = sum_k w_k h(sqrt(2) x_k) / sqrt(pi).
    x, w = np.polynomial.hermite.hermgauss(deg)
    z1, z2 = np.meshgrid(math.sqrt(2.0) * x, math.sqrt(2.0) * x, indexing="ij")
    weights = np.outer(w, w) / math.pi
    keep = weights > 1e-300 * weights.max()  # skip the nodes whose weight underflows anyway
    return z1[keep], z2[keep], weights[keep]


def gauss_hermite_2d(f, g, q11, q12, q22, deg: int = 200) -> np.ndarray:
    """``E[f(u) g(v)]`` with ``(u, v) ~ N(0, [[q11, q12], [q12, q22]])``, entry by entry.

    ``f, g`` act elementwise on NumPy arrays; ``q11, q12, q22`` broadcast together. For the
    smooth functions tested (``b^2 q <= 3``) ``deg=200`` is exact to ~1e-10 relative, checked
    against Williams' closed form for ``erf`` in ``test_activations.py``.
    """
    z1, z2, w = _hermite_grid(deg)
    q11, q12, q22 = np.broadcast_arrays(*(np.asarray(q, dtype=np.float64)
                                          for q in (q11, q12, q22)))
    out = np.empty(q11.shape)
    for idx in np.ndindex(q11.shape):
        lam, vec = np.linalg.eigh(np.array([[q11[idx], q12[idx]], [q12[idx], q22[idx]]]))
        root = vec * np.sqrt(np.clip(lam, 0.0, None))  # cov = root @ root.T
        u = root[0, 0] * z1 + root[0, 1] * z2
        v = root[1, 0] * z1 + root[1, 1] * z2
        out[idx] = np.sum(w * f(u) * g(v))
    return out


def homogeneous_2d(f, g, q11, q12, q22, degree: int) -> np.ndarray:
    """``E[f(u) g(v)]`` for ``f, g`` positively homogeneous of ``degree`` (each), exactly.

    With ``(u, v) = L z`` and ``z = r (cos a, sin a)``, ``f(u) g(v) = r^(2 degree) f(l1.e)
    g(l2.e)``; ``r^2`` is chi-square with 2 degrees of freedom, ``E[r^(2p)] = 2^p p!``, and
    ``a`` is uniform, leaving a 1-D integral of a function that is smooth between the angles
    where ``l1.e`` or ``l2.e`` vanish; ``quad`` integrates each smooth piece separately.
    """
    q11, q12, q22 = np.broadcast_arrays(*(np.asarray(q, dtype=np.float64)
                                          for q in (q11, q12, q22)))
    radial = 2.0**degree * math.factorial(degree)
    out = np.empty(q11.shape)
    for idx in np.ndindex(q11.shape):
        a, c, b = q11[idx], q12[idx], q22[idx]
        l1 = np.array([math.sqrt(a), 0.0])
        l2 = np.array([c / math.sqrt(a), math.sqrt(max((a * b - c * c) / a, 0.0))])
        kinks = []
        for lv in (l1, l2):
            base = math.atan2(lv[0], -lv[1])  # l . (cos t, sin t) = 0 at t = base (mod pi)
            kinks += [(base + k * math.pi) % (2 * math.pi) for k in range(2)]

        def integrand(t, l1=l1, l2=l2):
            e = np.array([math.cos(t), math.sin(t)])
            return float(f(np.array(l1 @ e)) * g(np.array(l2 @ e)))

        edges = [0.0] + sorted(kinks) + [2 * math.pi]
        val = sum(integrate.quad(integrand, lo, hi, epsabs=1e-15, epsrel=1e-13)[0]
                  for lo, hi in zip(edges[:-1], edges[1:], strict=True) if hi > lo)
        out[idx] = radial * val / (2 * math.pi)
    return out


def explicit_ntk(model: torch.nn.Module, x1: torch.Tensor,
                 x2: torch.Tensor | None = None) -> torch.Tensor:
    """``Theta[i, j] = sum_p d f(x1_i)/dp * d f(x2_j)/dp`` over every trainable parameter ``p``
    of a single-output ``model``, one ``autograd.grad`` call per example. ``(N1, N2)``."""
    params = [p for p in model.parameters() if p.requires_grad]

    def jacobian(x: torch.Tensor) -> torch.Tensor:
        rows = []
        for i in range(x.shape[0]):
            out = model(x[i:i + 1])
            assert out.numel() == 1, "explicit_ntk needs a single-output model"
            grads = torch.autograd.grad(out.sum(), params, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if gr is None else gr).reshape(-1)
                                   for gr, p in zip(grads, params, strict=True)]))
        return torch.stack(rows)

    j1 = jacobian(x1)
    j2 = j1 if x2 is None else jacobian(x2)
    return j1 @ j2.T


def twin_kernels(spec, x: torch.Tensor, width: int, seeds: range, kind: str) -> torch.Tensor:
    """Per-seed finite-width kernels ``(S, N, N)`` of ``spec(width)``'s twin networks.

    ``kind="nngp"``: ``F F^T / m`` with ``F`` the ``(N, m)`` outputs of one twin, i.e. the
    covariance of its outputs over its ``m`` output units (given the twin's hidden layers).
    ``kind="ntk"``: :func:`explicit_ntk` of the twin (``spec(width)`` must have one output).
    """
    out = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        model = spec(width).module(tuple(x.shape[1:]), generator=g, dtype=torch.float64)
        if kind == "nngp":
            with torch.no_grad():
                f = model(x)
            out.append(f @ f.T / f.shape[1])
        else:
            out.append(explicit_ntk(model, x).detach())
    return torch.stack(out)


def mean_and_se(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the first axis and its standard error (independent samples)."""
    n = samples.shape[0]
    return samples.mean(0), samples.std(0) / math.sqrt(n)


def relative_rms_error(samples: torch.Tensor, exact: torch.Tensor) -> float:
    """``sqrt(mean_s ||samples[s] - exact||_F^2) / ||exact||_F``: a typical finite-width error."""
    err = (samples - exact).pow(2).sum(dim=(1, 2)).mean().sqrt()
    return float(err / exact.pow(2).sum().sqrt())
