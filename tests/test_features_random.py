"""Random features of arc-cosine, NNGP and NTK kernels (ntkit.features): exact in expectation where
the construction is, a 1/m bias where it composes, m^-1/2 convergence, and the sklearn / Module
contracts."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

from ntkit import layers as L
from ntkit.features import (
    ArcCosineFeatures,
    NNGPFeatures,
    NTKFeatures,
    NTKSketch,
    arc_cosine_kernel,
    ntk_polynomial,
)

F64 = torch.float64


def _net(depth, W_std=1.0, b_std=0.0):
    return L.serial(*[L.Dense(1, W_std=W_std, b_std=b_std), L.ReLU()] * depth,
                    L.Dense(1, W_std=W_std, b_std=b_std))


def _pairs() -> torch.Tensor:
    """Five inputs whose Gram holds x = x' (rows 0 and 1 are equal), a nearly parallel pair
    (0, 2: angle ~1e-3), a generic pair and an obtuse one."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 6, dtype=F64, generator=g)
    return torch.stack([a, a, a + 1e-3 * b, b, -a + 0.3 * b])


# --- the exact kernels --------------------------------------------------------------------------


def test_arc_cosine_kernel_is_twice_ntkit_relu_expectations():
    # Cho & Saul's k_1 on x/sqrt(d) is twice ntkit's E[relu relu] (DESIGN.md conventions), and
    # k_0 is twice E[relu' relu']: the normalisation that NNGPFeatures' sqrt(1/m) relies on.
    x = _pairs()
    d = x.shape[1]
    nngp = L.serial(L.Dense(1), L.ReLU()).kernel(x).nngp
    torch.testing.assert_close(arc_cosine_kernel(x, order=1) / (2 * d), nngp, rtol=1e-12, atol=0)
    q = x @ x.T / d
    tdot = L.ReLU().expectations(q, q.diagonal()[:, None], q.diagonal()[None, :], ntk=True)[1]
    torch.testing.assert_close(arc_cosine_kernel(x, order=0) / 2, tdot, rtol=1e-12, atol=1e-15)


def test_arc_cosine_kernel_order_two_special_angles():
    # J_2(0) = 3 pi, J_2(pi/2) = pi/2, J_2(pi) = 0: k_2(x, x) = 3|x|^4 = 2 E[relu(u)^4], and
    # k_2 = |x|^2 |y|^2 / 2 = 2 E[relu(u)^2] E[relu(v)^2] for independent u, v.
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-2.0, 0.0]], dtype=F64)
    k = arc_cosine_kernel(x, order=2)
    expected = torch.tensor([[48.0, 18.0, 0.0], [18.0, 243.0, 18.0], [0.0, 18.0, 48.0]], dtype=F64)
    torch.testing.assert_close(k, expected, rtol=1e-13, atol=1e-12)


# --- unbiasedness ----------------------------------------------------------------------------

FAMILIES = {
    "arccos0": (lambda m, g: ArcCosineFeatures(m, order=0, random_state=g),
                lambda x: arc_cosine_kernel(x, order=0)),
    "arccos1": (lambda m, g: ArcCosineFeatures(m, order=1, random_state=g),
                lambda x: arc_cosine_kernel(x, order=1)),
    "arccos2": (lambda m, g: ArcCosineFeatures(m, order=2, random_state=g),
                lambda x: arc_cosine_kernel(x, order=2)),
    "nngp": (lambda m, g: NNGPFeatures(m, depth=1, W_std=1.5, b_std=0.2, random_state=g),
             lambda x: _net(1, 1.5, 0.2).kernel(x).nngp),
    "ntk": (lambda m, g: NTKFeatures(m, depth=1, W_std=1.3, b_std=0.3, random_state=g),
            lambda x: _net(1, 1.3, 0.3).kernel(x).ntk),
    "ntk_nobias": (lambda m, g: NTKFeatures(m, depth=1, random_state=g),
                   lambda x: _net(1).kernel(x).ntk),
    # The sketch is unbiased for its polynomial surrogate r_x r_y P(c) + b^2, not for the NTK:
    # by default (one shared tree, each degree its share of m), with the paper's final SRHT
    # (sketch_dim), and with a bias at depth 1.
    "ntk_sketch": (lambda m, g: NTKSketch(m, depth=2, W_std=1.2, degree=6, random_state=g),
                   lambda x: _sketch_target(x, depth=2, W_std=1.2, degree=6)),
    "ntk_sketch_srht": (lambda m, g: NTKSketch(m, depth=2, W_std=1.2, degree=6, sketch_dim=8,
                                               random_state=g),
                        lambda x: _sketch_target(x, depth=2, W_std=1.2, degree=6)),
    "ntk_sketch_bias": (lambda m, g: NTKSketch(m, depth=1, W_std=1.3, b_std=0.3, degree=6,
                                               random_state=g),
                        lambda x: _sketch_target(x, depth=1, W_std=1.3, b_std=0.3, degree=6)),
}


def _sketch_target(x, *, depth, W_std, degree, b_std=0.0):
    # Written from the derivation (module docstring of ntkit.features._ntk_sketch), not from
    # its code: x~ = [W x / sqrt(d), b], r = |x~|, Theta ~ r_x r_y P_0(c) / W^2 + b^2.
    a = torch.from_numpy(ntk_polynomial(depth, W_std, degree)[0]) / W_std**2
    xt = torch.cat([W_std * x / math.sqrt(x.shape[1]), torch.full_like(x[:, :1], b_std)], 1)
    r = xt.norm(dim=1)
    c = (xt @ xt.T / torch.outer(r, r)).clamp(-1, 1)
    return torch.outer(r, r) * sum(a[j] * c**j for j in range(len(a))) + b_std**2


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_one_layer_features_are_unbiased(family):
    # Mean of phi(x).phi(x') over 400 (sketch: 250) independent maps vs the exact kernel on
    # every pair of _pairs(): within 4 standard errors of the mean (plus 1e-12 relative for
    # entries that the estimator gets exactly, such as the bias column); the exact kernels of
    # NNGP and NTK come from ntkit.layers.
    make, exact = FAMILIES[family]
    x = _pairs()
    gen = torch.Generator().manual_seed(1)
    draws = 250 if family.startswith("ntk_sketch") else 400  # each sketch fit also fits P(c)
    ks = torch.stack([(lambda f: f @ f.T)(make(16, gen).fit(x)(x)) for _ in range(draws)])
    mean, se = ks.mean(0), ks.std(0) / math.sqrt(draws)
    k = exact(x)
    assert bool(((mean - k).abs() <= 4 * se + 1e-12 * k.abs()).all()), (mean - k) / se


def test_composed_nngp_bias_shrinks_like_one_over_m():
    # Depth 2: given the first layer's features g (g.g' = q_hat, unbiased for q), the second
    # layer is unbiased, so E[k_hat] = E[F(q_hat)] with F = W^2 E[relu relu] + b^2 (ntkit's
    # ReLU formula); the bias E[F(q_hat)] - F(q) is second order in q_hat - q, hence O(1/m).
    # Its mean is estimated with q_hat - q as control variates (known mean 0), which leaves a
    # standard error of order 1/m, so m * bias can be compared across m at a few per cent.
    x = _pairs()[[0, 3]]
    w, b = 1.2, 0.1
    exact = _net(2, w, b).kernel(x).nngp[0, 1]
    q = _net(1, w, b).kernel(x).nngp
    scaled_bias, scaled_se = [], []
    ms = (4, 16, 64, 256)
    for m in ms:
        gen = torch.Generator().manual_seed(m)
        draws = 1500
        qh = torch.stack([(lambda f: f @ f.T)(NNGPFeatures(m, depth=1, W_std=w, b_std=b,
                                                           random_state=gen).fit(x)(x))
                          for _ in range(draws)])
        f = w**2 * L.ReLU().expectations(qh[:, 0, 1], qh[:, 0, 0], qh[:, 1, 1], ntk=False)[0] \
            + b**2
        controls = torch.stack([qh[:, 0, 0], qh[:, 1, 1], qh[:, 0, 1]], 1) - \
            torch.stack([q[0, 0], q[1, 1], q[0, 1]])
        design = torch.cat([torch.ones(draws, 1, dtype=F64), controls], 1)
        coef = torch.linalg.lstsq(design, f[:, None]).solution[:, 0]
        se = (f - design @ coef).std() / math.sqrt(draws)
        scaled_bias.append(m * float(coef[0] - exact))
        scaled_se.append(m * float(se))
    # The bias is real (more than 4 standard errors at every m) ...
    assert all(abs(v) > 4 * s for v, s in zip(scaled_bias, scaled_se, strict=True)), scaled_bias
    # ... and m * bias is the same at m = 16, 64, 256 within 4 combined standard errors, which
    # a bias of order m^-1/2 (m * bias growing 4x over this range) would fail. (At m = 4 the
    # next term, O(1/m^2), is still visible: m * bias is ~30% larger there.)
    for i in (1, 2):
        gap = abs(scaled_bias[i] - scaled_bias[-1])
        assert gap <= 4 * math.hypot(scaled_se[i], scaled_se[-1]), (scaled_bias, scaled_se)
    # The class at depth 2 has this bias: its plain Monte Carlo mean at m = 4 agrees with it.
    gen = torch.Generator().manual_seed(7)
    draws = 1500
    k2 = torch.stack([(lambda f: f @ f.T)(NNGPFeatures(4, depth=2, W_std=w, b_std=b,
                                                       random_state=gen).fit(x)(x))[0, 1]
                      for _ in range(draws)])
    se2 = float(k2.std()) / math.sqrt(draws)
    assert abs(float(k2.mean() - exact) - scaled_bias[0] / 4) <= 4 * math.hypot(
        se2, scaled_se[0] / 4)


def test_sketch_polynomial_is_close_to_the_ntk_and_improves_with_degree():
    # The surrogate n_x n_y P(c) is within poly_error_ * F(1) n_x n_y of ntkit's NTK (the
    # definition of poly_error_, checked on other points), and poly_error_ falls with degree.
    x = _pairs()
    errs = []
    for degree in (4, 8, 16):
        phi = NTKSketch(64, depth=2, W_std=1.2, degree=degree).fit(x)
        ntk = _net(2, 1.2).kernel(x).ntk
        n = x.norm(dim=1) / math.sqrt(x.shape[1])
        f1 = ntk.diagonal() / n**2
        gap = (_sketch_target(x, depth=2, W_std=1.2, degree=degree) - ntk).abs()
        assert bool((gap <= phi.poly_error_ * f1[0] * torch.outer(n, n) * (1 + 1e-9)).all())
        assert bool((phi.coef_ >= 0).all())
        errs.append(phi.poly_error_)
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.03, errs


def test_sketch_with_a_bias_is_close_to_the_ntk():
    # At depth 1 with b_std > 0 the NTK is r_x r_y F(c) + b^2 exactly (the derivation in the
    # module docstring): the surrogate is within poly_error_ * F(1) r_x r_y of ntkit's NTK,
    # and past one hidden layer the NTK is not of that form (so NTKSketch sketches it layer by
    # layer, tests/test_features_ntk_sketch.py): the same formula with depth 2 misses the NTK
    # by far more than the polynomial's error.
    x = _pairs()
    w, b = 1.3, 0.4
    phi = NTKSketch(64, depth=1, W_std=w, b_std=b, degree=16).fit(x)
    ntk = _net(1, w, b).kernel(x).ntk
    xt = torch.cat([w * x / math.sqrt(x.shape[1]), torch.full_like(x[:, :1], b)], 1)
    r = xt.norm(dim=1)
    f1 = float(phi.coef_.sum())  # P(1), within poly_error_ of F(1)
    gap = (_sketch_target(x, depth=1, W_std=w, b_std=b, degree=16) - ntk).abs()
    assert bool((gap <= 1.01 * phi.poly_error_ * f1 * torch.outer(r, r)).all())
    deep = _sketch_target(x, depth=2, W_std=w, b_std=b, degree=16)
    rel = ((deep - _net(2, w, b).kernel(x).ntk).abs() / torch.outer(r, r)).max() / f1
    assert rel > 5 * ntk_polynomial(2, w, 16)[1], float(rel)


def test_one_tree_serves_every_degree():
    # [0, j) as dyadic blocks (the binary digits of j), and the TensorSRHT counts of the
    # module docstring: 12 at degree 8 and 32 at degree 16, against sum_j (j - 1) = 28 and
    # 120 for one tree per degree.
    from ntkit.features._polysketch import dyadic_blocks, tree_nodes

    assert dyadic_blocks(7) == [(0, 4), (4, 2), (6, 1)] and dyadic_blocks(8) == [(0, 8)]
    for q, count in ((8, 12), (16, 32)):
        degrees = list(range(1, q + 1))
        joins = sum(len(dyadic_blocks(j)) - 1 for j in degrees)
        assert len(tree_nodes(degrees)) + joins == count
        assert sum(j - 1 for j in degrees) == {8: 28, 16: 120}[q]
    assert tree_nodes([3]) == [(0, 2)] and tree_nodes([4, 6]) == [(0, 2), (2, 2), (4, 2), (0, 4)]


# --- convergence ----------------------------------------------------------------------------


def _rel_frobenius(phi, x, k):
    f = phi.fit(x)(x)
    return float(torch.linalg.matrix_norm(f @ f.T - k) / torch.linalg.matrix_norm(k))


@pytest.mark.parametrize("family", ["arccos1", "nngp2", "ntk1", "ntk2", "sketch",
                                    "sketch_srht"])
def test_relative_frobenius_error_decays_like_inverse_sqrt_m(family):
    # 500 inputs, m = 64 ... 2048 (the benchmark runs 256 ... 16384). The error is the root
    # mean square over 4 draws per m (its square is a sum of variances, exactly ~1/m for
    # i.i.d. features), whose fitted log-log slope varied with sd ~0.03 over seeds: it must be
    # -1/2 within 0.1. Depth-2 maps carry an O(1/m) bias, below the O(m^-1/2) noise here. The
    # NTK sketch is measured against its surrogate (its error against the NTK levels off at
    # the polynomial's), with tree widths growing like m (sketch_srht: sketch_dim = m / 4).
    x = torch.randn(500, 8, dtype=F64, generator=torch.Generator().manual_seed(3))
    if family.startswith("sketch"):
        k = _sketch_target(x, depth=2, W_std=1.4, degree=8)
        make = lambda m, s: NTKSketch(  # noqa: E731
            m, depth=2, W_std=1.4, degree=8, random_state=s,
            sketch_dim=m // 4 if family == "sketch_srht" else None)
    elif family == "arccos1":
        k, make = arc_cosine_kernel(x, order=1), lambda m, s: ArcCosineFeatures(
            m, order=1, random_state=s)
    elif family == "nngp2":
        k, make = _net(2, 1.4, 0.1).kernel(x).nngp, lambda m, s: NNGPFeatures(
            m, depth=2, W_std=1.4, b_std=0.1, random_state=s)
    else:
        depth = int(family[-1])
        k, make = _net(depth, 1.4, 0.1).kernel(x).ntk, lambda m, s: NTKFeatures(
            m, depth=depth, W_std=1.4, b_std=0.1, random_state=s)
    ms = [64, 128, 256, 512, 1024, 2048]
    errs = [math.sqrt(np.mean([_rel_frobenius(make(m, 10 * m + s), x, k) ** 2 for s in range(4)]))
            for m in ms]
    slope = np.polyfit(np.log(ms), np.log(errs), 1)[0]
    assert -0.6 <= slope <= -0.4, (slope, errs)


# --- scikit-learn and torch contracts -------------------------------------------------------

ESTIMATORS = [ArcCosineFeatures(8, order=2, depth=2), NNGPFeatures(8, depth=2, b_std=0.1),
              NTKFeatures(8, depth=2, b_std=0.1), NTKSketch(12, depth=2, degree=4),
              NTKSketch(12, depth=1, b_std=0.2, degree=5, sketch_dim=8),
              NTKSketch(12, depth=2, b_std=0.2, degree=4)]


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_check_estimator(est):
    from sklearn.utils.estimator_checks import check_estimator

    # Six checks set n_components=1, below the minimum of maps with a bias column (NNGP) or
    # with two kinds of features (NTK); those raise the clear error tested below instead, and
    # test_row_wise_contract checks what the six would have.
    low = "n_components=1 is below this map's minimum"
    expected = {} if isinstance(est, ArcCosineFeatures) else dict.fromkeys([
        "check_dont_overwrite_parameters", "check_methods_sample_order_invariance",
        "check_methods_subset_invariance", "check_fit2d_1sample", "check_fit2d_1feature",
        "check_fit2d_predict1d"], low)
    failed = [r for r in check_estimator(est, on_fail=None, expected_failed_checks=expected)
              if r["status"] == "failed"]
    assert not failed, [(r["check_name"], str(r["exception"])[:200]) for r in failed]


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_fit_clone_pickle_pipeline(est):
    x = np.random.default_rng(0).standard_normal((30, 4))
    est = clone(est).set_params(random_state=5)
    assert est.fit(x) is est
    assert clone(est).get_params() == est.get_params()
    # Same seed, same map; a pickled map transforms as the original.
    np.testing.assert_allclose(clone(est).fit(x).transform(x), est.transform(x), rtol=1e-12)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(est)).transform(x), est.transform(x),
                               rtol=1e-12)
    # A pipeline with a linear model: features of shape (N, n_components).
    pipe = make_pipeline(clone(est), Ridge(alpha=1e-3)).fit(x, x[:, 0])
    assert pipe.predict(x).shape == (30,)
    assert est.transform(x).shape == (30, est.n_components)


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_module_forward_equals_transform_and_dtypes(est):
    x = np.random.default_rng(1).standard_normal((12, 5))
    est = clone(est).set_params(random_state=3).fit(x)
    # forward on a tensor and transform on an array are the same computation.
    out = est(torch.from_numpy(x))
    assert out.dtype == F64 and out.shape == (12, est.n_components)
    np.testing.assert_allclose(out.numpy(), est.transform(x), rtol=1e-12, atol=1e-14)
    # float32 inputs give float32 features, equal to float64 ones to float32 round-off (the
    # same draws, kept in float64 and cast): tolerance ~1e-5 of the feature scale.
    x32 = x.astype(np.float32)
    f32 = est.transform(x32)
    assert f32.dtype == np.float32
    scale = np.abs(est.transform(x)).max()
    np.testing.assert_allclose(f32, est.transform(x), atol=1e-5 * scale, rtol=0)
    est32 = clone(est).fit(x32)
    assert est32.transform(x32).dtype == np.float32
    np.testing.assert_allclose(est32(torch.from_numpy(x32)).numpy(), f32, atol=1e-5 * scale)
    # A Module: buffers move with .to, compose with nn layers, and let gradients through.
    assert {name for name, _ in est.named_buffers()} and not list(est.parameters())
    net = torch.nn.Sequential(est, torch.nn.Linear(est.n_components, 1, dtype=F64))
    xt = torch.from_numpy(x).requires_grad_()
    net(xt).sum().backward()
    assert xt.grad is not None and bool(torch.isfinite(xt.grad).all())
    est.to(torch.float32)
    assert all(b.dtype == torch.float32 for b in est.buffers() if b.is_floating_point())


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_row_wise_contract(est):
    # What the six checks skipped above test: features of a row do not depend on the other
    # rows (subsets, order), one sample and one feature fit, 1-D input raises.
    x = np.random.default_rng(2).standard_normal((10, 3))
    est = clone(est).set_params(random_state=0).fit(x)
    full = est.transform(x)
    order = np.random.default_rng(3).permutation(10)
    np.testing.assert_allclose(est.transform(x[order]), full[order], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(est.transform(x[:4]), full[:4], rtol=1e-12, atol=1e-14)
    assert clone(est).fit(x[:1]).transform(x[:1]).shape == (1, est.n_components)
    assert clone(est).fit(x[:, :1]).transform(x[:2, :1]).shape == (2, est.n_components)
    with pytest.raises(ValueError, match="2D array"):
        est.transform(x[0])


def test_random_state_semantics():
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    a = ArcCosineFeatures(6, random_state=1).fit(x)(x)
    torch.testing.assert_close(ArcCosineFeatures(6, random_state=1).fit(x)(x), a, rtol=0, atol=0)
    g = torch.Generator().manual_seed(1)
    phi = ArcCosineFeatures(6, random_state=g)
    assert not torch.equal(phi.fit(x)(x), phi.fit(x)(x))  # a generator advances per fit
    torch.manual_seed(4)
    b = ArcCosineFeatures(6).fit(x)(x)
    torch.manual_seed(4)
    torch.testing.assert_close(ArcCosineFeatures(6).fit(x)(x), b, rtol=0, atol=0)
    with pytest.raises(TypeError, match="random_state"):
        ArcCosineFeatures(6, random_state="seed").fit(x)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("make, match", [
    (lambda: ArcCosineFeatures(0), "n_components"),
    (lambda: NNGPFeatures(-3), "n_components"),
    (lambda: ArcCosineFeatures(8, order=3), "order"),
    (lambda: ArcCosineFeatures(8, depth=0), "depth"),
    (lambda: NTKFeatures(8, depth=0), "depth"),
    (lambda: NNGPFeatures(8, depth=0), "depth"),
    (lambda: NTKFeatures(8, depth=1, W_std=0.0), "W_std"),
    (lambda: NNGPFeatures(8, W_std=-1.0), "W_std"),
    (lambda: NTKFeatures(8, b_std=-0.1), "b_std"),
    (lambda: NTKFeatures(8, W_std=float("inf")), "W_std"),
    (lambda: NTKFeatures(2, b_std=0.1), "n_components must be >= 3"),
    (lambda: NNGPFeatures(1, b_std=0.1), "n_components must be >= 2"),
    (lambda: NTKSketch(5, depth=2, b_std=0.1), "n_components must be >= 6"),
    (lambda: NTKSketch(8, sketch_dim=0), "sketch_dim"),
    (lambda: NTKSketch(1, sketch_dim=4), "n_components must be >= 2"),
    (lambda: NTKSketch(2, b_std=0.1, sketch_dim=4), "n_components must be >= 3"),
    (lambda: NTKSketch(8, degree=0), "degree"),
    (lambda: NTKSketch(8, depth=0), "depth"),
    (lambda: NTKSketch(2, degree=8), "n_components must be >="),
])
def test_bad_parameters_name_themselves(make, match):
    x = np.ones((3, 2))
    with pytest.raises(ValueError, match=match):
        make().fit(x)


@pytest.mark.parametrize("cls", [ArcCosineFeatures, NNGPFeatures, NTKFeatures, NTKSketch])
def test_bad_inputs(cls):
    x = np.random.default_rng(0).standard_normal((5, 3))
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cls(8).fit(bad)
    with pytest.raises(ValueError, match="NaN"):
        cls(8).fit(torch.from_numpy(bad))
    with pytest.raises(NotFittedError):
        cls(8).transform(x)
    phi = cls(8, random_state=0).fit(x)
    with pytest.raises(ValueError, match="NaN"):
        phi.transform(bad)
    with pytest.raises(ValueError, match="infinity"):
        phi(torch.from_numpy(x).index_fill(1, torch.tensor([0]), float("inf")))
    with pytest.raises(ValueError, match="3 features"):
        phi.transform(np.ones((2, 4)))
    with pytest.raises(ValueError, match="fitted on 3 features"):
        phi(torch.ones(2, 4, dtype=F64))
    with pytest.raises(ValueError, match="shape"):
        phi(torch.ones(3, dtype=F64))
    with pytest.raises(TypeError, match="floating-point"):
        phi(torch.ones(2, 3, dtype=torch.int64))
