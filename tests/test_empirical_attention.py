"""ntkit.empirical's structured path for ``nn.MultiheadAttention``: its self-attention
calls are factorised (no per-example Jacobian fallback) and give the Jacobian strategy's
kernel; what it cannot factorise falls back with a reason. Tolerance: relative Frobenius
error below 1e-10 in float64 (both routes sum a few thousand products exact to ~1e-15)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ntkit.empirical import empirical_ntk
from ntkit.empirical._attention_factors import attend
from test_empirical import F64, _assert_rel_close, _inputs, _plan

D, HEADS, LENGTH = 8, 2, 5
ATTENTION = {"self_attn.in_proj_weight", "self_attn.in_proj_bias",
             "self_attn.out_proj.weight", "self_attn.out_proj.bias"}


class _Encoder(nn.Module):
    """One encoder block (optionally masked), mean over positions, two outputs."""

    def __init__(self, batch_first: bool = True, mask: str | None = None, **attention):
        super().__init__()
        self.batch_first, self.mask = batch_first, mask
        self.block = nn.TransformerEncoderLayer(D, HEADS, dim_feedforward=12, dropout=0.0,
                                                batch_first=batch_first, **attention)
        self.head = nn.Linear(D, 2)

    def forward(self, x):
        kwargs = {}
        if self.mask == "causal":
            kwargs = {"src_mask": nn.Transformer.generate_square_subsequent_mask(LENGTH, dtype=F64),
                      "is_causal": True}
        elif self.mask == "padding":  # positions whose first feature is large, as padding
            pad = x[..., 0].detach() > 0.8
            pad[:, 0] = False  # every example attends to something
            kwargs = {"src_key_padding_mask": pad}
        h = self.block(x if self.batch_first else x.transpose(0, 1), **kwargs)
        return self.head(h.mean(1 if self.batch_first else 0))


class _Weights(nn.Module):
    """Self-attention whose per-head weights also feed the output (need_weights)."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(D, HEADS, batch_first=True, bias=False)
        self.head = nn.Linear(D, 2)

    def forward(self, x):
        out, weights = self.attn(x, x, x, need_weights=True, average_attn_weights=False)
        return self.head(out.mean(1)) + weights.sum((1, 2))[:, :2]


class _Cross(nn.Module):
    """Attention of the sequence to its reversal (keys and values: another tensor, of
    width ``kdim``), or to itself (``cross=False``)."""

    def __init__(self, cross: bool = True, kdim: int = D, **attention):
        super().__init__()
        self.cross, self.kdim = cross, kdim
        self.attn = nn.MultiheadAttention(D, HEADS, batch_first=True, kdim=kdim, vdim=kdim,
                                          **attention)
        self.head = nn.Linear(D, 2)

    def forward(self, x):
        kv = x.flip(1)[..., :self.kdim] if self.cross else x
        return self.head(self.attn(x, kv, kv, need_weights=False)[0].mean(1))


def _model(make, seed=40):
    torch.manual_seed(seed)
    return make().to(F64).eval()


def _x(n=6):
    return _inputs((LENGTH, D), n=n, seed=41)


@pytest.mark.parametrize("batch_first, mask", [(True, None), (False, None),
                                               (True, "causal"), (False, "padding")])
def test_encoder_block_is_factorised_and_equals_the_jacobian_route(batch_first, mask):
    model, x = _model(lambda: _Encoder(batch_first, mask)), _x()
    plan = _plan(model, x)
    # Sequence-first inputs (batch_first=False) reach the block's nn.Linear layers without
    # the batch axis first: those fall back (as before); the attention is factorised.
    assert not {f"block.{n}" for n in ATTENTION} & set(plan.fallback)
    assert (plan.fallback == []) == batch_first
    assert any(set(g.names) == {"block.self_attn.in_proj_weight",
                                "block.self_attn.in_proj_bias"} for g in plan.groups)
    for outputs in ("trace", "full"):
        _assert_rel_close(empirical_ntk(model, x, strategy="structured", outputs=outputs),
                          empirical_ntk(model, x, strategy="jacobian", outputs=outputs))
    rect = empirical_ntk(model, x[:2], x[2:], strategy="structured", batch_size=2)
    _assert_rel_close(rect, empirical_ntk(model, x[:2], x[2:], strategy="jacobian"))


def test_attention_weights_returned_to_the_model_carry_their_gradient():
    model, x = _model(_Weights), _x()
    assert _plan(model, x).fallback == []
    _assert_rel_close(empirical_ntk(model, x, strategy="structured", outputs="full"),
                      empirical_ntk(model, x, strategy="jacobian", outputs="full"))


@pytest.mark.parametrize("make, reason", [
    (_Cross, "not self-attention"),
    # Separate q/k/v weights and learned key/value biases: parameters the handler does not
    # own, so no handler applies (the generic reason).
    (lambda: _Cross(kdim=4), "has no factorisation"),
    (lambda: _Cross(cross=False, add_bias_kv=True), "has no factorisation"),
    (lambda: _Cross(cross=False, add_zero_attn=True), "has no factorisation"),
])
def test_what_is_not_factorised_falls_back_and_stays_exact(make, reason):
    model, x = _model(make), _x()
    plan = _plan(model, x)
    attn = [n for n in plan.fallback if n.startswith("attn.")]
    assert attn and "head.weight" not in plan.fallback
    assert reason in plan.reasons[attn[0]]
    _assert_rel_close(empirical_ntk(model, x, strategy="structured"),
                      empirical_ntk(model, x, strategy="jacobian"))


def test_attend_equals_torch_attention_with_masks():
    # attend() against nn.MultiheadAttention's own forward (torch's fused kernels), with a
    # boolean causal mask and a float key-padding mask: equal to rounding (1e-12, float64).
    mha = _model(lambda: nn.MultiheadAttention(D, HEADS, batch_first=True))
    x = _x(n=3)
    causal = torch.ones(LENGTH, LENGTH, dtype=torch.bool).triu(1)
    pad = torch.zeros(3, LENGTH, dtype=F64)
    pad[1, -1] = float("-inf")
    ref, ref_w = mha(x, x, x, attn_mask=causal, key_padding_mask=pad,
                     average_attn_weights=False)
    z = torch.nn.functional.linear(x, mha.in_proj_weight, mha.in_proj_bias)
    heads, weights = attend(z, HEADS, causal, pad)
    torch.testing.assert_close(mha.out_proj(heads), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weights, ref_w, rtol=1e-12, atol=1e-12)


class _BenchBlock(nn.Module):
    """bench/empirical_attention.py's model: d_model 64, 4 heads, mean over positions, a
    linear read-out (here of two units, so that ``"full"`` has cross terms)."""

    def __init__(self, ff: int):
        super().__init__()
        self.block = nn.TransformerEncoderLayer(64, 4, dim_feedforward=ff, dropout=0.0,
                                                batch_first=True)
        self.head = nn.Linear(64, 2)

    def forward(self, x):
        return self.head(self.block(x).mean(1))


@pytest.mark.parametrize("ff", [256, 2048])
@pytest.mark.parametrize("syrk", [True, False])
def test_bench_block_equals_the_jacobian_route(ff, syrk, monkeypatch):
    # The benchmark's block at N = 12 (sequence 16; from about 10 examples on, the
    # projections' per-example gradients are cheaper than their Gram route): every
    # parameter factorised, the Jacobian-route weights formed into one buffer and
    # contracted by BLAS syrk or by torch's tiles (whichever the thread count picks, both
    # forced here), in one block and in several (batch_size 8: diagonal blocks of 8 and 4
    # and their rectangle). Tolerance: as the module's (float64 sums of ~1e5 products).
    import ntkit.empirical._pairs as pairs

    monkeypatch.setattr(pairs, "syrk_supported", lambda like: syrk)
    model = _model(lambda: _BenchBlock(ff))
    x = _inputs((16, 64), n=12, seed=42)
    plan = _plan(model, x)
    assert plan.fallback == []
    routes = {name: g.route for g in plan.groups for name in g.names}
    assert routes["block.self_attn.in_proj_weight"] == routes["block.linear1.weight"] \
        == "jacobian"
    for outputs, batch_size in (("trace", None), ("full", 8), ("diagonal", None)):
        _assert_rel_close(
            empirical_ntk(model, x, strategy="structured", outputs=outputs,
                          batch_size=batch_size),
            empirical_ntk(model, x, strategy="jacobian", outputs=outputs))


def test_jacobians_formed_by_column_chunks_fit_one_block(monkeypatch):
    # A memory budget that holds the layer factors of all 12 examples but not their
    # Jacobians: the Jacobians are formed a few columns at a time (chunks of 4 KiB here,
    # which split the projections' factors along their inputs and LayerNorm's gradients
    # along their columns), so the kernel is one block (one pair_block call) and equals
    # the Jacobian strategy's (tolerance: as the module's).
    import ntkit.empirical._formed as formed
    import ntkit.empirical._structured as structured

    monkeypatch.setattr(formed, "COLUMN_BYTES", 4096)
    calls = []
    pair = structured.pair_block
    monkeypatch.setattr(structured, "pair_block", lambda *a: calls.append(1) or pair(*a))
    model = _model(lambda: _BenchBlock(256))
    x = _inputs((16, 64), n=12, seed=43)
    plan = _plan(model, x)
    n = x.shape[0]
    lean = 2 * n * (plan.per_example - plan.formed + 4096 / n) + n * n * plan.per_pair
    assert 2 * n * plan.per_example + n * n * plan.per_pair > lean + 1
    theta = empirical_ntk(model, x, strategy="structured", max_memory=int(lean) + 1)
    assert len(calls) == 1
    _assert_rel_close(theta, empirical_ntk(model, x, strategy="jacobian"))
