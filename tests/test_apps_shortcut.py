"""ntkit.datasets.shortcut and ntkit.apps.shortcut (Hermann et al., ICLR 2024): the generator's
predictivity and embedding, the reliance measure, and the direction of the availability bias."""

from __future__ import annotations

import math

import pytest
import torch

from ntkit.apps.shortcut import availability_sweep, probe_grid, reliance, shortcut_bias
from ntkit.datasets import shortcut


def test_predictivity_is_the_accuracy_of_each_feature_alone():
    n = 20000
    data = shortcut(n, predictivity=(0.85, 0.6), availability=(2.0, 0.5), dim=7, seed=3)
    for col, p in ((0, 0.85), (1, 0.6)):
        acc = float(((data.z[:, col] > 0) == (data.y > 0)).double().mean())
        assert abs(acc - p) < 4 * math.sqrt(p * (1 - p) / n)  # 4 binomial SEs
    # No noise: x is exactly the amplified latents through orthonormal rows.
    assert torch.allclose(data.x, data.embed(data.z), atol=1e-12)
    assert torch.allclose(data.embedding @ data.embedding.T, torch.eye(2, dtype=data.x.dtype),
                          atol=1e-12)
    norms = torch.linalg.norm(data.x @ data.embedding.T - data.z * data.availability)
    assert float(norms) < 1e-10


def test_reliance_of_the_bayes_rule_and_of_single_feature_rules():
    data = shortcut(10, predictivity=(0.9, 0.7))
    z = probe_grid(data, points=20)
    assert reliance(z[:, 1], z) == 1.0 and reliance(z[:, 0], z) == -1.0
    # Bayes rule weights z_c more (mu_c > mu_s): negative reliance, and zero bias by definition.
    assert reliance(z @ data.bayes_direction(), z) < 0
    assert shortcut_bias(lambda x: x @ data.embedding.T @ (data.bayes_direction()
                                                           / data.availability), data) == 0.0


def test_more_available_shortcut_raises_the_bias_of_ntk_and_trained_mlp():
    r = availability_sweep([0.5, 8.0], n=200, seeds=3, mlp_width=128, mlp_steps=150)
    ntk, lin, mlp = r.bias["ntk"], r.bias["linear"], r.bias["mlp"]
    # Per seed, the NTK predictor's bias grows with the shortcut's availability (measured
    # increase ~0.25, seed spread ~0.03) and more than the linear control's.
    assert (ntk[1] - ntk[0] > 0.1).all()
    assert (ntk[1] - ntk[0] > lin[1] - lin[0]).all()
    assert ntk[1].mean() > 0.1  # over-reliance on the less predictive shortcut
    assert mlp[1].mean() - mlp[0].mean() > 0.05


def test_bad_inputs():
    for bad in ((0.4, 0.7), (0.9, 1.0), (0.9, 1.2)):
        with pytest.raises(ValueError, match=r"predictivity \((core|shortcut)\) must be in"):
            shortcut(10, predictivity=bad)
    for bad in ((0.0, 1.0), (1.0, -2.0)):
        with pytest.raises(ValueError, match=r"availability \((core|shortcut)\) must be > 0"):
            shortcut(10, availability=bad)
    with pytest.raises(ValueError, match="must be finite"):
        shortcut(10, availability=(1.0, float("nan")))
    with pytest.raises(TypeError, match="must be a pair"):
        shortcut(10, predictivity=0.9)
    with pytest.raises(ValueError, match="correlation must be in"):
        shortcut(10, correlation=1.0)
    with pytest.raises(ValueError, match="dim must be >= 2"):
        shortcut(10, dim=1)
    with pytest.raises(ValueError, match="n must be a positive"):
        shortcut(0)
    with pytest.raises(ValueError, match="points must be even"):
        probe_grid(shortcut(10), points=5)
    with pytest.raises(ValueError, match="ratios must be"):
        availability_sweep([0.0, 1.0])
