"""The self-distillation reproduction (examples/plot_self_distillation.py) at reduced size: the
direction of Borup & Andersen's claims over seeds."""

from __future__ import annotations

import numpy as np
import pytest

from ntkit.apps._repro_self_distillation import self_distillation_curves

pytestmark = pytest.mark.usefixtures("single_thread")


def test_ground_truth_guidance_stops_the_collapse():
    c = self_distillation_curves(seeds=5, steps=50, n_test=100, ridge=1e-4)
    mse = c.test_mse  # (seeds, alphas + optimal, steps + 1); alphas (0, 0.1, 0.25, 0.5, 1)
    # alpha = 0 (no guidance): a few steps help the overfitting teacher, then the fit decays
    # toward the zero function, whose error its infinite-step limit equals.
    assert np.all(mse[:, 0].min(1) < mse[:, 0, 0])
    assert np.all(mse[:, 0, -1] > mse[:, 0].min(1))
    assert mse[:, 0, -1].mean() > 1.2 * mse[:, 0].min(1).mean()
    np.testing.assert_allclose(c.limit_mse[:, 0].mean(), c.signal, rtol=1e-12)
    # alpha > 0: the steps converge to the limit (ridge / alpha), no collapse; alpha = 1 is
    # the teacher at every step.
    np.testing.assert_allclose(mse[:, 1:5, -1], c.limit_mse[:, 1:], rtol=1e-3)
    np.testing.assert_allclose(mse[:, 4], mse[:, 4, :1].repeat(51, 1), rtol=1e-9)
    assert np.all(c.limit_mse[:, 1:].max(1) < 0.5 * c.signal)
    # The optimal (held-out, greedy) alpha fits better than alpha = 0 at the last step, in
    # every seed, and better than the teacher.
    assert np.all(mse[:, -1, -1] < mse[:, 0, -1])
    assert np.all(mse[:, -1, -1] < mse[:, -1, 0])
    # The first steps may do best without guidance (alpha = 0), but later steps need it.
    assert np.all((c.optimal[:, -1] > 0) & (c.optimal[:, -1] < 1))
