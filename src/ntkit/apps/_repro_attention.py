"""Attention kernels at small scale (Hron, Bahri, Sohl-Dickstein & Novak, ICML 2020): Monte
Carlo over the finite twin of ``L.SelfAttention`` at growing width, the non-Gaussian limit of
standard-scaling attention with a fixed number of heads, and attention kernels against
fully-connected and pooled-convolution kernels on a relational sequence task.

Used by ``examples/plot_attention_kernels.py`` (full size) and its test (reduced size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .. import layers as L  # noqa: N812 - the convention of docs/conventions.md
from ..solve import kernel_ridge

__all__ = ["duplicate_task", "twin_errors", "head_kurtosis", "task_accuracies", "TaskResult"]

F64 = torch.float64


def duplicate_task(n: int, *, seed: int, vocab: int = 8, channels: int = 8, length: int = 4,
                   noise: float = 0.1, pad_from: int | None = None) -> tuple[Tensor, Tensor]:
    """Sequences of ``length`` tokens drawn from ``vocab`` random embeddings (norm
    ``sqrt(channels)``, plus ``noise``), labelled ``+1`` when some token occurs twice.

    The label is invariant to permuting the tokens and relational (it compares tokens with
    each other): a bag-of-tokens kernel cannot see it, attention compares the tokens.
    With ``pad_from``, each sequence keeps a random number of tokens in
    ``[pad_from, length]`` and the rest are ``NaN`` padding (``mask_constant=nan``).

    **Returns:** ``x`` ``(n, channels, length)`` float64 and ``y`` ``(n,)`` in ``{-1, +1}``.
    """
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(vocab, channels, generator=g, dtype=F64)
    emb = emb / emb.norm(dim=1, keepdim=True) * channels ** 0.5
    ids = torch.randint(vocab, (n, length), generator=g)
    keep = torch.ones(n, length, dtype=torch.bool)
    if pad_from is not None:
        lengths = torch.randint(pad_from, length + 1, (n,), generator=g)
        keep = torch.arange(length)[None] < lengths[:, None]
    x = emb[ids].transpose(1, 2) + noise * torch.randn(n, channels, length, generator=g,
                                                       dtype=F64)
    x = x.masked_fill(~keep[:, None], float("nan"))
    ids = torch.where(keep, ids, -1 - torch.arange(length)[None])  # padding never repeats
    srt = ids.sort(1).values
    y = (srt[:, 1:] == srt[:, :-1]).any(1).to(F64) * 2 - 1
    return x, y


def _attention(width: int, heads: int, *, standard: bool = False, head_width: int | None = None,
               pool: bool = True, **kw) -> L.Serial:
    """A 1x1 convolution to ``width`` channels, ReLU, self-attention of ``heads`` heads with
    keys and values of ``head_width`` (default ``width``) channels and ``width`` outputs, mean
    over the (unmasked) positions (or, without ``pool``, a bare 1x1 convolution before and
    no pooling)."""
    hw = head_width or width
    attention = L.SelfAttention(heads, n_chan_key=hw, n_chan_val=hw, n_chan_out=width,
                                b_std=0.1, linear_scaling=not standard, **kw)
    if not pool:
        return L.serial(L.Conv(width, (1,)), attention)
    return L.serial(L.Conv(width, (1,), b_std=0.2), L.ReLU(), attention, L.GlobalAvgPool())


def _outputs(net: L.Serial, x: Tensor, seed: int) -> Tensor:
    x0, mask = L.input_mask(x, float("nan"))
    model = net.module(tuple(x.shape[1:]), generator=torch.Generator().manual_seed(seed),
                       dtype=F64)
    with torch.no_grad():
        return L.masked_forward(model, x0, mask)


def twin_errors(widths, *, twins: int, n: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """Relative Frobenius error of the Monte Carlo NNGP of ``twins`` finite twins (padded
    sequences of 4 to 6 tokens, masked) at each width ``w``.

    - ``"linear"``: linear scaling (tied queries and keys, softmax), 4 heads of width ``w``,
      against its closed-form masked kernel.
    - ``"standard"``: standard ``1/sqrt(n_key)`` scaling with softmax, ``w / 16`` heads of
      16 channels (no closed form: the limit is over the heads), against the Monte Carlo
      NNGP of ``4 twins`` twins at twice the largest width, so the curve measures the
      convergence to a limit.

    **Returns:** ``{"linear": (W,), "standard": (W,)}``.
    """
    x, _ = duplicate_task(n, seed=seed, length=6, pad_from=4)

    def mc(net, count, offset=0):
        acc = 0.0
        for s in range(count):
            f = _outputs(net, x, 1000 * offset + s)
            acc = acc + f @ f.T / f.shape[1]
        return acc / count

    def standard(w):
        return _attention(w, max(1, w // 16), standard=True, head_width=16)

    exact = _attention(8, 4).kernel(x, get="nngp", mask_constant=float("nan")).nngp
    ref = mc(standard(2 * max(widths)), 4 * twins, 7)
    out = {"linear": [], "standard": []}
    for w in widths:
        est = mc(_attention(w, 4), twins)
        out["linear"].append(float((est - exact).norm() / exact.norm()))
        est = mc(standard(w), twins)
        out["standard"].append(float((est - ref).norm() / ref.norm()))
    return {k: np.array(v) for k, v in out.items()}


def head_kurtosis(widths, *, twins: int, seed: int = 0, key_std: float = 2.0) -> dict:
    """Excess kurtosis of an attention output unit (first position, every output channel of
    every twin a sample) over ``twins`` random twins of a 1x1 convolution to ``w`` channels
    and self-attention, at each width ``w``: standard scaling with one head of width ``w``,
    standard scaling with ``w / 16`` heads of 16 channels, linear scaling with one head.

    Hron et al. (2020): with ``1/sqrt(n_key)`` scaling the logits stay random as the width
    grows, so with a fixed number of heads the output is a scale mixture of Gaussians
    (excess kurtosis > 0); a Gaussian limit needs the heads to grow too. Linear scaling makes
    the attention weights deterministic: Gaussian with one head.

    **Returns:** ``{name: (W,) array}``.
    """
    x, _ = duplicate_task(1, seed=seed, length=6)
    cases = {
        "standard, 1 head": lambda w: _attention(w, 1, standard=True, pool=False,
                                                 W_key_std=key_std),
        "standard, w/16 heads": lambda w: _attention(w, max(1, w // 16), standard=True,
                                                     head_width=16, pool=False,
                                                     W_key_std=key_std),
        "linear, 1 head": lambda w: _attention(w, 1, pool=False, W_key_std=key_std),
    }
    out = {}
    for name, make in cases.items():
        vals = []
        for w in widths:
            f = torch.cat([_outputs(make(w), x, s)[0, :, 0] for s in range(twins)])
            f = f - f.mean()
            vals.append(float((f**4).mean() / (f**2).mean() ** 2 - 3))
        out[name] = np.array(vals)
    return out


@dataclass
class TaskResult:
    """Test accuracies ``(seeds,)`` of kernel regression with each kernel, and the share of
    positive labels."""

    accuracy: dict[str, np.ndarray]
    positive: float


def task_accuracies(*, seeds: int, n_train: int, n_test: int, ridge: float = 1e-3,
                    length: int = 4) -> TaskResult:
    """Kernel ridge regression on ``{-1, +1}`` duplicate-token labels (:func:`duplicate_task`),
    classifying by sign, with NNGP kernels of: attention (1x1 conv, ReLU, softmax attention
    with linear scaling, ReLU, mean over positions), the same without attention (a second
    1x1 conv: a bag-of-tokens kernel) and a fully-connected ReLU network on the flattened
    sequence. ``ridge`` is relative to the mean of the training kernel's diagonal."""
    nets = {
        "attention": (L.serial(L.Conv(1, (1,), b_std=0.1), L.ReLU(),
                               L.SelfAttention(1, W_key_std=2.0), L.ReLU(),
                               L.GlobalAvgPool()), False),
        "conv + pool": (L.serial(L.Conv(1, (1,), b_std=0.1), L.ReLU(), L.Conv(1, (1,)),
                                 L.ReLU(), L.GlobalAvgPool()), False),
        "fully connected": (L.serial(L.Dense(1, b_std=0.1), L.ReLU(), L.Dense(1), L.ReLU(),
                                     L.Dense(1)), True),
    }
    acc = {name: [] for name in nets}
    positive = []
    for seed in range(seeds):
        x, y = duplicate_task(n_train + n_test, seed=seed, length=length)
        positive.append(float((y > 0).double().mean()))
        for name, (net, flat) in nets.items():
            xs = x.flatten(1) if flat else x
            tr, te = xs[:n_train], xs[n_train:]
            k = net.kernel(tr, get="nngp").nngp
            kt = net.kernel(te, tr, get="nngp").nngp
            pred = (kt @ kernel_ridge(k, y[:n_train], alpha=ridge))[:, 0]
            acc[name].append(float((pred.sign() == y[n_train:]).double().mean()))
    return TaskResult({k: np.array(v) for k, v in acc.items()}, float(np.mean(positive)))
