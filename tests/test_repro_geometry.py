"""The task-geometry reproduction (Alleman, Lindsey & Fusi, ICLR 2024): Tanh hidden layers align
more with the targets, ReLU ones keep more of the inputs; run small, the direction asserted
over seeds."""

import math

import numpy as np
import pytest
import torch

from ntkit.apps._repro_geometry import GeometryRecord, latent_factor_task, task_geometry

# The size of the example's NTKIT_EXAMPLES_SMALL run: 5 seeds, 64 examples, width 64.
SMALL = dict(seeds=range(5), n_latent=5, n_relevant=2, input_dim=32, width=64, repeats=2,
             noise=0.2, steps=300, n_checkpoints=4, learning_rate=5e-3, readout_std=1e-3)


@pytest.fixture(scope="module")
def record() -> GeometryRecord:
    return task_geometry(**SMALL)


def test_tanh_aligns_with_targets_relu_keeps_the_inputs(record):
    # Paired by seed (same task, same initial weights). A one-sided sign test on 5 pairs
    # reaches p = 1/32 < 0.05 only when all 5 agree, so all must. The margins: on these seeds
    # the mean differences are +0.096 (95% interval [0.073, 0.120]) and -0.059
    # ([-0.081, -0.038]); on seeds 5..14 +0.102 and -0.043. A third of the effect is the bar.
    target = record.target_alignment["tanh"][:, -1] - record.target_alignment["relu"][:, -1]
    inputs = record.input_alignment["tanh"][:, -1] - record.input_alignment["relu"][:, -1]
    assert (target > 0).all(), target
    assert (inputs < 0).all(), inputs
    assert target.mean() > 0.03
    assert inputs.mean() < -0.015
    mean, low, high = record.difference("target_alignment", "tanh", "relu")
    assert low[-1] > 0 and math.isclose(mean[-1], target.mean(), rel_tol=1e-12)


def test_the_hidden_layer_learns_the_targets(record):
    # The effect is about learned geometry: both networks fit (squared error from about 1,
    # the variance of the +-1 targets, to below 1e-2) and both hidden layers move towards the
    # targets (target CKA at init is about 0.55 for these inputs).
    for activation in record.activations:
        loss = record.train_loss[activation]
        assert (abs(loss[:, 0] - 1) < 0.05).all() and (loss[:, -1] < 1e-2).all()
        target = record.target_alignment[activation]
        gain = target[:, -1] - target[:, 0]
        assert (gain > 0.1).all(), (activation, gain)


def test_latent_factor_task_covariance_is_closed_form():
    # Over the full hypercube the factors are exactly orthonormal, z^T z / P = I, so without
    # noise x^T x / P = M M^T / D, M the embedding drawn first from the generator.
    d, k, n, repeats = 4, 1, 7, 3
    x, y, z = latent_factor_task(d, k, n, repeats=repeats,
                                 generator=torch.Generator().manual_seed(3))
    p = repeats * 2**d
    assert x.shape == (p, n) and y.shape == (p, k) and z.shape == (p, d)
    torch.testing.assert_close(z.T @ z / p, torch.eye(d, dtype=torch.float64), rtol=0,
                               atol=1e-15)
    m = torch.randn(n, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(x.T @ x / p, m @ m.T / d, rtol=1e-12, atol=1e-12)
    assert torch.equal(y, z[:, :k]) and len(torch.unique(z, dim=0)) == 2**d


def test_interval_is_the_student_t_interval():
    # Values 1, 2, 3: mean 2, sample sd 1. With 2 degrees of freedom the t CDF is
    # 1/2 + t / (2 sqrt(2 + t^2)), so its 0.975 quantile is a sqrt(2 / (1 - a^2)), a = 0.95.
    values = np.array([[1.0], [2.0], [3.0]])
    r = GeometryRecord(activations=("tanh", "relu"), seeds=(0, 1, 2), steps=(0,),
                       target_alignment={"tanh": values, "relu": values / 2},
                       input_alignment={"tanh": values, "relu": values},
                       train_loss={"tanh": values, "relu": values})
    mean, low, high = r.interval("target_alignment", "tanh")
    half = 0.95 * math.sqrt(2 / (1 - 0.95**2)) / math.sqrt(3)
    np.testing.assert_allclose([mean[0], low[0], high[0]], [2, 2 - half, 2 + half], rtol=1e-12)
    mean, low, high = r.difference("target_alignment", "tanh", "relu")
    np.testing.assert_allclose([mean[0], high[0]], [1, 1 + half / 2], rtol=1e-12)
    with pytest.raises(ValueError, match="measure"):
        r.interval("cka", "tanh")
    with pytest.raises(ValueError, match="activation"):
        r.interval("train_loss", "gelu")
    with pytest.raises(ValueError, match="level"):
        r.interval("train_loss", "tanh", level=1.5)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(activations=("tanh", "gelu")), ValueError, "activations"),
    (dict(activations=()), ValueError, "activations"),
    (dict(activations=("relu", "relu")), ValueError, "distinct"),
    (dict(seeds=()), ValueError, "seeds"),
    (dict(seeds=(0, 0)), ValueError, "distinct"),
    (dict(seeds=(True,)), ValueError, "seeds"),
    (dict(seeds=(-1,)), ValueError, "seeds"),
    (dict(n_relevant=5), ValueError, "n_relevant"),
    (dict(n_latent=1, n_relevant=1), ValueError, "n_latent"),
    (dict(n_latent=17), ValueError, "n_latent"),
    (dict(noise=-0.1), ValueError, "noise"),
    (dict(noise=float("nan")), ValueError, "noise"),
    (dict(width=0), ValueError, "width"),
    (dict(steps=2.5), TypeError, "steps"),
    (dict(learning_rate=0.0), ValueError, "learning_rate"),
    (dict(learning_rate=float("inf")), ValueError, "learning_rate"),
    (dict(readout_std=-1.0), ValueError, "readout_std"),
    (dict(dtype=torch.int64), TypeError, "dtype"),
])
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        task_geometry(**{**dict(seeds=(0,), steps=2, width=4, input_dim=4, n_latent=3,
                                n_relevant=1), **kwargs})


def test_divergence_is_reported():
    with pytest.raises(FloatingPointError, match="learning_rate"):
        task_geometry(seeds=(0,), n_latent=3, n_relevant=1, input_dim=8, width=8, steps=50,
                      n_checkpoints=50, learning_rate=1e300)
