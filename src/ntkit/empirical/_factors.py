"""What one call of a supported module contributes to the per-example parameter gradients.

Each handler reads a module's input (in a forward hook) and, with the gradients ``G`` of the
outputs ``f_o`` at the module's output, gives its parameters' per-example gradients in one of
three factorised forms (``kind``):

- ``"rows"`` (``nn.Linear``, ntkit ``DenseModule``, ``nn.Conv1d/2d``): the gradient of a
  weight is ``sum_s a_s g_s^T`` over rows ``s`` (positions of a sequence, patches of a
  convolution) and that of a bias ``sum_s g_s``, i.e. a bias is a column of ones in ``a``.
  ``rows`` gives ``A`` as ``(B, groups, S, in)``; ``grads`` gives ``G`` as
  ``(B, groups, S, K, out)``.
- ``"index"`` (``nn.Embedding``): rows of a one-hot ``A``, given by their indices ``(B, S)``
  (``-1`` where the gradient is zero: ``padding_idx``).
- ``"direct"`` (``LayerNorm``, ``GroupNorm``, ``BatchNorm`` in eval mode): the affine
  parameters are small, so ``jacobian`` gives their per-example gradients ``(B, K, numel)``
  (``weight``: the normalised input times ``G`` summed over positions; ``bias``: ``G`` summed).

Anything a handler cannot factorise exactly (a subclass with its own forward, an input
without the batch axis first, a non-zero ``max_norm``) is refused with a reason, and the
parameters fall back to per-example Jacobians.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import DenseModule
from ._memory import empty

__all__ = ["HANDLERS", "Handler", "handler_for"]


class Handler:
    """Base: ``kind``, the module check, and the feature recorded from a call's input."""

    kind = ""

    def refuse(self, m: nn.Module) -> str | None:
        """Why this module instance is not supported (``None``: it is)."""
        return None

    def record(self, m: nn.Module, x: Tensor, n: int) -> Tensor | str:
        """The call's feature from its input ``x`` for ``n`` examples, or why it is refused."""
        raise NotImplementedError


def _batch_first(x: Tensor, n: int, ndim: int | None = None) -> str | None:
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] != n:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        return f"its input has shape {shape}, not (N, ...) with N = {n} examples first"
    if ndim is not None and x.ndim != ndim:
        return f"its input has {x.ndim} dimensions, expected {ndim}"
    return None


class _Dense(Handler):
    kind = "rows"

    def refuse(self, m):
        forward = DenseModule.forward if isinstance(m, DenseModule) else nn.Linear.forward
        if type(m).forward is not forward:
            return "it overrides forward"
        return None

    def record(self, m, x, n):
        reason = _batch_first(x, n)
        if reason:
            return reason
        return x.detach().reshape(n, 1, -1, x.shape[-1])

    def scales(self, m) -> tuple[float, float]:
        if isinstance(m, DenseModule):
            return float(m.weight_scale), float(m.bias_scale)
        return 1.0, 1.0

    def grads(self, m, g: Tensor) -> Tensor:
        b, k = g.shape[:2]
        return g.reshape(b, k, -1, g.shape[-1]).transpose(1, 2).unsqueeze(1)


class _Conv(_Dense):
    """``nn.Conv1d`` / ``nn.Conv2d`` (any stride, padding, dilation, groups, padding mode)."""

    def refuse(self, m):
        base = nn.Conv1d if isinstance(m, nn.Conv1d) else nn.Conv2d
        if type(m).forward is not base.forward or type(m)._conv_forward is not base._conv_forward:
            return "it overrides forward"
        return None

    def record(self, m, x, n):
        reason = _batch_first(x, n, ndim=len(m.kernel_size) + 2)
        if reason:
            return reason
        mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        x = F.pad(x.detach(), m._reversed_padding_repeated_twice, mode=mode)
        k, s, d = m.kernel_size, m.stride, m.dilation
        if x.ndim == 3:  # Conv1d as a 1 x L image
            x, k, s, d = x.unsqueeze(2), (1, *k), (1, *s), (1, *d)
        # Channels last, then every patch as a strided view and one copy: each patch row
        # ``(k_w, C_in / groups)`` is one contiguous run when groups = 1. (Columns in the
        # order (k_h, k_w, channel) rather than the weight's (channel, k_h, k_w): only inner
        # products of columns are taken. F.unfold is ~50x slower on CPU here, and patches
        # gathered channels first ~6x: 10.5 ms against 1.6 for 256 examples of 32 x 8 x 8.)
        x = x.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C_in)
        b, h, w, c = x.shape
        g = m.groups
        out_h = (h - d[0] * (k[0] - 1) - 1) // s[0] + 1
        out_w = (w - d[1] * (k[1] - 1) - 1) // s[1] + 1
        view = x.as_strided((b, out_h, out_w, g, k[0], k[1], c // g),
                            (h * w * c, s[0] * w * c, s[1] * c, c // g, d[0] * w * c, d[1] * c,
                             1))
        rows = out_h * out_w
        patches = empty((b, rows, g, k[0] * k[1] * (c // g)), x)
        patches.view(view.shape).copy_(view)
        return patches.transpose(1, 2)  # (B, groups, S, k_h * k_w * C_in / groups)

    def scales(self, m):
        return 1.0, 1.0

    def grads(self, m, g):
        b, k = g.shape[:2]
        g = g.reshape(b, k, m.groups, m.out_channels // m.groups, -1)
        return g.permute(0, 2, 4, 1, 3)


class _Embedding(Handler):
    kind = "index"

    def refuse(self, m):
        if type(m).forward is not nn.Embedding.forward:
            return "it overrides forward"
        if m.max_norm is not None or m.scale_grad_by_freq or m.sparse:
            return "max_norm, scale_grad_by_freq and sparse are not factorised"
        return None

    def record(self, m, x, n):
        if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] != n:
            return f"its input does not have N = {n} examples first"
        idx = x.detach().reshape(n, -1).clone()
        if m.padding_idx is not None:
            idx[idx == m.padding_idx] = -1  # no gradient flows to the padding row
        return idx

    def grads(self, m, g):
        b, k = g.shape[:2]
        return g.reshape(b, k, -1, g.shape[-1]).transpose(1, 2).unsqueeze(1)


class _Norm(Handler):
    """Affine parameters of a normalisation: per-channel (dim 1) or trailing shape."""

    kind = "direct"

    def refuse(self, m):
        base = _BatchNorm if isinstance(m, _BatchNorm) else type(m)
        if type(m).forward is not base.forward:
            return "it overrides forward"
        return None

    def record(self, m, x, n):
        reason = _batch_first(x, n)
        if reason:
            return reason
        x = x.detach()
        if isinstance(m, nn.LayerNorm):
            return F.layer_norm(x, m.normalized_shape, None, None, m.eps)
        if isinstance(m, nn.GroupNorm):
            return F.group_norm(x, m.num_groups, None, None, m.eps)
        return F.batch_norm(x, m.running_mean, m.running_var, None, None, False, 0.0, m.eps)

    def jacobian(self, m, xhat: Tensor, g: Tensor, role: str) -> Tensor:
        """``(B, K, numel)`` per-example gradient of ``role`` (``weight`` or ``bias``)."""
        b, k = g.shape[:2]
        prod = g * xhat.unsqueeze(1) if role == "weight" else g
        if isinstance(m, nn.LayerNorm):
            width = m.weight.numel() if m.weight is not None else m.bias.numel()
            return prod.reshape(b, k, -1, width).sum(2)
        return prod.reshape(b, k, prod.shape[2], -1).sum(3)


_DENSE, _CONV, _EMBEDDING, _NORM = _Dense(), _Conv(), _Embedding(), _Norm()
HANDLERS: tuple[tuple[type, Handler], ...] = (
    (nn.Linear, _DENSE), (DenseModule, _DENSE), (nn.Conv1d, _CONV), (nn.Conv2d, _CONV),
    (nn.Embedding, _EMBEDDING), (nn.LayerNorm, _NORM), (nn.GroupNorm, _NORM),
    (_BatchNorm, _NORM),
)


def handler_for(m: nn.Module) -> Handler | None:
    """The handler of ``m``'s type, if it supports this instance and its parameters."""
    for cls, handler in HANDLERS:
        if isinstance(m, cls):
            if not set(m._parameters) <= {"weight", "bias"} or handler.refuse(m):
                return None
            return handler
    return None
