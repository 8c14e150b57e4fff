"""ntkit.theory criticality and susceptibilities (Roberts, Yaida & Hanin 2022, ch. 5)."""

import math

import pytest
import torch

from ntkit import layers as L
from ntkit.theory import criticality, susceptibilities


@pytest.mark.parametrize(("act", "c_w"), [
    ("relu", 2.0), (L.LeakyReLU(0.3), 2 / 1.09), ("abs", 1.0), (L.ABReLU(-0.5, 2.0), 2 / 4.25),
])
def test_scale_invariant_class(act, c_w):
    # ABReLU(a, b): <sigma^2>_K = (a^2 + b^2) K / 2, so C_W = 2 / (a^2 + b^2) exactly.
    c = criticality(act)
    assert c.universality == "scale_invariant" and c.K_star is None and c.C_b == 0.0
    assert c.C_W == pytest.approx(c_w, rel=1e-12)
    assert (c.chi_parallel, c.chi_perp) == pytest.approx((1.0, 1.0), abs=1e-9)


def test_leaky_relu_by_name_with_slope():
    assert criticality("leaky_relu", negative_slope=0.5).C_W == pytest.approx(1.6, rel=1e-12)


@pytest.mark.parametrize(("act", "c_w"), [
    ("tanh", 1.0), ("erf", math.pi / 4), ("sin", 1.0), (L.Sin(a=2.0, b=0.5), 1.0),
])
def test_k_star_zero_class(act, c_w):
    # C_W = 1 / sigma'(0)^2: tanh'(0) = 1, erf'(0) = 2 / sqrt(pi), (a sin(b x))'(0) = a b.
    c = criticality(act)
    assert c.universality == "K*=0" and c.K_star == 0.0 and c.C_b == 0.0
    assert c.C_W == pytest.approx(c_w, rel=1e-9)


def test_gelu_matches_the_book():
    # The book (ch. 5) quotes C_b ~ 0.17292 and C_W ~ 1.98305 for GELU: 5 digits.
    c = criticality("gelu")
    assert c.universality == "K*>0"
    assert c.C_b == pytest.approx(0.17292, abs=2e-5)
    assert c.C_W == pytest.approx(1.98305, abs=2e-5)
    assert (c.chi_parallel, c.chi_perp) == pytest.approx((1.0, 1.0), abs=1e-8)
    # K* is a fixed point of the kernel map, through the layer's own closed form.
    k = torch.tensor([c.K_star], dtype=torch.float64)
    nngp = L.GELU().expectations(k, k, k, ntk=False)[0]
    assert c.C_b + c.C_W * float(nngp) == pytest.approx(c.K_star, rel=1e-10)


def test_susceptibilities_against_erf_closed_form():
    # erf: <sigma'^2>_K = (4/pi) / sqrt(1 + 4K) and d<sigma^2>/dK = (4/pi) / ((1 + 2K)
    # sqrt(1 + 4K)), differentiated by hand from (2/pi) asin(2K / (1 + 2K)); the code takes
    # a finite difference of the layer's formula (error ~1e-12).
    k, c_w = 0.7, 1.3
    par, perp = susceptibilities("erf", k, C_W=c_w)
    assert perp == pytest.approx(c_w * 4 / math.pi / math.sqrt(1 + 4 * k), rel=1e-10)
    assert par == pytest.approx(c_w * 4 / math.pi / ((1 + 2 * k) * math.sqrt(1 + 4 * k)),
                                rel=1e-9)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown name"):
        criticality("swishy")
    with pytest.raises(TypeError, match="Activation or its name"):
        criticality(3)
    with pytest.raises(TypeError, match="only apply to an activation given by name"):
        criticality(L.ReLU(), negative_slope=0.1)
    with pytest.raises(ValueError, match="no critical initialization"):
        criticality(L.Erf(c=0.5))  # sigma(0) != 0 and no K* > 0 with C_b >= 0
    with pytest.raises(ValueError, match="K must be > 0"):
        susceptibilities("relu", 0.0, C_W=2.0)
    with pytest.raises(ValueError, match="C_W must be > 0"):
        susceptibilities("relu", 1.0, C_W=-1.0)
    with pytest.raises(ValueError, match="finite"):
        susceptibilities("relu", float("nan"), C_W=2.0)
