"""WINNER: target-aware Gaussian perturbation of SIREN's uniform initialization.

Chandravamsi, Shenoy, Zinn, Pisnoy, Frankel, "Spectral Bottleneck in Deep Neural Networks:
Noise is All You Need" (arXiv:2509.09719, 2025). A SIREN fitted to a signal whose energy sits
at high frequencies can stall near the zero function (the "spectral bottleneck"): at
initialization its activations carry too little power at the target's frequencies. WINNER
adds Gaussian noise to the weights of the first two layers,
``W_1 <- W_1 + N(0, (s_0 / omega_0)^2)``, ``W_2 <- W_2 + N(0, (s_1 / omega_0)^2)`` (so the
frequencies ``omega_0 W`` get noise of standard deviation ``s_0`` and ``s_1``), with scales
set from the target's normalized spectral centroid ``xi`` and its channel count ``C``:

``s_0 = s0_max (1 - exp(-a xi / C))``, ``s_1 = b xi / C``

with the paper's audio constants ``s0_max = 3500``, ``a = 7``, ``b = 3`` as defaults (the
constants are empirical and tied to the sampling of the signal: rescale ``s0_max`` with the
coordinate grid, see ``examples/plot_siren_winner.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .._checks import real_number
from ._twin import AffineTwin

__all__ = ["spectral_centroid", "winner_noise_scales", "winner_init_"]


def _signal(signal, dims: int) -> torch.Tensor:
    if isinstance(dims, bool) or dims not in (1, 2):
        raise ValueError(f"dims must be 1 (a signal) or 2 (an image); got {dims!r}")
    if isinstance(signal, np.ndarray):
        signal = torch.from_numpy(signal)
    if not isinstance(signal, torch.Tensor):
        raise TypeError(f"signal must be a tensor or NumPy array; got {type(signal).__name__}")
    if not (signal.is_floating_point() or signal.dtype in (torch.uint8, torch.int64,
                                                           torch.int32)):
        raise TypeError(f"signal must hold real numbers; got dtype {signal.dtype}")
    if signal.ndim not in (dims, dims + 1):
        what = "a 1-D signal (N,) or (N, C)" if dims == 1 else "an image (H, W) or (H, W, C)"
        raise ValueError(f"signal must be {what}; got shape {tuple(signal.shape)} (rank "
                         f"{signal.ndim})")
    signal = signal.to(torch.float64)
    if signal.ndim == dims:
        signal = signal[..., None]
    if min(signal.shape[:dims]) < 2 or signal.shape[-1] < 1:
        raise ValueError(f"signal must have at least 2 samples along each of its {dims} "
                         f"axes and one channel; got shape {tuple(signal.shape)}")
    if not bool(torch.isfinite(signal).all()):
        raise ValueError("signal must be finite (no NaN or inf)")
    return signal


def spectral_centroid(signal, *, dims: int = 1) -> float:
    """The magnitude-weighted mean frequency of ``signal``, as a fraction of the Nyquist
    frequency (in ``[0, 1]``).

    1-D (``dims=1``): ``xi = 2 sum_k |F_k| f_k / sum_k |F_k|`` over the ``rfft`` bins
    ``f_k = k / N`` (cycles per sample, so ``2 f_k`` is the fraction of Nyquist), magnitudes
    summed over channels: the centroid the WINNER paper's code computes. 2-D (``dims=2``): the
    same over the full 2-D FFT with the radial frequency
    ``sqrt((2 f_h)^2 + (2 f_w)^2) / sqrt(2)`` (1 at the corner of the spectrum). No mean is
    removed: a DC offset pulls ``xi`` towards 0. A signal of zeros gives 0.

    **Arguments:**

    - ``signal``: ``(N,)`` or ``(N, C)`` for ``dims=1``, ``(H, W)`` or ``(H, W, C)`` for
      ``dims=2`` (tensor or NumPy array, finite, at least 2 samples per axis).
    - ``dims``: number of coordinate axes, 1 or 2.

    **Returns:** ``xi`` as a Python float.

    Example:
        >>> import math, torch
        >>> n = torch.arange(64, dtype=torch.float64)
        >>> round(spectral_centroid(torch.cos(2 * math.pi * 8 * n / 64)), 12)  # 2 * 8 / 64
        0.25
    """
    x = _signal(signal, dims)
    if dims == 1:
        mag = torch.fft.rfft(x, dim=0).abs().sum(-1)
        rho = 2 * torch.fft.rfftfreq(x.shape[0], dtype=torch.float64)
    else:
        mag = torch.fft.fft2(x, dim=(0, 1)).abs().sum(-1)
        fh = 2 * torch.fft.fftfreq(x.shape[0], dtype=torch.float64)
        fw = 2 * torch.fft.fftfreq(x.shape[1], dtype=torch.float64)
        rho = (fh[:, None] ** 2 + fw[None, :] ** 2).sqrt() / math.sqrt(2)
    total = float(mag.sum())
    if total == 0.0:
        return 0.0
    return min(float((mag * rho).sum()) / total, 1.0)


def winner_noise_scales(centroid: float, *, channels: int = 1, s0_max: float = 3500.0,
                        a: float = 7.0, b: float = 3.0) -> tuple[float, float]:
    """WINNER's noise scales ``(s_0, s_1)`` for a target of normalized spectral centroid
    ``centroid`` (see :func:`spectral_centroid`) and ``channels`` output channels:
    ``s_0 = s0_max (1 - exp(-a xi / C))``, ``s_1 = b xi / C``.

    **Arguments:** ``centroid`` in ``[0, 1]``; ``channels >= 1``; ``s0_max``, ``a``, ``b``
    ``>= 0`` (the paper's audio constants by default).

    **Returns:** ``(s_0, s_1)``, the standard deviations of the noise on the frequencies
    ``omega_0 W`` of the first and second layer.

    Example:
        >>> s0, s1 = winner_noise_scales(0.2)
        >>> round(s0, 1), round(s1, 2)
        (2636.9, 0.6)
    """
    xi = real_number(centroid, "centroid", minimum=0.0)
    if xi > 1.0:
        raise ValueError(f"centroid must be in [0, 1] (a fraction of Nyquist); got {xi}")
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError(f"channels must be a positive int; got {channels!r}")
    s0_max = real_number(s0_max, "s0_max", minimum=0.0)
    a = real_number(a, "a", minimum=0.0)
    b = real_number(b, "b", minimum=0.0)
    return s0_max * (1.0 - math.exp(-a * xi / channels)), b * xi / channels


def _weight_layers(model: nn.Module) -> list[tuple[nn.Parameter, float]]:
    """``(weight, scale)`` of every affine layer in module order: ntkit twins (the forward
    pass uses ``weight_scale * weight``) and ``nn.Linear`` (scale 1)."""
    found = []
    for m in model.modules():
        if isinstance(m, AffineTwin):
            found.append((m.weight, m.weight_scale))
        elif isinstance(m, nn.Linear):
            found.append((m.weight, 1.0))
    return found


def winner_init_(model: nn.Module, target, *, omega_0: float = 30.0, dims: int = 1,
                 s0_max: float = 3500.0, a: float = 7.0, b: float = 3.0,
                 generator: torch.Generator | None = None) -> tuple[float, float]:
    """Perturb a SIREN's first two weight matrices in place with WINNER's target-aware noise.

    The effective weights (``weight_scale * weight`` of an ntkit twin, ``weight`` of an
    ``nn.Linear``) of the first two affine layers, in module order, get independent
    ``N(0, (s_0 / omega_0)^2)`` and ``N(0, (s_1 / omega_0)^2)`` noise, with ``(s_0, s_1) =``
    :func:`winner_noise_scales` of the target's :func:`spectral_centroid` and channel count.

    **Arguments:**

    - ``model``: a SIREN, e.g. ``ntkit.layers.siren(...).module(...)`` (any module whose
      first two affine layers are the first two SIREN layers).
    - ``target``: the signal to fit, shaped as for :func:`spectral_centroid` (its last axis
      beyond ``dims`` is the channel axis).
    - ``omega_0``: the network's frequency factor, ``> 0``.
    - ``dims``, ``s0_max``, ``a``, ``b``: as for :func:`spectral_centroid` and
      :func:`winner_noise_scales`.
    - ``generator``: for reproducible noise.

    **Returns:** ``(s_0, s_1)``.

    Example:
        >>> import math, torch
        >>> from ntkit import layers as L
        >>> net = L.siren((32, 32)).module((1,), generator=torch.Generator().manual_seed(0))
        >>> y = torch.cos(2 * math.pi * 8 * torch.arange(64.0) / 64)
        >>> s0, s1 = L.winner_init_(net, y, generator=torch.Generator().manual_seed(1))
        >>> round(s1, 2)
        0.75
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    omega = real_number(omega_0, "omega_0")
    if omega <= 0:
        raise ValueError(f"omega_0 must be > 0; got {omega}")
    x = _signal(target, dims)
    s0, s1 = winner_noise_scales(spectral_centroid(x, dims=dims), channels=x.shape[-1],
                                 s0_max=s0_max, a=a, b=b)
    layers = _weight_layers(model)
    if len(layers) < 2:
        raise ValueError(f"model must have at least two affine layers (SIREN's first two); "
                         f"found {len(layers)}")
    with torch.no_grad():
        for (weight, scale), s in zip(layers[:2], (s0, s1), strict=True):
            noise = torch.randn(weight.shape, generator=generator, dtype=torch.float64)
            weight.add_((noise * (s / omega / scale)).to(weight.dtype))
    return s0, s1
