"""Reproduction of Chandravamsi et al. (2025), "Spectral Bottleneck in Deep Neural Networks:
Noise is All You Need": SIREN against SIREN with WINNER's noise (``ntkit.layers.winner_init_``)
on a broadband 1-D signal and on a grey image from scikit-learn, PSNR against Adam steps, and
the empirical NTK at initialization (its spectrum and the share of the target's energy in its
top eigenvectors), against the infinite-width NTK of the same SIREN (``spec.kernel``, exact for
the uniform first layer at any input dimension). Used by ``examples/plot_siren_winner.py`` and
``tests/test_siren.py``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import layers as L  # noqa: N812 - the documented alias
from ..analysis import spectrum
from ..empirical import empirical_ntk

__all__ = ["SirenWinnerRun", "broadband_signal", "grey_image", "coordinate_grid", "psnr",
           "siren_vs_winner"]


@dataclass(frozen=True)
class SirenWinnerRun:
    """``steps`` ``(R,)``: the Adam steps at which ``psnr`` ``(seeds, 2, R)`` was recorded
    (index 0: SIREN, 1: WINNER); ``energy`` ``(seeds, 2)``: the fraction of the target's
    squared norm in the top ``top_k`` eigenvectors of the empirical NTK at initialization
    (on ``ntk_points`` evenly spaced samples); ``eigenvalues`` ``(2, ntk_points)``: that
    NTK's spectrum for seed 0; ``centroid`` and ``noise = (s_0, s_1)``: WINNER's inputs.
    ``limit_energy`` ``(2,)`` and ``limit_eigenvalues`` ``(2, ntk_points)``: the same for the
    infinite-width NTK of the SIREN spec on the same samples, with SIREN's uniform first layer
    (index 0) and with Gaussian first-layer weights of the same variances (index 1)."""

    steps: np.ndarray
    psnr: np.ndarray
    energy: np.ndarray
    eigenvalues: np.ndarray
    centroid: float
    noise: tuple[float, float]
    top_k: int
    limit_energy: np.ndarray
    limit_eigenvalues: np.ndarray


def broadband_signal(n: int, *, band: tuple[float, float] = (0.3, 0.9),
                     seed: int = 0) -> torch.Tensor:
    """``(n,)`` float64: flat-magnitude, random-phase Fourier modes between ``band[0]`` and
    ``band[1]`` times Nyquist (no low frequencies: the case of the spectral bottleneck),
    scaled to a maximum magnitude of 1."""
    g = torch.Generator().manual_seed(seed)
    freqs = torch.fft.rfftfreq(n, dtype=torch.float64) * 2
    keep = (freqs >= band[0]) & (freqs <= band[1])
    phase = 2 * math.pi * torch.rand(freqs.shape, generator=g, dtype=torch.float64)
    y = torch.fft.irfft(keep * torch.polar(torch.ones_like(phase), phase), n=n)
    return y / y.abs().max()


def grey_image(size: int) -> torch.Tensor:
    """scikit-learn's ``china.jpg`` in grey, block-averaged to ``(size, size)`` from its
    central square, scaled to ``[-1, 1]`` (float64)."""
    from sklearn.datasets import load_sample_image

    img = torch.from_numpy(load_sample_image("china.jpg").astype(np.float64)).mean(-1)
    side = min(img.shape)
    top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    block = side // size
    img = img[top:top + block * size, left:left + block * size]
    img = img.reshape(size, block, size, block).mean((1, 3))
    return 2 * (img - img.min()) / (img.max() - img.min()) - 1


def coordinate_grid(shape: tuple[int, ...]) -> torch.Tensor:
    """``(prod(shape), len(shape))`` float64 coordinates of a regular grid on ``[-1, 1]^d``
    in row-major order (SIREN's convention)."""
    axes = [torch.linspace(-1, 1, s, dtype=torch.float64) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(shape))


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """``10 log10(range^2 / MSE)`` with the target's range (2 for a signal in ``[-1, 1]``)."""
    mse = float(((prediction - target) ** 2).mean())
    rng = float(target.max() - target.min())
    return 10 * math.log10(rng * rng / max(mse, 1e-30))


def _energy(theta: torch.Tensor, y: torch.Tensor, top_k: int):
    """The share of ``y``'s squared norm in the top ``top_k`` eigenvectors of ``theta``, and
    its eigenvalues (descending)."""
    evals, evecs = spectrum(theta)
    share = float((evecs[:, :top_k].T @ y).pow(2).sum() / y.pow(2).sum())
    return share, evals


def siren_vs_winner(target: torch.Tensor, *, dims: int, widths=(128, 128, 128),
                    omega_0: float = 30.0, steps: int = 1000, lr: float = 1e-4,
                    seeds: int = 3, s0_max: float = 3500.0, a: float = 7.0, b: float = 3.0,
                    record: int = 20, ntk_points: int = 256, top_k: int = 32) -> SirenWinnerRun:
    """Fit ``target`` with SIREN and with SIREN + WINNER from the same draw, per seed.

    **Arguments:** ``target`` ``(N,)`` (``dims=1``) or ``(H, W)`` (``dims=2``) in
    ``[-1, 1]``; ``widths`` the hidden widths; ``omega_0``; ``steps`` full-batch Adam steps
    of learning rate ``lr`` on the mean squared error (SIREN's protocol); ``seeds``;
    ``s0_max, a, b`` WINNER's constants; ``record`` PSNR checkpoints; ``ntk_points``
    evenly spaced samples for the empirical NTK and ``top_k`` eigenvectors for the energy.

    **Returns:** a :class:`SirenWinnerRun`.
    """
    coords = coordinate_grid(tuple(target.shape)).float()
    y = target.reshape(-1).float()
    net = L.siren(tuple(widths), omega_0=omega_0, parametrization="standard")
    sub = torch.linspace(0, len(y) - 1, ntk_points).round().long()
    marks = np.unique(np.linspace(0, steps, record + 1).round().astype(int))
    curves = np.zeros((seeds, 2, len(marks)))
    energy = np.zeros((seeds, 2))
    eigenvalues = np.zeros((2, ntk_points))
    centroid = L.spectral_centroid(target, dims=dims)
    noise = (0.0, 0.0)
    for seed in range(seeds):
        for arm in range(2):
            model = net.module((dims,), generator=torch.Generator().manual_seed(seed),
                               dtype=torch.float32)
            if arm == 1:
                noise = L.winner_init_(model, target, omega_0=omega_0, dims=dims,
                                       s0_max=s0_max, a=a, b=b,
                                       generator=torch.Generator().manual_seed(10_000 + seed))
            share, evals = _energy(empirical_ntk(model, coords[sub].double()),
                                   y[sub].double(), top_k)
            energy[seed, arm] = share
            if seed == 0:
                eigenvalues[arm] = evals.numpy()
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            for step in range(steps + 1):
                pred = model(coords)[:, 0]
                if step in marks:
                    curves[seed, arm, np.searchsorted(marks, step)] = psnr(pred.detach(), y)
                if step == steps:
                    break
                loss = (pred - y).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
    limit_energy = np.zeros(2)
    limit_eigenvalues = np.zeros((2, ntk_points))
    for i, first in enumerate(("uniform", "normal")):
        spec = L.siren(tuple(widths), omega_0=omega_0, parametrization="standard",
                       first_layer=first)
        share, evals = _energy(spec.kernel(coords[sub].double(), progress=False).ntk,
                               y[sub].double(), top_k)
        limit_energy[i], limit_eigenvalues[i] = share, evals.numpy()
    return SirenWinnerRun(steps=marks, psnr=curves, energy=energy, eigenvalues=eigenvalues,
                          centroid=centroid, noise=noise, top_k=top_k,
                          limit_energy=limit_energy, limit_eigenvalues=limit_eigenvalues)
