"""Built-in data: scikit-learn's bundled sets, which need no download."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["Split", "load_digits"]


class Split(NamedTuple):
    """A train/test split: inputs ``(N, d)`` and integer labels ``(N,)``."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def load_digits(*, n_train: int = 1000, seed: int = 0,
                dtype: torch.dtype = torch.float64) -> Split:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes) as ``(N, 64)`` inputs.

    Pixels are standardised with the training split's mean and standard deviation (constant
    pixels become 0), and each image is then scaled to norm ``sqrt(64)`` so that the input
    kernel ``x . x' / d`` has unit diagonal. The split is stratified and fixed by ``seed``.

    Example:
        >>> s = load_digits(n_train=1000)
        >>> s.x_train.shape, s.x_test.shape, int(s.y_train.max())
        (torch.Size([1000, 64]), torch.Size([797, 64]), 9)
    """
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    x, y = _sk_digits(return_X_y=True)
    if not 10 <= n_train <= len(x) - 10:
        raise ValueError(f"n_train must be between 10 and {len(x) - 10}; got {n_train}")
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, train_size=n_train, stratify=y,
                                              random_state=seed)
    mean, std = x_tr.mean(0), x_tr.std(0)
    std[std == 0] = 1.0

    def prep(a: np.ndarray) -> Tensor:
        a = (a - mean) / std
        a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(min=1e-12) * np.sqrt(a.shape[1])
        return torch.tensor(a, dtype=dtype)

    return Split(prep(x_tr), torch.tensor(y_tr), prep(x_te), torch.tensor(y_te))
