"""Checks of the model and inputs shared by the empirical kernels."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import as_inputs, check_pair, positive_int

__all__ = ["check_model", "is_index_input", "prepare_inputs"]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout)


def is_index_input(x) -> bool:
    """Whether ``x`` is a tensor of integers (indices such as token ids, not bool)."""
    return (isinstance(x, Tensor) and not x.is_floating_point() and not x.is_complex()
            and x.dtype != torch.bool)


def _inputs(x, name: str) -> Tensor:
    """``x`` as ``(N, ...)`` inputs: floating point and finite (``as_inputs``), or integers
    (indices for a model that consumes them, e.g. ``nn.Embedding``), passed through."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not is_index_input(x):
        if isinstance(x, Tensor) and (x.is_complex() or x.dtype == torch.bool):
            raise TypeError(f"{name} must have a floating-point dtype, or an integer dtype "
                            f"for indices (e.g. token ids of an nn.Embedding); got {x.dtype}")
        return as_inputs(x, name)
    if x.ndim < 1 or x.shape[0] == 0 or x[0].numel() == 0:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1 examples and at least "
                         f"one index each; got shape {tuple(x.shape)}")
    return x


def prepare_inputs(model: nn.Module, x1, x2, batch_size):
    """``(x1, x2, batch_size)`` checked; ``x2`` is ``None`` when it equals ``x1``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if batch_size is not None:
        batch_size = positive_int(batch_size, "batch_size")
    x1 = _inputs(x1, "x1")
    if x2 is not None:
        x2 = _inputs(x2, "x2")
        check_pair(x1, x2)
        if x2 is x1 or (x2.shape == x1.shape and torch.equal(x1, x2)):
            x2 = None  # one pass over x1, and an exactly symmetric result
        else:
            x2 = x2.detach()
    return x1.detach(), x2, batch_size


def check_model(model: nn.Module, x: Tensor) -> None:
    """The model sits on ``x``'s device, and no module couples the examples of a batch."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.device != x.device:
            raise ValueError(
                f"model and inputs must be on the same device: model tensor {name!r} is on "
                f"{t.device} but x1 is on {x.device}; move one of them (model.to(x1.device))"
            )
    for name, m in model.named_modules():
        where = f"module {name!r} ({type(m).__name__})" if name else type(m).__name__
        if isinstance(m, _BATCH_NORMS) and (
            m.training or m.running_mean is None
        ):
            raise ValueError(
                f"model: {where} normalises with batch statistics, so each output depends "
                f"on the whole batch and the NTK is not per-example; call model.eval() "
                f"(with track_running_stats=True) first"
            )
        if isinstance(m, _DROPOUTS) and m.training and m.p > 0:
            raise ValueError(
                f"model: {where} is in training mode, so the network is random and has no "
                f"single NTK; call model.eval() first"
            )
