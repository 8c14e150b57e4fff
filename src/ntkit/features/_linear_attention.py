"""Kernelized (linear) attention: ``phi(Q) (phi(K)^T V)`` in time linear in sequence length.

Softmax attention weights query ``i`` against key ``j`` by ``kappa(q_i, k_j) =
exp(q_i . k_j / sqrt(d))``; with a feature map ``phi`` such that ``kappa(q, k) ~ phi(q) .
phi(k)`` the output ``sum_j kappa(q_i, k_j) v_j / sum_j kappa(q_i, k_j)`` is
``phi(q_i) (phi(K)^T V) / phi(q_i) (phi(K)^T 1)``: ``O(L m d)`` instead of ``O(L^2 d)``
(Katharopoulos et al., "Transformers are RNNs", ICML 2020, Eq. 5-6). The causal version
replaces the two sums by prefix sums (their Eq. 8-9), computed here chunk by chunk so that
memory stays ``O(L m + chunk^2)``. Feature maps: FAVOR+ positive random features for the
softmax kernel itself (Choromanski et al. 2021) and ``elu(x) + 1`` (Katharopoulos et al.).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .._checks import all_finite
from .._random import torch_generator
from ._favor import gaussian_projection, positive_random_features

__all__ = ["LinearAttention", "linear_attention"]

_KERNELS = ("softmax", "elu")


def linear_attention(q: Tensor, k: Tensor, v: Tensor, *, feature_map: Callable[[Tensor], Tensor],
                     causal: bool = False, chunk_size: int = 128) -> Tensor:
    """Attention with weights ``phi(q_i) . phi(k_j)``, normalised over the keys.

    ``out_i = sum_j (phi(q_i) . phi(k_j)) v_j / sum_j phi(q_i) . phi(k_j)``, the sums over
    all keys, or over ``j <= i`` when ``causal``; computed as ``phi(Q) (phi(K)^T V)`` with the
    normaliser ``phi(Q) (phi(K)^T 1)``, never forming the ``(L, L)`` weights (causal: prefix
    sums, one ``(chunk, chunk)`` masked block at a time).

    **Arguments:**

    - ``q``: ``(..., L, d)``; ``k``: ``(..., S, d)``; ``v``: ``(..., S, e)``, equal leading
      axes; causal needs ``S == L``.
    - ``feature_map``: ``(..., n, d)`` -> ``(..., n, m)`` with positive values (applied to
      ``q`` and to ``k``), e.g. ``lambda x: F.elu(x) + 1``.
    - ``causal``: query ``i`` attends to keys ``0..i`` only.
    - ``chunk_size``: block length of the causal prefix sums, ``>= 1``.

    **Returns:** ``(..., L, e)``.

    Example:
        >>> q, k, v = torch.randn(2, 5, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 3)
        >>> out = linear_attention(q, k, v, feature_map=lambda x: torch.ones_like(x))
        >>> torch.allclose(out, v.mean(-2, keepdim=True).expand(2, 5, 3), atol=1e-6)
        True
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.ndim < 2:
            raise TypeError(f"{name} must be a floating-point tensor of shape (..., n, dim); "
                            f"got {type(t).__name__} {getattr(t, 'shape', '')}")
    if k.shape[:-1] != v.shape[:-1] or q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"shapes must be q (..., L, d), k (..., S, d), v (..., S, e); got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(f"causal attention needs as many queries as keys; got "
                         f"{q.shape[-2]} and {k.shape[-2]}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")
    return _attend(feature_map(q), feature_map(k), v, causal=causal, chunk=chunk_size)


def _attend(phi_q: Tensor, phi_k: Tensor, v: Tensor, *, causal: bool, chunk: int) -> Tensor:
    """``phi(Q) (phi(K)^T V) / phi(Q) (phi(K)^T 1)`` from the features, ``(..., L, e)``."""
    if not causal:
        kv = phi_k.transpose(-1, -2) @ v                       # (..., m, e)
        norm = phi_q @ phi_k.sum(-2).unsqueeze(-1)             # (..., L, 1)
        return (phi_q @ kv) / norm
    return _causal(phi_q, phi_k, v, chunk)


def _causal(phi_q: Tensor, phi_k: Tensor, v: Tensor, chunk: int) -> Tensor:
    lead, n, m, e = phi_q.shape[:-2], phi_q.shape[-2], phi_q.shape[-1], v.shape[-1]
    state = phi_q.new_zeros(*lead, m, e)      # sum over earlier chunks of phi(k_j) v_j^T
    total = phi_q.new_zeros(*lead, m, 1)      # sum over earlier chunks of phi(k_j)
    out = []
    for s in range(0, n, chunk):
        fq, fk, vv = phi_q[..., s:s + chunk, :], phi_k[..., s:s + chunk, :], v[..., s:s + chunk, :]
        scores = torch.tril(fq @ fk.transpose(-1, -2))        # keys j <= i inside the chunk
        numerator = fq @ state + scores @ vv
        denominator = fq @ total + scores.sum(-1, keepdim=True)
        out.append(numerator / denominator)
        state = state + fk.transpose(-1, -2) @ vv
        total = total + fk.sum(-2).unsqueeze(-1)
    return torch.cat(out, dim=-2)


class LinearAttention(nn.Module):
    """Multi-head attention in ``O(L m d)``, a drop-in for ``nn.MultiheadAttention``
    (``batch_first=True``) whose softmax is replaced by a kernel feature map.

    Projections as ``nn.MultiheadAttention``: ``q, k, v = x W_q^T + b_q, ...`` split into
    ``num_heads`` heads of ``head_dim = embed_dim / num_heads``, attention per head
    (:func:`linear_attention`), heads concatenated and projected by ``out_proj``.

    - ``kernel="softmax"``: FAVOR+ (Choromanski et al. 2021): ``phi`` are positive random
      features of ``x / head_dim^(1/4)``, so that ``phi(q) . phi(k)`` is unbiased for softmax
      attention's ``exp(q . k / sqrt(head_dim))``; the output approximates softmax attention
      with the same projections, error falling like ``m^(-1/2)``. One projection of
      ``n_components`` rows (orthogonal blocks by default) is shared by all heads, drawn at
      construction (:meth:`redraw` draws a new one).
    - ``kernel="elu"``: ``phi(x) = elu(x) + 1`` (Katharopoulos et al. 2020), deterministic,
      a different attention (not an approximation of softmax); ``n_components`` unused.

    **Arguments:**

    - ``embed_dim``, ``num_heads``: ``embed_dim`` divisible by ``num_heads``.
    - ``n_components``: ``m`` for the softmax kernel, ``>= 1``; default
      ``head_dim * ceil(log(head_dim))`` (Theorem 4 of Choromanski et al. asks for
      ``m = O(d log d)``).
    - ``kernel``: ``"softmax"`` or ``"elu"``; ``causal``: mask keys after the query.
    - ``orthogonal``: orthogonal random features (softmax kernel).
    - ``bias``, ``device``, ``dtype``: of the projections, as ``nn.MultiheadAttention``.
    - ``random_state``: ``None``, an ``int`` or a ``torch.Generator`` for the projection.

    **Returns** (``forward(query, key=None, value=None)``): ``(B, L, E)`` from ``query``
    ``(B, L, E)``, ``key`` and ``value`` ``(B, S, E)`` (default: ``query``); the attention
    weights are never formed, so unlike ``nn.MultiheadAttention`` only the output is returned.

    Example:
        >>> attn = LinearAttention(16, 2, n_components=32, random_state=0)
        >>> attn(torch.randn(3, 10, 16)).shape
        torch.Size([3, 10, 16])
    """

    def __init__(self, embed_dim: int, num_heads: int, *, n_components: int | None = None,
                 kernel: str = "softmax", causal: bool = False, orthogonal: bool = True,
                 bias: bool = True, random_state: int | torch.Generator | None = None,
                 chunk_size: int = 128, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim must be divisible by num_heads; got embed_dim="
                             f"{embed_dim}, num_heads={num_heads}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")
        if kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {_KERNELS}; got {kernel!r}")
        head_dim = embed_dim // num_heads
        if kernel == "elu" and n_components is not None:
            raise ValueError("n_components is used by kernel='softmax' only; leave it None "
                             "for kernel='elu'")
        if n_components is None and kernel == "softmax":
            n_components = head_dim * max(1, math.ceil(math.log(head_dim)))
        if kernel == "softmax" and (isinstance(n_components, bool)
                                    or not isinstance(n_components, int) or n_components < 1):
            raise ValueError(f"n_components must be a positive int; got {n_components!r}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.n_components, self.kernel, self.causal = n_components, kernel, bool(causal)
        self.orthogonal, self.chunk_size = bool(orthogonal), chunk_size
        factory = {"device": device, "dtype": dtype}
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.register_buffer("projection", None)
        if kernel == "softmax":
            self.redraw(random_state)

    def redraw(self, random_state: int | torch.Generator | None = None) -> None:
        """Draw a new ``(n_components, head_dim)`` random projection (softmax kernel)."""
        if self.kernel != "softmax":
            raise ValueError("redraw is for kernel='softmax' only")
        w = self.q_proj.weight
        self.projection = gaussian_projection(
            self.n_components, self.head_dim, orthogonal=self.orthogonal,
            generator=torch_generator(random_state), dtype=w.dtype, device=w.device)

    def feature_map(self, x: Tensor, *, query: bool = False) -> Tensor:
        """``(..., n, head_dim)`` -> ``(..., n, m)``: the map applied to queries and keys.

        Softmax kernel: exact FAVOR+ features up to a positive factor, one per query row
        (``query=True``) or one per leading index for keys, that cancels between the
        numerator and the normaliser of attention and keeps long sequences from
        overflowing (Choromanski et al. stabilise the same way)."""
        if self.kernel == "elu":
            return nn.functional.elu(x) + 1
        # exp(q.k / sqrt(d)) = exp((q d^-1/4) . (k d^-1/4)).
        x = x * self.head_dim**-0.25
        w = self.projection.to(x.dtype)
        if not query:
            return positive_random_features(x, w, stabilize=True)
        exponent = x @ w.T
        return torch.exp(exponent - exponent.amax(-1, keepdim=True).detach())

    def forward(self, query: Tensor, key: Tensor | None = None,
                value: Tensor | None = None) -> Tensor:
        key = query if key is None else key
        value = key if value is None else value
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.ndim != 3 or t.shape[-1] != self.embed_dim:
                raise ValueError(f"{name} must have shape (batch, length, {self.embed_dim}); "
                                 f"got {tuple(t.shape)}")
            if not all_finite(t):
                raise ValueError(f"{name} contains NaN or infinite values")
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise ValueError(f"query (B, L, E), key and value (B, S, E) must agree; got "
                             f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
        q, k, v = (self._heads(p(t)) for p, t in ((self.q_proj, query), (self.k_proj, key),
                                                  (self.v_proj, value)))
        out = _attend(self.feature_map(q, query=True), self.feature_map(k), v,
                      causal=self.causal, chunk=self.chunk_size)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.embed_dim))

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"kernel={self.kernel!r}, n_components={self.n_components}, "
                f"causal={self.causal}")
