"""ntkit.dkm: deep kernel machines (Yang et al., ICML 2023)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ntkit import layers as L
from ntkit.dkm import DKM, GramMap
from ntkit.dkm._sgpr import output_layer
from ntkit.predict import gp_inference
from ntkit.solve import JitterWarning

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci-dev"


def _problem(n=40, m=20, d=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    xt = torch.randn(m, d, generator=g, dtype=torch.float64)
    return x, y, xt


def _nngp_mean(dkm: DKM, x, y, xt):
    spec = dkm.nngp_spec()
    gp = gp_inference(spec.kernel(x).nngp, y, diag_reg=dkm.noise, diag_reg_absolute_scale=True)
    return gp(spec.kernel(xt, x).nngp).mean


def test_gram_map_gradient_matches_finite_differences():
    # The arc-cosine map's gradient comes from Price's theorem and homogeneity, not autograd:
    # gradcheck compares it with central differences (its own tolerances) up to c = 0.999.
    g = torch.Generator().manual_seed(0)
    q11 = torch.rand(6, generator=g, dtype=torch.float64) + 0.5
    q22 = torch.rand(6, generator=g, dtype=torch.float64) + 0.5
    c = torch.tensor([-0.999, -0.5, 0.0, 0.3, 0.9, 0.999], dtype=torch.float64)
    q12 = c * (q11 * q22).sqrt()
    for act in (L.ReLU(), L.LeakyReLU(0.2), L.Erf()):
        m = GramMap(act, W_std=1.3, b_std=0.2)
        args = tuple(t.clone().requires_grad_() for t in (q12, q11, q22))
        assert torch.autograd.gradcheck(m, args)


@pytest.mark.parametrize("depth,activation", [(1, "relu"), (2, "relu"), (1, "erf")])
def test_large_nu_gives_the_nngp(depth, activation):
    # With every training point inducing, the DKM at nu -> inf is the NNGP's GP posterior
    # mean (ntkit.layers spec, same noise); the distance shrinks like 1 / nu (the optimum
    # moves by O(1/nu) from the prior), so 1e-6 at nu = 1e8 leaves two orders of margin.
    x, y, xt = _problem()
    gaps = []
    for nu in (1e2, 1e4, 1e8):
        dkm = DKM(depth, nu=nu, n_inducing=len(x), activation=activation, W_std=1.5,
                  b_std=0.1, noise=0.05, max_steps=30).fit(x, y)
        gaps.append(float((dkm.predict(xt) - _nngp_mean(dkm, x, y, xt)).abs().max()))
    assert gaps[2] < 1e-6
    assert gaps[0] > 1e-3  # a finite nu does learn something
    assert gaps[1] < gaps[0] / 30  # ~1/nu: 100x per factor 100, with slack


def test_sparse_limit_is_the_inducing_point_gp():
    # With M < N inducing points and the Grams at their prior (no steps), the DKM predicts the
    # Titsias / subset-of-regressors mean K_*i (s K_ii + K_it K_ti)^{-1} K_it y of the NNGP,
    # written here in NumPy from the spec's kernels; agreement to round-off of an M x M solve.
    x, y, xt = _problem(n=60)
    dkm = DKM(2, nu=1.0, n_inducing=15, W_std=1.5, b_std=0.1, noise=0.1, max_steps=0)
    dkm.fit(x, y)
    spec, z = dkm.nngp_spec(), dkm.inducing_
    k_ii, k_it = spec.kernel(z).nngp.numpy(), spec.kernel(z, x).nngp.numpy()
    k_si = spec.kernel(xt, z).nngp.numpy()
    ref = k_si @ np.linalg.solve(0.1 * k_ii + k_it @ k_it.T, k_it @ y.numpy())
    assert np.abs(dkm.predict(xt).numpy() - ref).max() < 1e-8 * np.abs(ref).max()


def test_collapsed_bound_is_the_exact_evidence_with_all_points_inducing():
    x, y, _ = _problem(n=30)
    k = L.serial(L.Dense(8), L.ReLU(), L.Dense(1)).kernel(x).nngp
    ours = output_layer(k, k, k.diagonal(), y[:, None], 0.2).log_likelihood
    ref = torch.distributions.MultivariateNormal(
        torch.zeros(30, dtype=torch.float64), k + 0.2 * torch.eye(30, dtype=torch.float64))
    assert abs(float(ours) - float(ref.log_prob(y))) < 1e-10 * abs(float(ours))


def test_lbfgs_never_decreases_the_objective():
    # The strong-Wolfe line search accepts only points of sufficient decrease of the loss, so
    # the recorded objective is non-decreasing up to the round-off of evaluating it (~1e-12
    # relative for sums of O(N) terms in float64; 1e-10 leaves margin).
    x, y, _ = _problem(n=80)
    dkm = DKM(2, nu=2.0, n_inducing=25, max_steps=40, tol=0.0).fit(x, y)
    h = np.array(dkm.objective_history_)
    assert len(h) == 41
    assert np.all(np.diff(h) >= -1e-10 * np.abs(h[1:]))
    assert h[-1] > h[0] + 1.0  # and it does climb
    assert abs(dkm.objective() - h[-1]) < 1e-9 * abs(h[-1])


def test_multi_output_and_std():
    x, y, xt = _problem()
    y2 = torch.stack([y, -y], 1)
    dkm = DKM(1, nu=1.0, n_inducing=20, max_steps=5).fit(x, y2)
    mean, std = dkm.predict(xt, return_std=True)
    assert mean.shape == (20, 2) and std.shape == (20,)
    # The output layer's kernel is shared by the columns: y -> -y flips the mean exactly.
    assert torch.allclose(mean[:, 0], -mean[:, 1], atol=1e-12)
    assert bool((std >= math.sqrt(dkm.noise)).all())


def test_bad_input():
    x, y, xt = _problem()
    with pytest.raises(ValueError, match="nu"):
        DKM(1, nu=0.0, n_inducing=5)
    with pytest.raises(ValueError, match="nu"):
        DKM(1, nu=-1.0, n_inducing=5)
    with pytest.raises(ValueError, match="nu"):
        DKM(2, nu=[1.0], n_inducing=5)
    with pytest.raises(ValueError, match="nu"):
        DKM(1, nu=float("nan"), n_inducing=5)
    with pytest.raises(ValueError, match="depth"):
        DKM(0, nu=1.0, n_inducing=5)
    with pytest.raises(TypeError, match="depth"):
        DKM(True, nu=1.0, n_inducing=5)
    with pytest.raises(ValueError, match="n_inducing"):
        DKM(1, nu=1.0, n_inducing=0)
    with pytest.raises(ValueError, match="n_inducing"):
        DKM(1, nu=1.0, n_inducing=41).fit(x, y)
    with pytest.raises(ValueError, match="activation"):
        DKM(1, nu=1.0, n_inducing=5, activation="softplus")
    with pytest.raises(TypeError, match="autograd"):
        DKM(1, nu=1.0, n_inducing=5, activation="sin")
    with pytest.raises(ValueError, match="noise"):
        DKM(1, nu=1.0, n_inducing=5, noise=0.0)
    with pytest.raises(ValueError, match="lr"):
        DKM(1, nu=1.0, n_inducing=5, optimizer="adam", lr=0.0)
    with pytest.raises(TypeError, match="y must be"):
        DKM(1, nu=1.0, n_inducing=5).fit(x, y > 0)
    with pytest.raises(ValueError, match="optimizer"):
        DKM(1, nu=1.0, n_inducing=5, optimizer="sgd")
    dkm = DKM(1, nu=1.0, n_inducing=5, max_steps=1)
    with pytest.raises(RuntimeError, match="not fitted"):
        dkm.predict(xt)
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        dkm.fit(bad, y)
    ybad = y.clone()
    ybad[0] = float("inf")
    with pytest.raises(ValueError, match="NaN"):
        dkm.fit(x, ybad)
    with pytest.raises(ValueError, match="shape"):
        dkm.fit(x[:, 0], y)
    with pytest.raises(ValueError, match="shape"):
        dkm.fit(x, y[:-1])
    dkm.fit(x, y)
    with pytest.raises(ValueError, match="shape"):
        dkm.predict(xt[:, :3])


def test_reproduction_dkm_beats_the_nngp_reduced():
    # Reduced reproduction (examples/plot_dkm_vs_nngp.py at its SMALL size): averaged over
    # the sets and folds, the DKM's test RMSE is below the exact NNGP's.
    from ntkit.apps._repro_dkm import dkm_vs_nngp

    names = ("diabetes", "vertebral-column-3clases") if DATA.is_dir() else ("diabetes",)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JitterWarning)
        res = dkm_vs_nngp(names, data_dir=DATA, n_max=120, n_inducing=24, max_steps=10,
                          nus=(10.0,), n_folds=2)
    dkm = np.mean([res.rmse["dkm"][n].mean() for n in names])
    nngp = np.mean([res.rmse["nngp"][n].mean() for n in names])
    assert dkm < nngp


def test_adam_climbs_the_objective():
    # Adam is offered for large problems; it is not monotone step by step, but 40 steps at
    # lr 1e-2 from the prior must raise the objective (L-BFGS reaches more in fewer steps).
    x, y, _ = _problem(n=80)
    h = DKM(2, nu=2.0, n_inducing=25, optimizer="adam", lr=1e-2, max_steps=40,
            tol=0.0).fit(x, y).objective_history_
    assert h[-1] > h[0] + 1.0
