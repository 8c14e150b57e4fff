"""muP attention: logits ``q . k / d_head`` instead of ``q . k / sqrt(d_head)``.

Under muP the query and key of a trained attention layer become correlated, so ``q . k``
grows like ``d_head`` rather than ``sqrt(d_head)``; the logits stay O(1) only with the scale
``1/d_head`` (Yang et al. 2022, "Tensor Programs V", its muP rule for attention logits;
``mup``'s README: "replace 1/sqrt(d) by 1/d"). With ``base_d_head`` the scale is
``sqrt(base_d_head) / d_head``: equal to the usual ``1/sqrt(d_head)`` at the base width, so that
the base model is unchanged (the convention of :mod:`._abc`), and ``~ 1/d_head`` as it grows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize as P

__all__ = ["mup_attention_", "mup_attention_scale", "mup_scaled_dot_product_attention",
           "remove_mup_attention_"]


def mup_attention_scale(d_head: int, *, base_d_head: int | None = None) -> float:
    """The muP logit scale: ``1 / d_head``, or ``sqrt(base_d_head) / d_head``.

    Example:
        >>> mup_attention_scale(64), mup_attention_scale(64, base_d_head=64) == 64 ** -0.5
        (0.015625, True)
    """
    for v, what in ((d_head, "d_head"), (base_d_head, "base_d_head")):
        if what == "base_d_head" and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{what} must be a positive int, got {v!r}")
    return (1.0 if base_d_head is None else math.sqrt(base_d_head)) / d_head


def mup_scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, *,
                                     base_d_head: int | None = None, **kwargs) -> Tensor:
    """``torch.nn.functional.scaled_dot_product_attention`` with the muP scale, for a
    user's own attention module.

    **Arguments:** ``query`` ``(..., L, d_head)``, ``key`` ``(..., S, d_head)``, ``value``
    ``(..., S, d_v)``; ``kwargs`` (``attn_mask``, ``is_causal``, ...) are passed on.

    **Returns:** ``(..., L, d_v)``.

    Example:
        >>> q = k = v = torch.ones(1, 2, 4)
        >>> mup_scaled_dot_product_attention(q, k, v).shape
        torch.Size([1, 2, 4])
    """
    if "scale" in kwargs:
        raise TypeError("scale= is set by mup_scaled_dot_product_attention; give base_d_head")
    scale = mup_attention_scale(query.shape[-1], base_d_head=base_d_head)
    return F.scaled_dot_product_attention(query, key, value, scale=scale, **kwargs)


class _QueryScale(nn.Module):
    """Multiplies the query block (the first ``embed_dim`` rows) of a packed projection."""

    def __init__(self, factor: float, rows: int | None):
        super().__init__()
        self.factor, self.rows = float(factor), rows

    def forward(self, x: Tensor) -> Tensor:
        if self.rows is None:
            return x * self.factor
        return torch.cat([x[: self.rows] * self.factor, x[self.rows:]])

    def extra_repr(self) -> str:
        return f"factor={self.factor:.6g}, rows={self.rows}"


def _attentions(model: nn.Module) -> list[nn.MultiheadAttention]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    found = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    if not found:
        raise ValueError("model contains no nn.MultiheadAttention")
    return found


def mup_attention_(model: nn.Module, *, base_d_head: int | None = None) -> nn.Module:
    """Give every ``nn.MultiheadAttention`` in ``model`` (or ``model`` itself) the muP logit
    scale, without editing its class.

    ``nn.MultiheadAttention`` computes ``q . k / sqrt(d_head)`` internally; multiplying the
    query projection (weight rows and bias entries of the query block) by
    ``mup_attention_scale(d_head, base_d_head=...) * sqrt(d_head)`` gives
    ``q . k * mup_attention_scale(...)`` in both its forward and backward passes. The factor
    is a ``torch.nn.utils.parametrize`` parametrization (the query weight stays one
    ``nn.Parameter``); :func:`remove_mup_attention_` takes it off. Apply a
    :class:`~._plan.Plan` first: re-initializing a parametrized projection is refused.

    **Returns:** ``model``.

    Example:
        >>> mha = nn.MultiheadAttention(8, num_heads=2, batch_first=True)
        >>> x = torch.randn(1, 3, 8)
        >>> out = mup_attention_(mha)(x, x, x, need_weights=False)[0]
        >>> remove_mup_attention_(mha) is mha
        True
    """
    for mha in _attentions(model):
        d_head = mha.head_dim
        factor = mup_attention_scale(d_head, base_d_head=base_d_head) * math.sqrt(d_head)
        if any(isinstance(f, _QueryScale) for name in ("in_proj_weight", "q_proj_weight")
               if P.is_parametrized(mha, name) for f in mha.parametrizations[name]):
            raise ValueError("mup_attention_ was already applied to this attention")
        if mha._qkv_same_embed_dim:
            P.register_parametrization(mha, "in_proj_weight", _QueryScale(factor,
                                                                          mha.embed_dim))
        else:
            P.register_parametrization(mha, "q_proj_weight", _QueryScale(factor, None))
        if mha.in_proj_bias is not None:
            P.register_parametrization(mha, "in_proj_bias", _QueryScale(factor, mha.embed_dim))
    return model


def remove_mup_attention_(model: nn.Module) -> nn.Module:
    """Undo :func:`mup_attention_` (other parametrizations stay). **Returns:** ``model``."""
    for mha in _attentions(model):
        for name in ("in_proj_weight", "q_proj_weight", "in_proj_bias"):
            if not P.is_parametrized(mha, name):
                continue
            keep = [f for f in mha.parametrizations[name] if not isinstance(f, _QueryScale)]
            P.remove_parametrizations(mha, name, leave_parametrized=False)
            for f in keep:
                P.register_parametrization(mha, name, f)
    return model
