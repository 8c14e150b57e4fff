"""FAVOR+ positive random features and linear attention (ntkit.features._favor,
ntkit.features._linear_attention)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from _reference import mean_and_se
from ntkit.features import (
    FAVORFeatures,
    LinearAttention,
    gaussian_projection,
    linear_attention,
    positive_random_features,
)

F64 = torch.float64
# 4 standard errors over R = 400 independent estimates (see tests/test_features_snnk.py).
Z, R = 4.0, 400


def _pairs(d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """x = y, nearly parallel, generic, obtuse; norms 0.5 to 0.9."""
    g = torch.Generator().manual_seed(11)
    a = torch.randn(4, d, generator=g, dtype=F64)
    a = a / a.norm(dim=1, keepdim=True)
    near = a[1] + 1e-3 * a[0]
    x = torch.stack([0.8 * a[0], 0.7 * a[1], 0.6 * a[2], 0.9 * a[3]])
    y = torch.stack([0.8 * a[0], 0.5 * near / near.norm(), 0.7 * a[3], -0.5 * a[3]])
    return x, y


@pytest.mark.parametrize("orthogonal", [False, True])
def test_favor_unbiased_for_exp_dot_product(orthogonal):
    x, y = _pairs()
    per_group = 16   # two orthogonal blocks of d = 8: groups are independent
    phi = FAVORFeatures(R * per_group, orthogonal=orthogonal, random_state=2).fit(x)
    prod = phi(x) * phi(y)                                  # (N, R * per_group)
    est = prod.reshape(4, R, per_group).sum(-1).T * R       # (R, N) independent estimates
    mean, se = mean_and_se(est)
    exact = torch.exp((x * y).sum(1))
    assert ((mean - exact).abs() <= Z * se).all(), (mean, exact, se)
    assert (se < 0.05 * exact).all()   # 4 SE < 20%: a wrong factor would be caught
    assert (phi(x) > 0).all()


def test_orthogonal_projection_rows_are_gaussian_and_orthogonal():
    g = torch.Generator().manual_seed(0)
    w = gaussian_projection(4000, 5, orthogonal=True, generator=g, dtype=F64)
    block = w[:5] / w[:5].norm(dim=1, keepdim=True)
    assert torch.allclose(block @ block.T, torch.eye(5, dtype=F64), atol=1e-12)
    # Marginally N(0, I): E|w|^2 = d (SE of the mean of 4000 chi^2_5 is sqrt(10/4000) = 0.05)
    # and entries have variance 1 (SE ~ 0.01).
    assert abs(float((w * w).sum(1).mean()) - 5.0) < 4 * 0.05
    assert abs(float(w.var()) - 1.0) < 4 * 0.011


def _softmax_reference(attn: LinearAttention, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """Exact softmax attention with the module's own projections (the same q, k, v and the
    same 1/sqrt(head_dim) scaling)."""
    b, n, e = x.shape
    q, k, v = (attn._heads(p(x)) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, e))


@pytest.mark.parametrize("causal", [False, True])
@torch.no_grad()
def test_linear_attention_approximates_softmax_attention(causal):
    # Relative error of the output against F.scaled_dot_product_attention, mean over 6
    # projections per m. Entrywise error ~ m^(-1/2) (the ratio estimator adds O(1/m)), so
    # each 8x step of m should cut the error by ~2.8; measured ~2 at these sizes. Asserted: a
    # cut of at least 1/0.7 per step, and the largest m under 10%.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 32, generator=g, dtype=F64)
    errors = []
    for m in (16, 128, 1024):
        e = []
        for seed in range(6):
            torch.manual_seed(100 + seed)   # same projections for every m
            attn = LinearAttention(32, 4, n_components=m, causal=causal, random_state=seed,
                                   dtype=F64)
            want = _softmax_reference(attn, x, causal)
            e.append(float((attn(x) - want).norm() / want.norm()))
        errors.append(sum(e) / len(e))
    assert errors[1] < 0.7 * errors[0] and errors[2] < 0.7 * errors[1], errors
    assert errors[2] < 0.1, errors


def _quadratic(phi_q, phi_k, v, causal):
    weights = phi_q @ phi_k.transpose(-1, -2)
    if causal:
        weights = torch.tril(weights)
    return (weights @ v) / weights.sum(-1, keepdim=True)


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_equals_masked_quadratic_computation(causal):
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 3, 50, 6, generator=g, dtype=F64), torch.randn(2, 3, 50, 6,
                                                                          generator=g, dtype=F64)
    v = torch.randn(2, 3, 50, 5, generator=g, dtype=F64)
    w = gaussian_projection(24, 6, generator=g, dtype=F64)

    def fmap(t):
        return positive_random_features(t / 6**0.25, w)

    want = _quadratic(fmap(q), fmap(k), v, causal)
    for chunk in (1, 7, 50, 128):   # chunks that do and do not divide the length
        got = linear_attention(q, k, v, feature_map=fmap, causal=causal, chunk_size=chunk)
        # Same sums in another order: float64 round-off ~1e-15 relative.
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
@torch.no_grad()
def test_module_elu_and_stabilised_softmax_match_explicit_weights(causal):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 40, 16, generator=g, dtype=F64)
    elu = LinearAttention(16, 2, kernel="elu", causal=causal, chunk_size=16, dtype=F64)
    q, k, v = (elu._heads(p(x)) for p in (elu.q_proj, elu.k_proj, elu.v_proj))
    inner = _quadratic(F.elu(q) + 1, F.elu(k) + 1, v, causal)
    want = elu.out_proj(inner.transpose(1, 2).reshape(2, 40, 16))
    assert torch.allclose(elu(x), want, rtol=1e-10, atol=1e-12)
    # Softmax kernel: the stabilised features differ from FAVOR+ by factors that cancel.
    soft = LinearAttention(16, 2, n_components=20, causal=causal, random_state=0, dtype=F64)
    q, k, v = (soft._heads(p(x)) for p in (soft.q_proj, soft.k_proj, soft.v_proj))
    scale = 8**-0.25
    inner = _quadratic(positive_random_features(q * scale, soft.projection),
                       positive_random_features(k * scale, soft.projection), v, causal)
    want = soft.out_proj(inner.transpose(1, 2).reshape(2, 40, 16))
    assert torch.allclose(soft(x), want, rtol=1e-10, atol=1e-12)


def test_module_shapes_cross_attention_and_gradients():
    attn = LinearAttention(12, 3, random_state=0)
    assert attn.n_components == 4 * math.ceil(math.log(4))
    q, kv = torch.randn(2, 5, 12), torch.randn(2, 9, 12)
    out = attn(q, kv, kv)
    assert out.shape == (2, 5, 12)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())
    # Long sequences with large activations neither overflow nor underflow in float32.
    big = LinearAttention(16, 2, n_components=32, random_state=0)
    with torch.no_grad():
        assert torch.isfinite(big(20 * torch.randn(1, 2000, 16))).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"embed_dim": 10, "num_heads": 3}, "divisible"),
    ({"kernel": "cosine"}, "kernel"),
    ({"n_components": 0}, "n_components"),
    ({"n_components": 8, "kernel": "elu"}, "n_components"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"num_heads": 0}, "num_heads"),
])
def test_bad_module_arguments(kwargs, match):
    args = {"embed_dim": 8, "num_heads": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        LinearAttention(args.pop("embed_dim"), args.pop("num_heads"), **args)


def test_bad_inputs():
    attn = LinearAttention(8, 2, n_components=8, random_state=0)
    x = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="NaN"):
        attn(x.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="query"):
        attn(torch.randn(4, 8))
    fmap = torch.exp
    q = torch.randn(1, 4, 3)
    with pytest.raises(ValueError, match="causal"):
        linear_attention(q, torch.randn(1, 5, 3), torch.randn(1, 5, 2), feature_map=fmap,
                         causal=True)
    with pytest.raises(ValueError, match="shapes"):
        linear_attention(q, torch.randn(1, 5, 3), torch.randn(1, 4, 2), feature_map=fmap)
    with pytest.raises(ValueError, match="n_components"):
        FAVORFeatures(0).fit(torch.ones(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        FAVORFeatures(4, random_state=0).fit(torch.ones(2, 3))(torch.full((1, 3), math.nan))
