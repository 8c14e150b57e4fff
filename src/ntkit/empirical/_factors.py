"""What one call of a module contributes to the per-example parameter gradients, and the
open registry of module types that ``strategy="structured"`` factorises.

A handler reads a module's input (in a forward hook) and, with the gradients ``G`` of the
outputs ``f_o`` at the module's output, gives its ``weight`` and ``bias`` per-example
gradients in one of three factorised forms (``kind``):

- ``"rows"`` (``nn.Linear``, ntkit ``DenseModule``, ``nn.Conv1d/2d``, ntkit ``ConvModule``):
  the gradient of a weight is ``sum_s a_s g_s^T`` over rows ``s`` (positions of a sequence,
  patches of a convolution) and that of a bias ``sum_s g_s``, i.e. a bias is a column of ones
  in ``a``.
- ``"index"`` (``nn.Embedding``): rows of a one-hot ``a``, given by their indices.
- ``"direct"`` (``LayerNorm``, ``GroupNorm``, ``BatchNorm`` in eval mode): the affine
  parameters are small, so the handler gives their per-example gradients.

Anything a handler cannot factorise exactly (a subclass with its own forward, an input
without the batch axis first, a non-zero ``max_norm``) is refused with a reason, and the
parameters fall back to per-example Jacobians.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

import torch.nn.functional as F
from torch import Tensor, nn

from .._alloc import empty
from ..layers import ConvModule, DenseModule

__all__ = ["CONV_HANDLER", "KINDS", "StructuredHandler", "handler_for", "register_structured"]

KINDS = ("rows", "index", "direct")


class StructuredHandler:
    """How ``strategy="structured"`` factorises the ``weight`` and ``bias`` of one module type.

    Subclass it, set ``kind``, implement the methods of that kind, and register an instance
    for a module type with :func:`register_structured`. The module's own parameters must be
    named ``weight`` and/or ``bias`` (others make the module fall back to per-example
    Jacobians). Below, ``n`` or ``B`` is the number of examples of a forward pass, ``K`` the
    model's output units, and ``g`` the gradients of the ``K`` outputs at the module's
    output, ``(B, K, *out)`` for an output ``(B, *out)``.

    - ``kind = "rows"``: the module computes ``z_s = w_scale W a_s + b_scale b`` for rows
      ``s`` of each example (``S = 1`` for a plain linear map), with ``W`` split into
      ``groups`` blocks of ``(out, in)`` (``groups = 1`` unless channels are grouped).
      ``record`` returns the rows ``a`` as ``(B, groups, S, in)``, ``grads`` the matching
      ``dL/dz_s`` as ``(B, groups, S, K, out)``, ``scales`` the pair ``(w_scale, b_scale)``.
      The columns of ``a`` may be any fixed permutation of ``W``'s inputs (only inner
      products of rows are taken).
    - ``kind = "index"``: the output row ``s`` is row ``i_s`` of ``weight``. ``record``
      returns the indices ``(B, S)`` (``-1`` where no gradient flows), ``grads`` the rows'
      gradients ``(B, 1, S, K, width)``.
    - ``kind = "direct"``: ``record`` returns any per-call feature (a tensor), and
      ``jacobian(m, feature, g, role)`` the per-example gradients ``(B, K, numel)`` of the
      parameter ``role`` (``"weight"`` or ``"bias"``).

    ``refuse`` and ``record`` may return a string instead: the reason why this module
    instance or call is not factorised (its parameters then fall back). ``check`` may
    verify, on the planning pass over two examples, that the recorded factors reproduce the
    module's output (a reason if not).

    A module whose linear map sits inside its forward (``nn.MultiheadAttention``: the input
    projection, then attention) overrides ``split``, which recomputes the call so that the
    map's output ``z`` is a tensor of its own: ``g`` is then taken at ``z``, and the
    recomputed output replaces the module's. ``parameters`` maps the module's own
    parameter names to the roles ``"weight"`` and ``"bias"``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from ntkit.empirical import StructuredHandler, empirical_ntk, register_structured
        >>> class Scaled(nn.Module):  # y = 2 x W^T
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.weight = nn.Parameter(torch.randn(2, 3, dtype=torch.float64))
        ...     def forward(self, x):
        ...         return 2.0 * x @ self.weight.T
        >>> @register_structured(Scaled)
        ... class ScaledHandler(StructuredHandler):
        ...     kind = "rows"
        ...     def record(self, m, x, n):
        ...         return x.detach().reshape(n, 1, 1, x.shape[-1])
        ...     def grads(self, m, g):
        ...         return g.reshape(g.shape[0], g.shape[1], 1, -1).transpose(1, 2)[:, None]
        ...     def scales(self, m):
        ...         return 2.0, 1.0
        >>> x = torch.randn(4, 3, dtype=torch.float64)
        >>> model = Scaled()
        >>> bool(torch.allclose(empirical_ntk(model, x, strategy="structured"),
        ...                     empirical_ntk(model, x, strategy="jacobian")))
        True
    """

    kind: ClassVar[str] = ""
    parameters: ClassVar[dict[str, str]] = {"weight": "weight", "bias": "bias"}

    def refuse(self, m: nn.Module) -> str | None:
        """Why this module instance is not supported (``None``: it is)."""
        return None

    def record(self, m: nn.Module, x: Tensor, n: int) -> Tensor | str:
        """The call's feature from its first input ``x`` for ``n`` examples, or why it is
        refused."""
        raise NotImplementedError

    def split(self, m: nn.Module, args: tuple, kwargs: dict,
              output) -> tuple[Tensor, Tensor, object] | str | None:
        """``None`` (the default): the module's output is the linear map's. Else the call
        recomputed from its arguments as ``(x, z, output)``: the input ``x`` whose rows
        ``record`` reads, the map's output ``z`` (batch first) and the module's output
        computed from ``z``; or why this call is not factorised."""
        return None

    def check(self, m: nn.Module, feature: Tensor, output: Tensor) -> str | None:
        """Why the factors of a call do not reproduce its ``output`` (``None``: they do)."""
        return None

    def scales(self, m: nn.Module) -> tuple[float, float]:
        """``"rows"``: the factors ``(w_scale, b_scale)`` applied to ``weight`` and ``bias``."""
        return 1.0, 1.0

    def grads(self, m: nn.Module, g: Tensor) -> Tensor:
        """``"rows"``/``"index"``: ``g (B, K, *out)`` as ``(B, groups, S, K, out)``."""
        raise NotImplementedError

    def jacobian(self, m: nn.Module, feature: Tensor, g: Tensor, role: str) -> Tensor:
        """``"direct"``: the per-example gradients ``(B, K, numel)`` of ``role``."""
        raise NotImplementedError


_REGISTRY: dict[type, StructuredHandler] = {}
H = TypeVar("H")


def register_structured(module_type: type, handler=None):
    """Make ``strategy="structured"`` (and ``"auto"``) factorise modules of ``module_type``.

    **Arguments:**

    - ``module_type``: a subclass of ``torch.nn.Module``. Its subclasses use the handler too
      unless they are registered themselves (the nearest registered class in the method
      resolution order wins); registering a type again replaces its handler.
    - ``handler``: a :class:`StructuredHandler` instance; omitted, ``register_structured``
      returns a decorator for a handler class (instantiated without arguments) or instance.

    **Returns:** ``handler`` (the decorated class, for the decorator).

    Example:
        >>> from torch import nn
        >>> from ntkit.empirical import StructuredHandler, register_structured
        >>> class Doubled(nn.Linear):  # its forward is nn.Linear's: the rows handler applies
        ...     pass
        >>> class DoubledHandler(StructuredHandler):
        ...     kind = "rows"
        >>> handler = register_structured(Doubled, DoubledHandler())
        >>> isinstance(handler, DoubledHandler)
        True
        >>> register_structured(int, handler)
        Traceback (most recent call last):
        ...
        TypeError: module_type must be a subclass of torch.nn.Module; got <class 'int'>
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be a subclass of torch.nn.Module; got "
                        f"{module_type!r}")
    if handler is None:
        def decorate(h: H) -> H:
            register_structured(module_type, h() if isinstance(h, type) else h)
            return h

        return decorate
    if not isinstance(handler, StructuredHandler):
        raise TypeError(f"handler must be a StructuredHandler instance; got "
                        f"{type(handler).__name__}")
    if handler.kind not in KINDS:
        raise ValueError(f"handler.kind must be one of {KINDS}; got {handler.kind!r}")
    _REGISTRY[module_type] = handler
    return handler


def _handler_of(module_type: type) -> StructuredHandler | None:
    """The handler registered for ``module_type`` or its nearest registered base class."""
    for cls in module_type.__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def handler_for(m: nn.Module) -> StructuredHandler | None:
    """The handler of ``m``'s type, if it supports this instance and its parameters."""
    handler = _handler_of(type(m))
    if handler is None:
        return None
    own = {name for name, _ in m.named_parameters(recurse=False, remove_duplicate=False)}
    if not own <= set(handler.parameters) or handler.refuse(m):
        return None
    return handler


def _same_forward(m: nn.Module, *bases: type) -> str | None:
    """A reason if ``m`` overrides the forward of the first of ``bases`` that it is."""
    base = next(b for b in bases if isinstance(m, b))
    if type(m).forward is not base.forward:
        return "it overrides forward"
    return None


def _batch_first(x: Tensor, n: int, ndim: int | None = None) -> str | None:
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] != n:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        return f"its input has shape {shape}, not (N, ...) with N = {n} examples first"
    if ndim is not None and x.ndim != ndim:
        return f"its input has {x.ndim} dimensions, expected {ndim}"
    return None


def _scales(m: nn.Module) -> tuple[float, float]:
    """ntkit twins scale their standard-normal parameters in ``forward``; torch's do not."""
    return float(getattr(m, "weight_scale", 1.0)), float(getattr(m, "bias_scale", 1.0))


class _Dense(StructuredHandler):
    kind = "rows"

    def refuse(self, m):
        return _same_forward(m, DenseModule, nn.Linear)

    def record(self, m, x, n):
        reason = _batch_first(x, n)
        if reason:
            return reason
        return x.detach().reshape(n, 1, -1, x.shape[-1])

    def scales(self, m):
        return _scales(m)

    def grads(self, m, g: Tensor) -> Tensor:
        b, k = g.shape[:2]
        return g.reshape(b, k, -1, g.shape[-1]).transpose(1, 2).unsqueeze(1)


def _tuple(value, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),) * n


class _Conv(StructuredHandler):
    """``nn.Conv1d`` / ``nn.Conv2d`` and ntkit's ``ConvModule`` (any stride, padding,
    dilation, groups, padding mode), read from their public attributes."""

    kind = "rows"

    def refuse(self, m):
        if isinstance(m, ConvModule):
            if not 1 <= len(m.kernel_size) <= 2:
                return (f"its kernel size {m.kernel_size!r} is not that of a 1-D or 2-D "
                        f"convolution")
            return _same_forward(m, ConvModule)
        return _same_forward(m, nn.Conv1d, nn.Conv2d)

    def record(self, m, x, n):
        k = tuple(m.kernel_size)
        reason = _batch_first(x, n, ndim=len(k) + 2)
        if reason:
            return reason
        x = x.detach()
        if isinstance(m, ConvModule):
            x = m.pad(x)  # exactly as its forward pads (JAX's split, at any stride)
        else:
            pad, mode = _padding(m)
            if not all(isinstance(p, int) for p in pad):
                return f"its padding {m.padding!r} is not understood"
            if any(pad):
                x = F.pad(x, pad, mode=mode)
        s = _tuple(m.stride, len(k))
        d = _tuple(m.dilation, len(k))
        if x.ndim == 3:  # Conv1d as a 1 x L image
            x, k, s, d = x.unsqueeze(2), (1, *k), (1, *s), (1, *d)
        # Channels last, then every patch as a strided view and one copy: each patch row
        # ``(k_w, C_in / groups)`` is one contiguous run when groups = 1. (Columns in the
        # order (k_h, k_w, channel) rather than the weight's (channel, k_h, k_w): only inner
        # products of columns are taken. F.unfold and patches gathered channels first are
        # several times slower on CPU.)
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
        return _scales(m)

    def grads(self, m, g):
        b, k, c = g.shape[:3]
        groups = m.groups
        g = g.reshape(b, k, groups, c // groups, -1)
        return g.permute(0, 2, 4, 1, 3)


def _padding(m: nn.Module) -> tuple[list[int], str]:
    """``F.pad`` amounts (last axis first, ``(lo, hi)`` each) and mode of a torch convolution:
    ``padding`` ints (both sides), ``"valid"`` or ``"same"`` (stride 1; an odd total puts the
    extra entry after, as ``nn.Conv2d`` does)."""
    k = tuple(m.kernel_size)
    d = _tuple(m.dilation, len(k))
    mode = {"zeros": "constant"}.get(m.padding_mode, m.padding_mode)
    pairs = []
    for i in range(len(k)):
        span = d[i] * (k[i] - 1)
        if m.padding == "same":
            pairs.append((span // 2, span - span // 2))
        elif m.padding == "valid":
            pairs.append((0, 0))
        else:
            p = _tuple(m.padding, len(k))[i]
            pairs.append((p, p))
    return [v for lo, hi in reversed(pairs) for v in (lo, hi)], mode


class _Embedding(StructuredHandler):
    kind = "index"

    def refuse(self, m):
        if m.max_norm is not None or m.scale_grad_by_freq or m.sparse:
            return "max_norm, scale_grad_by_freq and sparse are not factorised"
        return _same_forward(m, nn.Embedding)

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


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _Norm(StructuredHandler):
    """Affine parameters of a normalisation: per-channel (dim 1) or trailing shape."""

    kind = "direct"

    def refuse(self, m):
        return _same_forward(m, nn.LayerNorm, nn.GroupNorm, *_BATCH_NORMS)

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

    def jacobian(self, m, feature: Tensor, g: Tensor, role: str) -> Tensor:
        b, k = g.shape[:2]
        prod = g * feature.unsqueeze(1) if role == "weight" else g
        if isinstance(m, nn.LayerNorm):
            width = m.weight.numel() if m.weight is not None else m.bias.numel()
            return prod.reshape(b, k, -1, width).sum(2)
        return prod.reshape(b, k, prod.shape[2], -1).sum(3)


CONV_HANDLER = _Conv()
_DENSE, _EMBEDDING, _NORM = _Dense(), _Embedding(), _Norm()
for _types, _handler in (((nn.Linear, DenseModule), _DENSE),
                         ((nn.Conv1d, nn.Conv2d, ConvModule), CONV_HANDLER),
                         ((nn.Embedding,), _EMBEDDING),
                         ((nn.LayerNorm, nn.GroupNorm, *_BATCH_NORMS), _NORM)):
    for _type in _types:
        register_structured(_type, _handler)
