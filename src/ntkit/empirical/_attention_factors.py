"""The structured factorisation of ``nn.MultiheadAttention``'s input projection.

``nn.MultiheadAttention`` applies ``in_proj_weight`` (``(3E, E)``, queries, keys and values
stacked) and ``out_proj.weight`` inside ``F.multi_head_attention_forward``: neither is the
output of a module call, so the plain handler contract (gradients at a module's output)
cannot see them. The handler here ``split``s a self-attention call: it recomputes
``z = x W_in^T + b_in`` (``(N, L, 3E)``), the scaled dot-product attention of every head
(Vaswani et al. 2017, eq. 1, with the same mask semantics as torch), and calls
``out_proj`` as a module, so that both projections become ordinary ``"rows"`` factors:
``dz/dW_in = sum_s x_s g_s^T`` over the ``L`` positions, and ``out_proj`` is an
``nn.Linear`` on the attention's ``(N, L, E)`` output. The recomputed output is checked
against the module's own before it replaces it.

Cross-attention (different query, key and value), separate projection weights
(``kdim``/``vdim`` other than ``embed_dim``), ``add_bias_kv``, ``add_zero_attn``, unbatched
inputs and attention dropout in training mode are refused with a reason: their parameters
fall back to per-example Jacobians.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention
from torch import Tensor, nn

from ._factors import StructuredHandler, register_structured

__all__ = ["MultiheadAttentionHandler", "attend"]

_ARGS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
         "average_attn_weights", "is_causal")


def _additive(mask: Tensor | None, like: Tensor) -> Tensor | None:
    """A boolean mask (``True``: not attended) as ``-inf``/``0``; a float one as it is."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=like.dtype).masked_fill_(mask, float("-inf"))
    return mask.to(like.dtype)


def attend(z: Tensor, n_heads: int, attn_mask: Tensor | None = None,
           key_padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Multi-head scaled dot-product self-attention from the stacked projections.

    **Arguments:**

    - ``z``: ``(N, L, 3E)``, the queries, keys and values of ``n_heads`` heads of width
      ``E / n_heads``, stacked along the last axis as ``nn.MultiheadAttention`` stacks them.
    - ``attn_mask``: ``(L, L)`` or ``(N n_heads, L, L)``; ``key_padding_mask``: ``(N, L)``;
      boolean (``True``: not attended) or additive float, as in torch.

    **Returns:** the heads' outputs concatenated, ``(N, L, E)``, and the attention weights
    ``(N, n_heads, L, L)``.

    Example:
        >>> import torch
        >>> mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        >>> x = torch.randn(3, 5, 8)
        >>> heads, weights = attend(torch.nn.functional.linear(x, mha.in_proj_weight,
        ...                                                    mha.in_proj_bias), 2)
        >>> bool(torch.allclose(mha.out_proj(heads), mha(x, x, x)[0], atol=1e-5))
        True
    """
    n, length, width = z.shape
    e = width // 3
    q, k, v = (t.reshape(n, length, n_heads, e // n_heads).transpose(1, 2)
               for t in z.split(e, dim=-1))  # (N, H, L, E / H)
    scores = (q / math.sqrt(e // n_heads)) @ k.transpose(-2, -1)
    mask = _additive(attn_mask, z)
    if mask is not None:
        scores = scores + mask.reshape(-1, n_heads, length, length) if mask.ndim == 3 \
            else scores + mask
    pad = _additive(key_padding_mask, z)
    if pad is not None:
        scores = scores + pad.reshape(n, 1, 1, length)
    weights = torch.softmax(scores, dim=-1)
    return (weights @ v).transpose(1, 2).reshape(n, length, e), weights


@register_structured(nn.MultiheadAttention)
class MultiheadAttentionHandler(StructuredHandler):
    """``in_proj_weight`` / ``in_proj_bias`` of a self-attention call as rows ``(N, 1, L, E)``
    and gradients at the stacked projections ``(N, L, 3E)``; ``out_proj`` is called as a
    module, so the ``nn.Linear`` handler factorises it."""

    kind = "rows"
    parameters = {"in_proj_weight": "weight", "in_proj_bias": "bias"}

    def refuse(self, m):
        if type(m).forward is not nn.MultiheadAttention.forward:
            return "it overrides forward"
        if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
            return "separate q/k/v projections, add_bias_kv and add_zero_attn are not factorised"
        return None

    def split(self, m, args, kwargs, output):
        call = {**dict(zip(_ARGS, args, strict=False)), **kwargs}
        query = call.get("query")
        if not (isinstance(query, Tensor) and call.get("key") is query
                and call.get("value") is query):
            return "it is not self-attention (query, key and value are not one tensor)"
        if query.ndim != 3:
            return f"its input has shape {tuple(query.shape)}, not a batch of sequences"
        if m.training and m.dropout > 0:
            return "its attention dropout is random in training mode"
        x = query if m.batch_first else query.transpose(0, 1)  # (N, L, E)
        z = F.linear(x, m.in_proj_weight, m.in_proj_bias)
        # ``is_causal`` is only a hint that ``attn_mask`` is causal: torch requires the mask.
        heads, weights = attend(z, m.num_heads, call.get("attn_mask"),
                                call.get("key_padding_mask"))
        out = m.out_proj(heads)
        if not m.batch_first:
            out = out.transpose(0, 1)
        # Both compute the same sums in another order: equal to rounding.
        eps, ref = torch.finfo(out.dtype).eps, output[0].detach()
        if not torch.allclose(out.detach(), ref, rtol=1e3 * eps,
                              atol=1e3 * eps * float(ref.abs().max())):
            return "its output is not the attention recomputed from in_proj and out_proj"
        if not call.get("need_weights", True):
            weights = None
        elif call.get("average_attn_weights", True):
            weights = weights.mean(1)
        return x, z, (out, weights)

    def record(self, m, x, n):
        if x.shape[0] != n:
            return f"its input has {x.shape[0]} sequences, not N = {n} examples"
        return x.detach().unsqueeze(1)  # (N, 1, L, E)

    def grads(self, m, g: Tensor) -> Tensor:
        return g.transpose(1, 2).unsqueeze(1)  # (N, K, L, 3E) -> (N, 1, L, K, 3E)
