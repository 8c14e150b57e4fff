"""ntkit.theory deep-limit classifiers (Radhakrishnan, Belkin & Uhler, PNAS 2023)."""

import pytest
import torch

from ntkit import layers as L
from ntkit.apps._repro_deep_limit import (
    _cosine,
    agreement_curve,
    bayes_curve,
    deep_kernel,
    sphere_task,
    unit_variance_spec,
)
from ntkit.theory import (
    HermiteSeries,
    deep_limit_class,
    deep_limit_kernel,
    optimal_activation,
)

_H3 = HermiteSeries((0.0, 0.0, 0.0, 1.0))
HE3 = L.Elementwise(_H3, d_fn=_H3.derivative(), deg=4)  # dual xi^3: a_1 = 0


@pytest.mark.parametrize(("act", "kind"), [
    ("relu", "majority_vote"), (L.LeakyReLU(0.2), "majority_vote"), ("abs", "majority_vote"),
    (HE3, "nearest_neighbor"), ("erf", "singular_kernel"), ("tanh", "singular_kernel"),
    ("identity", "degenerate"), (L.ABReLU(1.0, 1.0), "degenerate"),
    (L.Elementwise(HermiteSeries((0.8, 0.6))), "degenerate"),  # psi'(1) = 0.36 < 1
])
def test_taxonomy(act, kind):
    assert deep_limit_class(act).classifier == kind


@pytest.mark.parametrize("dim", [1, 2, 3, 4, 8])
def test_optimal_activation_has_exponent_dim(dim):
    limit = deep_limit_class(optimal_activation(dim))
    assert limit.classifier == "singular_kernel"
    assert limit.alpha == pytest.approx(dim, rel=1e-9)
    assert limit.C_W == pytest.approx(1.0, rel=1e-12)  # E[phi^2] = sum of weights = 1


def test_authors_sine_for_three_d_data_has_exponent_two():
    # The authors' code lists sin with dual sinh(a xi) / sinh(a), a = 2.676, as consistent
    # for data on the 2-sphere: alpha = 2 log(sinh a / a) / log(a coth a) = 2 to ~1e-4.
    assert deep_limit_class(L.Sin(b=2.676**0.5)).alpha == pytest.approx(2.0, abs=1e-3)


@pytest.mark.parametrize("act", [optimal_activation(2), optimal_activation(4), "erf"])
def test_deep_limit_kernel_is_singular_with_exponent_alpha(act):
    # h(xi) ~ |x - z|^-alpha as x -> z: the log-log slope against the distance
    # sqrt(2 (1 - xi)) over eps = 1e-8 .. 1e-5 (where the next term is ~eps relative).
    eps = torch.logspace(-8, -5, 4, dtype=torch.float64)
    h = deep_limit_kernel(act, 1 - eps)
    slope = torch.diff(h.log()) / torch.diff((2 * eps).sqrt().log())
    assert torch.allclose(slope, torch.full_like(slope, -deep_limit_class(act).alpha),
                          rtol=1e-3)


def test_deep_kernel_equals_the_ntkit_layers_spec():
    # Same network two ways: ntkit.layers' serial spec and the unit-variance dual iteration.
    g = torch.Generator().manual_seed(0)
    x = sphere_task(6, dim=2, noise=0.0, generator=g).x
    for act in (optimal_activation(2), L.Erf(), L.ReLU()):
        k = unit_variance_spec(act, 6).kernel(x)
        for name in ("nngp", "ntk"):
            ref = getattr(k, name)
            # Each activation + Dense(W_std=sqrt(C_W)) pair is one step xi <- psi(xi),
            # Theta <- psi(xi) + psi'(xi) Theta; the spec's variance stays 1 to round-off.
            got = deep_kernel(act, _cosine(x, x), 6, kernel=name)
            assert torch.allclose(ref, got, rtol=1e-9, atol=1e-12), (act, name)


def test_agreement_with_the_predicted_limit_grows_with_depth():
    # Reduced reproduction: for each class, agreement at the largest depth is near 100 % and
    # above the shallow network's, on two seeds.
    cases = [(optimal_activation(2), (2, 30), "nngp", 0.97),
             (HE3, (1, 6), "ntk", 0.9),
             ("relu", (10, 3000), "ntk", 0.95)]
    for seed in range(2):
        task = sphere_task(240, dim=2, noise=0.2, imbalance=0.2,
                           generator=torch.Generator().manual_seed(seed))
        for act, depths, kernel, floor in cases:
            n_train = 40 if act == "relu" else 100
            _, agree = agreement_curve(act, depths, task, n_train, kernel=kernel)
            assert agree[1] >= floor and agree[1] > agree[0], (act, agree)


def test_optimal_deep_classifier_approaches_bayes_error():
    # Reduced: noise 0.2 (the Bayes error) on the 2-sphere's positive orthant; n = 40 -> 250.
    errs = bayes_curve(optimal_activation(2), (40, 250), depth=25, dim=2, noise=0.2,
                       n_test=250, seeds=2, kernel="nngp")
    assert errs["deep"][1] < errs["deep"][0]
    assert errs["deep"][1] < errs["1nn"][1]  # 1-NN tends to 2 * 0.2 * 0.8 = 0.32
    assert errs["deep"][1] - 0.2 < errs["deep"][0] - 0.2


def test_bad_input():
    with pytest.raises(ValueError, match="unknown name"):
        deep_limit_class("relu6")
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        optimal_activation(0)
    with pytest.raises(ValueError, match="not a singular kernel"):
        deep_limit_kernel("relu", torch.tensor([0.5]))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        deep_limit_kernel("erf", torch.tensor([1.5]))
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        deep_kernel("erf", torch.tensor([0.5]), 0)
    with pytest.raises(ValueError, match="E\\[phi\\(z\\)\\^2\\]"):
        deep_limit_class(L.ABReLU(0.0, 0.0))
