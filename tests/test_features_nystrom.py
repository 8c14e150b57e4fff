"""ntkit.features.Nystroem: the Nyström kernel on and off the landmarks, convergence in the
number of landmarks, the transformer / Module contract, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone

from ntkit import layers as L
from ntkit.features import Nystroem

NET = L.serial(L.Dense(1, b_std=0.1), L.ReLU(), L.Dense(1, b_std=0.1), L.ReLU(),
               L.Dense(1, b_std=0.1))


def _x(n: int, d: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_features_give_the_projected_kernel():
    x, z = _x(300), _x(40, seed=1)
    phi = Nystroem(NET, n_components=50, random_state=0).fit(x)
    c = phi.landmarks_
    k = lambda a, b: NET.kernel(a, b, get="ntk").ntk  # noqa: E731
    # phi(z) phi(x)^T = k(z, C) K_CC^-1 k(C, x), here by a direct solve (another route than
    # the eigendecomposition inside): both well within 1e-8 for cond(K_CC) ~ 1e4.
    want = k(z, c) @ torch.linalg.solve(k(c, c), k(c, x))
    assert torch.allclose(phi(z) @ phi(x).T, want, rtol=0, atol=1e-8)
    assert torch.equal(phi.landmarks_, x[phi.landmark_indices_])


@pytest.mark.parametrize("sampling", ["uniform", "rls"])
def test_error_falls_as_landmarks_grow(sampling):
    x = _x(400, d=3, seed=2)
    k = NET.kernel(x, get="ntk").ntk
    errs = []
    for m in (10, 40, 160, 400):
        f = Nystroem(NET, n_components=m, sampling=sampling, random_state=0).fit_transform(x)
        errs.append(float((f @ f.T - k).norm() / k.norm()))
    # The Nyström error is the kernel's spectrum beyond the landmarks' span: it falls with m
    # (seeded; each step is a factor > 2 here) and is round-off at m = N.
    assert errs[0] > errs[1] > errs[2] > 0 and errs[3] < 1e-8, errs


def test_rls_beats_uniform_on_clustered_inputs():
    # One tight cluster plus spread-out points: uniform landmarks spend themselves on the
    # cluster, leverage scores spread them. Measured: RLS errors 0.0046-0.0057, uniform
    # 0.0077-0.0082 over 6 seeds; the test asks every RLS run to beat every uniform one.
    g = torch.Generator().manual_seed(3)
    x = torch.cat([0.05 * torch.randn(480, 3, generator=g, dtype=torch.float64),
                   3 * torch.randn(20, 3, generator=g, dtype=torch.float64)])
    rbf = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / 2)  # noqa: E731
    k = rbf(x, x)

    def errors(sampling):
        out = []
        for s in range(4):
            f = Nystroem(rbf, n_components=25, sampling=sampling, random_state=s).fit(x)(x)
            out.append(float((f @ f.T - k).norm() / k.norm()))
        return out

    assert max(errors("rls")) < min(errors("uniform"))


def test_transformer_and_module_contract():
    x = _x(60).numpy()
    phi = Nystroem(NET, n_components=8, random_state=0)
    assert clone(phi).get_params()["n_components"] == 8
    out = phi.fit(x).transform(x)
    assert isinstance(out, np.ndarray) and out.shape == (60, 8) and out.dtype == np.float64
    f32 = phi.fit(x.astype(np.float32)).transform(x.astype(np.float32))
    assert f32.dtype == np.float32
    t = phi(torch.from_numpy(x).float())
    assert t.dtype == torch.float32 and t.shape == (60, 8)
    # Same seed, same landmarks; the NNGP gives other features than the NTK.
    a = Nystroem(NET, n_components=8, random_state=1).fit_transform(x)
    b = Nystroem(NET, n_components=8, random_state=1).fit_transform(x)
    c = Nystroem(NET, n_components=8, get="nngp", random_state=1).fit_transform(x)
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_bad_input():
    x = _x(20)
    with pytest.raises(ValueError, match="n_components.*N=20"):
        Nystroem(NET, n_components=21).fit(x)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Nystroem(NET, n_components=5).fit(bad)
    with pytest.raises(ValueError, match="sampling"):
        Nystroem(NET, n_components=5, sampling="kmeans").fit(x)
    with pytest.raises(ValueError, match="n_components"):
        Nystroem(NET, n_components=0).fit(x)
    with pytest.raises(TypeError, match="kernel"):
        Nystroem(n_components=5).fit(x)
    with pytest.raises(ValueError, match="3 features"):
        Nystroem(NET, n_components=5).fit(x).transform(x[:, :3])
