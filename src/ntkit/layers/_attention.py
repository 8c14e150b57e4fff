"""Global self-attention over positions: its infinite-width NNGP/NTK and its finite twin.

Hron, Bahri, Sohl-Dickstein & Novak, "Infinite attention: NNGP and NTK for deep attention
networks" (ICML 2020), in the conventions of neural-tangents' ``stax.GlobalSelfAttention``
(NTK parametrization, standard-normal parameters scaled in the forward pass). Inputs are
channels first, ``(N, C, *S)``, positions flattened to ``P = prod(S)``. For one head ``h``:

    f_h(x) = mechanism(QK_std / (C n_key^a) Q_h(x) K_h(x)^T) V_h(x),
    f(x) = OV_std / sqrt(n_val H C_val) concat_h[f_h(x)] W_out + b_std b,

with ``QK_std = W_query_std W_key_std``, ``OV_std = W_out_std W_value_std``,
``Q_h(x) = x W_Q^h``, ``K_h(x) = x W_K^h``, ``V_h(x) = x W_V^h`` and the mechanism applied
over keys (softmax over the last axis).

- ``linear_scaling=True``: ``a = 1`` and queries tied to keys (``W_Q = W_K``). The
  attention weights converge to ``G = mechanism(QK_std K~(x))`` of the input's own
  position covariance ``K~``, so (the paper's Theorem 3 with tied weights)
  ``K'(x, x') = OV_std^2 G(x) K(x, x') G(x')^T + b_std^2`` and
  ``Theta' = OV_std^2 G(x) Theta G(x')^T + 2 (K' - b_std^2) + b_std^2`` (the value and
  output weights each give ``K' - b_std^2``; the keys' contribution vanishes).
- ``linear_scaling=False``: ``a = 1/2``, independent queries and keys. With the identity
  mechanism the limit is closed form (neural-tangents' ``IDENTITY`` branch, implemented
  here); with softmax its NNGP is an integral over the Gaussian attention logits with no
  known closed form, which neural-tangents does not compute either: the kernel raises
  ``NotImplementedError`` and the finite twin (Monte Carlo) is the way to it.

Positional embeddings (``pos_emb_type`` ``"sum"`` or ``"concat"``): random ``N(0, 1)``
embeddings of covariance ``R`` between positions (``R = decay(|p - p'|_p^p)``, or the
identity when ``pos_emb_decay_fn`` is ``None``), scaled by ``W_pos_emb_std``; keys and
queries always see them, values only with ``val_pos_emb``. In the kernel they replace
``K`` by ``w_in K + w_pe R`` (``w_pe = W_pos_emb_std^2``, both weighted by their share of
the channels for ``"concat"``).

Masked positions (``spec.kernel(..., mask_constant=c)``, see ``ntkit.layers._mask``), as
neural-tangents masks them: masked keys get no weight (softmax logits ``-inf``, other
mechanisms ``0``), positional embeddings are zero there (their ``R`` rows and columns
too), and the outputs at masked queries are zero (the layer's kernel is remasked).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass

import torch
from torch import Tensor, nn

from .._checks import positive_int, real_number
from ..kernel import Kernel, restore_diagonal
from ._base import Layer, fresh_token
from ._mask import check_mask, remask, zero_masked
from ._serialize import register_layer
from ._spatial import check_full

__all__ = ["SelfAttention", "SelfAttentionModule"]

_MECHANISMS = {
    "softmax": lambda t: torch.softmax(t, dim=-1),
    "identity": lambda t: t,
    "relu": torch.relu,
    "abs": torch.abs,
}
_POS_EMB = ("none", "sum", "concat")


@register_layer(fields={"n_heads": "width", "n_chan_out": "width", "n_chan_key": "width",
                        "n_chan_val": "width", "linear_scaling": "bool",
                        "W_key_std": "real", "W_value_std": "real", "W_query_std": "real",
                        "W_out_std": "real", "b_std": "real or null",
                        "attention_mechanism": "string", "pos_emb_type": "string",
                        "pos_emb_p_norm": "real", "pos_emb_decay_fn": "function or null",
                        "n_chan_pos_emb": "width", "W_pos_emb_std": "real",
                        "val_pos_emb": "bool"},
                required=("n_heads",))
@dataclass(frozen=True)
class SelfAttention(Layer):
    """Global scaled dot-product self-attention over all positions (neural-tangents'
    ``GlobalSelfAttention``; see the module documentation for the formulas).

    **Arguments:**

    - ``n_heads``: heads of the finite twin; ``n_chan_out``, ``n_chan_key``,
      ``n_chan_val``: its output, key/query and value widths. The kernel is the limit of
      all four going to infinity and does not depend on them.
    - ``linear_scaling``: ``True`` (default): logits scaled by ``1 / n_chan_key`` and queries
      tied to keys (closed-form kernel); ``False``: ``1 / sqrt(n_chan_key)`` and independent
      queries (closed form only for ``attention_mechanism="identity"``).
    - ``W_key_std``, ``W_query_std`` (only their product matters), ``W_value_std``,
      ``W_out_std`` (likewise), ``b_std`` (``None``: no bias).
    - ``attention_mechanism``: ``"softmax"`` (over keys), ``"identity"``, ``"relu"`` or
      ``"abs"``.
    - ``pos_emb_type``: ``"none"``, ``"sum"`` (added to the inputs) or ``"concat"``
      (appended as ``n_chan_pos_emb`` channels, default: as many as the inputs).
    - ``pos_emb_p_norm``, ``pos_emb_decay_fn``: the embeddings' covariance between positions
      ``p, p'`` is ``decay(sum_axes |p - p'|^p_norm)`` (a callable of a tensor; ``None``: the
      identity, independent positions). ``W_pos_emb_std``: their scale. ``val_pos_emb``:
      values see them too.

    Inputs are channels first, ``(N, C, *S)``; the output is ``(N, n_chan_out, *S)``.
    Padding tokens are masked with ``kernel(..., mask_constant=c)`` (finite twin:
    :func:`~ntkit.layers.masked_forward`).

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> net = L.serial(L.Conv(64, (1,)), L.SelfAttention(4, b_std=0.1), L.GlobalAvgPool())
        >>> k = net.kernel(torch.randn(3, 2, 5, dtype=torch.float64))
        >>> k.nngp.shape, bool((k.ntk.diagonal() > 0).all())
        (torch.Size([3, 3]), True)
    """

    n_heads: int
    _: KW_ONLY
    n_chan_out: int = 64
    n_chan_key: int = 64
    n_chan_val: int = 64
    linear_scaling: bool = True
    W_key_std: float = 1.0
    W_value_std: float = 1.0
    W_query_std: float = 1.0
    W_out_std: float = 1.0
    b_std: float | None = None
    attention_mechanism: str = "softmax"
    pos_emb_type: str = "none"
    pos_emb_p_norm: float = 2.0
    pos_emb_decay_fn: Callable[[Tensor], Tensor] | None = None
    n_chan_pos_emb: int | None = None
    W_pos_emb_std: float = 1.0
    val_pos_emb: bool = False

    def __post_init__(self):
        for name in ("n_heads", "n_chan_out", "n_chan_key", "n_chan_val"):
            object.__setattr__(self, name, positive_int(getattr(self, name), name))
        if self.n_chan_pos_emb is not None:
            object.__setattr__(self, "n_chan_pos_emb",
                               positive_int(self.n_chan_pos_emb, "n_chan_pos_emb"))
        for name in ("W_key_std", "W_value_std", "W_query_std", "W_out_std", "W_pos_emb_std"):
            object.__setattr__(self, name, real_number(getattr(self, name), name, minimum=0.0))
        object.__setattr__(self, "b_std",
                           real_number(self.b_std, "b_std", minimum=0.0, allow_none=True))
        object.__setattr__(self, "pos_emb_p_norm",
                           real_number(self.pos_emb_p_norm, "pos_emb_p_norm", minimum=0.0))
        for name in ("linear_scaling", "val_pos_emb"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False; got {getattr(self, name)!r}")
        if self.attention_mechanism not in _MECHANISMS:
            raise ValueError(f"attention_mechanism must be one of {tuple(_MECHANISMS)}; got "
                             f"{self.attention_mechanism!r}")
        if self.pos_emb_type not in _POS_EMB:
            raise ValueError(f"pos_emb_type must be one of {_POS_EMB}; got "
                             f"{self.pos_emb_type!r}")
        if self.pos_emb_decay_fn is not None and not callable(self.pos_emb_decay_fn):
            raise TypeError(f"pos_emb_decay_fn must be a callable of a tensor or None; got "
                            f"{self.pos_emb_decay_fn!r}")
        if self.pos_emb_type == "sum" and self.n_chan_pos_emb is not None:
            raise ValueError("n_chan_pos_emb applies to pos_emb_type='concat' only: summed "
                             "embeddings have the inputs' channels")

    def __repr__(self):
        return f"SelfAttention({self.n_heads}, linear_scaling={self.linear_scaling}, " \
               f"attention_mechanism={self.attention_mechanism!r}, " \
               f"pos_emb_type={self.pos_emb_type!r})"

    def plan(self, out_full):
        return self, True  # every output position mixes all input positions

    def mask_role(self):
        return "keep"  # masked keys get no weight, masked queries zero outputs

    def out_shape(self, in_shape):
        in_shape = self._one(in_shape)
        if len(in_shape) < 2:
            raise ValueError(
                f"SelfAttention acts on channels-first sequences (channels, *positions); got "
                f"per-example shape {tuple(in_shape)}: put it before Flatten/GlobalAvgPool, "
                f"or add a channel axis with x[:, None]"
            )
        return (self.n_chan_out, *in_shape[1:])

    # -- the kernel ---------------------------------------------------------------------
    def _weights(self, n_chan_in: int) -> tuple[float, float]:
        """The weights of the input kernel and of ``R`` in the keys' (and, with
        ``val_pos_emb``, values') input kernel."""
        w_in, w_pe = 1.0, self.W_pos_emb_std**2
        if self.pos_emb_type == "concat":
            n_pe = self.n_chan_pos_emb or n_chan_in
            w_in, w_pe = w_in * n_chan_in / (n_chan_in + n_pe), w_pe * n_pe / (n_chan_in + n_pe)
        return w_in, w_pe

    def kernel_fn(self, k: Kernel) -> Kernel:
        k = self._one(k)
        check_full(k, repr(self))
        sizes = k.shape1[2:]
        out_shape = self.out_shape(k.shape1[1:])
        if not self.linear_scaling and self.attention_mechanism != "identity":
            raise NotImplementedError(
                f"SelfAttention(linear_scaling=False, attention_mechanism="
                f"{self.attention_mechanism!r}) has no closed-form infinite-width kernel "
                f"(neural-tangents has none either): use linear_scaling=True, "
                f"attention_mechanism='identity', or Monte Carlo over the finite twin "
                f"(spec.module(...))"
            )
        p = math.prod(sizes)
        nb = 1 if k.diagonal else 2  # batch axes of nngp / ntk

        def flat(t: Tensor | None, batch: int) -> Tensor | None:
            return None if t is None else t.reshape(*t.shape[:batch], p, p)

        def unflat(t: Tensor) -> Tensor:
            return t.reshape(*t.shape[:-2], *sizes, *sizes)

        nngp, cov1, cov2 = flat(k.nngp, nb), flat(k.cov1, 1), flat(k.cov2, 1)
        ntk = k.ntk if k.ntk is None or k.ntk.ndim == 0 else flat(k.ntk, nb)
        w_in, w_pe = self._weights(k.shape1[1])
        r = None
        if self.pos_emb_type != "none":
            r = positional_covariance(sizes, self.pos_emb_p_norm, self.pos_emb_decay_fn,
                                      like=cov1)

        m1 = k.mask1
        m2 = m1 if k.mask2 is None or k.diagonal else k.mask2
        pos_cov = {}

        def embeddings(side: str) -> Tensor:
            """``R`` for the kernel array ``side`` (``"1"``: cov1, ``"2"``: cov2, ``"12"``:
            nngp/ntk); zero at masked positions, whose embeddings the twin zeroes too."""
            if m1 is None:
                return r
            if side not in pos_cov:
                if side == "12" and not k.diagonal:
                    pos_cov[side] = zero_masked(r.expand(len(m1), len(m2), p, p), m1, m2,
                                                pair=True)
                else:
                    m = m2 if side == "2" else m1
                    pos_cov[side] = zero_masked(r.expand(len(m), p, p), m, None, pair=False)
            return pos_cov[side]

        def interp(t: Tensor | None, side: str = "12") -> Tensor | None:
            if t is None or r is None:
                return t
            return w_in * t + w_pe * embeddings(side)

        def values(t: Tensor | None, side: str = "12") -> Tensor | None:  # values' input
            return interp(t, side) if self.val_pos_emb else t

        ob2, b2 = (self.W_out_std * self.W_value_std) ** 2, (self.b_std or 0.0) ** 2
        if self.linear_scaling:
            new = self._linear_scaling(nngp, ntk, cov1, cov2, interp, values, ob2, b2, k)
        else:
            new = self._identity(nngp, ntk, cov1, cov2, interp, values, ob2, b2, k)
        nngp, ntk, cov1, cov2 = new
        if k.x1_is_x2 and not k.diagonal:
            restore_diagonal(nngp, cov1)
        token = fresh_token()
        # Masked queries' outputs are zero (neural-tangents remasks this layer's kernel).
        return remask(k.replace(
            nngp=unflat(nngp), ntk=None if ntk is None else unflat(ntk), cov1=unflat(cov1),
            cov2=None if cov2 is None else unflat(cov2),
            shape1=(k.shape1[0], *out_shape), shape2=(k.shape2[0], *out_shape),
            is_gaussian=True, linear_in=frozenset({token}), depends_on=k.depends_on | {token},
        ))

    def _linear_scaling(self, nngp, ntk, cov1, cov2, interp, values, ob2, b2, k):
        mechanism = _MECHANISMS[self.attention_mechanism]
        qk = self.W_query_std * self.W_key_std

        def attention(cov: Tensor, side: str, mask: Tensor | None) -> Tensor:
            logits = qk * interp(cov, side)  # (N, P, P): queries by keys
            if mask is not None:  # masked keys get no weight
                fill = -math.inf if self.attention_mechanism == "softmax" else 0.0
                logits = logits.masked_fill(mask.flatten(1)[:, None, :], fill)
            return mechanism(logits)

        g1 = attention(cov1, "1", k.mask1)
        g2 = g1 if cov2 is None else attention(cov2, "2",
                                               k.mask1 if k.mask2 is None else k.mask2)

        def weigh(t: Tensor, left: Tensor, right: Tensor, pair: bool) -> Tensor:
            if pair:  # G(x_i) T_ij G(x'_j)^T
                return torch.einsum("iab,ijbc,jdc->ijad", left, t, right)
            return left @ t @ left.transpose(-1, -2)

        pair = not k.diagonal
        out = weigh(values(nngp), g1, g2, pair).mul_(ob2).add_(b2)
        c1 = weigh(values(cov1, "1"), g1, g1, False).mul_(ob2).add_(b2)
        c2 = None if cov2 is None else weigh(values(cov2, "2"), g2, g2, False).mul_(ob2).add_(b2)
        theta = None
        if ntk is not None:
            # Values and output weights: K' - b^2 each; the bias: b^2.
            theta = 2 * out - b2
            v_ntk = values(ntk) if ntk.ndim else (
                values(torch.zeros_like(nngp)) if self.val_pos_emb else None)
            if v_ntk is not None:
                theta = theta + ob2 * weigh(v_ntk, g1, g2, pair)
        return out, theta, c1, c2

    def _identity(self, nngp, ntk, cov1, cov2, interp, values, ob2, b2, k):
        # neural-tangents' IDENTITY branch (1/sqrt(n_key) scaling, independent Q and K):
        # the logits' covariance is the sum over positions of the key and value kernels.
        std2 = ob2 * (self.W_query_std * self.W_key_std) ** 2

        def dot(a: Tensor, b: Tensor) -> Tensor:
            return (a * b).sum((-2, -1), keepdim=True)

        n_i, c1_i, c2_i = interp(nngp), interp(cov1, "1"), interp(cov2, "2")
        d12 = dot(n_i, values(nngp))
        out = (std2 * d12 * n_i).add_(b2)
        c1 = (std2 * dot(c1_i, values(cov1, "1")) * c1_i).add_(b2)
        c2 = None if cov2 is None else (std2 * dot(c2_i, values(cov2, "2")) * c2_i).add_(b2)
        theta = None
        if ntk is not None:
            full = torch.zeros_like(nngp) if ntk.ndim == 0 else ntk
            t_i = interp(full)
            if self.val_pos_emb or self.pos_emb_type == "none":
                term = 2 * dot(n_i, t_i)
            else:
                term = dot(n_i, full) + dot(nngp, t_i)
            theta = (std2 * (term * n_i + d12 * (t_i + 4 * n_i))).add_(b2)
        return out, theta, c1, c2

    def build(self, in_shape, generator, dtype) -> nn.Module:
        return SelfAttentionModule(self, tuple(in_shape), generator=generator, dtype=dtype)


def positional_covariance(sizes: tuple[int, ...], p_norm: float,
                          decay_fn: Callable[[Tensor], Tensor] | None, *,
                          like: Tensor) -> Tensor:
    """``R`` ``(P, P)`` between the flattened positions of a grid ``sizes``:
    ``decay_fn(sum_axes |p_a - p'_a|^p_norm)``, or the identity when ``decay_fn`` is
    ``None`` (neural-tangents' ``_pos_emb_pdist``)."""
    p = math.prod(sizes)
    if decay_fn is None:
        return torch.eye(p, dtype=like.dtype, device=like.device)
    grid = torch.stack(torch.meshgrid(*(torch.arange(s, dtype=like.dtype, device=like.device)
                                        for s in sizes), indexing="ij"), -1).reshape(p, -1)
    dist = (grid[:, None] - grid[None]).abs().pow(p_norm).sum(-1)
    return decay_fn(dist)


class SelfAttentionModule(nn.Module):
    """Finite twin of :class:`SelfAttention`: ``(N, C, *S) -> (N, n_chan_out, *S)``, with
    standard-normal parameters ``key`` ``(H, C_k, n_key)``, ``query`` (absent with linear
    scaling: tied to ``key``), ``value`` ``(H, C_v, n_val)``, ``out`` ``(H n_val, n_out)``,
    ``bias`` ``(n_out,)`` and ``pos_emb`` ``(C_pe, *S)``, scaled in ``forward`` as in
    neural-tangents."""

    takes_mask = True  # see ntkit.layers.masked_forward

    def __init__(self, spec: SelfAttention, in_shape: tuple[int, ...], *,
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.spec = spec
        c, sizes = in_shape[0], in_shape[1:]
        n_pe = spec.n_chan_pos_emb or c
        c_key = c + (n_pe if spec.pos_emb_type == "concat" else 0)
        c_val = c_key if spec.val_pos_emb else c

        def draw(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=generator, dtype=dtype))

        h = spec.n_heads
        self.key = draw(h, c_key, spec.n_chan_key)
        self.query = None if spec.linear_scaling else draw(h, c_key, spec.n_chan_key)
        self.value = draw(h, c_val, spec.n_chan_val)
        self.out = draw(h * spec.n_chan_val, spec.n_chan_out)
        self.bias = None if spec.b_std is None else draw(spec.n_chan_out)
        self.pos_emb = None if spec.pos_emb_type == "none" else draw(n_pe, *sizes)
        chol = None
        if spec.pos_emb_decay_fn is not None and self.pos_emb is not None:
            r = positional_covariance(sizes, spec.pos_emb_p_norm, spec.pos_emb_decay_fn,
                                      like=self.key)
            chol = torch.linalg.cholesky(r)
        self.register_buffer("chol", chol)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``(N, C, *S)`` inputs to ``(N, n_chan_out, *S)`` outputs; ``mask`` ``(N, *S)``
        booleans (``True`` = masked, see :func:`~ntkit.layers.input_mask`): masked positions
        are zeroed in the inputs and embeddings, get no attention weight as keys and give
        zero outputs as queries (neural-tangents' masking)."""
        s = self.spec
        n, sizes = x.shape[0], x.shape[2:]
        keep = None
        if mask is not None:
            keep = ~check_mask(mask, x).flatten(1)[..., None]  # (N, P, 1)
        x = x.flatten(2).transpose(1, 2)  # (N, P, C)
        if keep is not None:
            x = x * keep
        x_val = x
        if self.pos_emb is not None:
            pe = self.pos_emb.flatten(1).T  # (P, C_pe)
            if self.chol is not None:  # embeddings of covariance R between positions
                pe = self.chol @ pe
            pe = s.W_pos_emb_std * pe
            if keep is not None:
                pe = pe * keep  # (N, P, C_pe)
            x = x + pe if s.pos_emb_type == "sum" else torch.cat(
                [x, pe.expand(n, *pe.shape[-2:])], dim=-1)
            if s.val_pos_emb:
                x_val = x
        keys = torch.einsum("npc,hck->hnpk", x, self.key)
        queries = keys if self.query is None else torch.einsum("npc,hck->hnpk", x, self.query)
        values = torch.einsum("npc,hcv->hnpv", x_val, self.value)
        scale = x.shape[-1] * s.n_chan_key ** (1.0 if s.linear_scaling else 0.5)
        logits = queries @ keys.transpose(-1, -2) * (s.W_query_std * s.W_key_std / scale)
        if keep is not None:  # (H, N, P queries, P keys)
            fill = -math.inf if s.attention_mechanism == "softmax" else 0.0
            logits = logits.masked_fill(~keep.transpose(1, 2)[None], fill)
        heads = _MECHANISMS[s.attention_mechanism](logits) @ values  # (H, N, P, n_val)
        heads = heads.permute(1, 2, 0, 3).reshape(n, -1, s.n_heads * s.n_chan_val)
        out = heads @ self.out * (s.W_out_std * s.W_value_std
                                  / math.sqrt(s.n_chan_val * s.n_heads * x_val.shape[-1]))
        if self.bias is not None:
            out = out + s.b_std * self.bias
        if keep is not None:
            out = out * keep
        return out.transpose(1, 2).reshape(n, s.n_chan_out, *sizes)
