"""The tangent kernel of a planned network at init against the analytic NTK of its layer spec.

Setting (docs/lazy_rich.md, "Kernel link"): the finite twin of a bias-free ReLU spec, built
in the standard parametrization (``W ~ N(0, W_std^2 / fan_in)``, PyTorch's default scaling,
which is what a plan assumes of an unmodified model), planned against a base model whose
width equals the input dimension ``d``. Then every weight's fan-in multiplier is
``r = width / d`` and

- under NTP, the raw parameter ``w`` of each layer is ``W_std / sqrt(fan_in_base) * N(0, 1)``
  with the forward reading ``(fan_in_base / fan_in)^(1/2) w``, so each layer's gradient is
  ``sqrt(d) / W_std`` times its NTK-parametrization gradient: the eNTK is
  ``c * Theta_spec`` with ``c = d / W_std^2``, up to the ``O(width^-1/2)`` fluctuation;
- under muP the network's output at init is ``r^-1/2`` times the NTP network's (same draws:
  the readout multiplier is ``1/r`` instead of ``r^-1/2``), the raw eNTK keeps only the hidden
  layer's part (input and output contributions fall like ``1/r``), and the eNTK weighted by
  the plan's SGD learning rates, ``sum_l lr_l J_l J_l^T`` (the kernel of the first SGD step),
  equals NTP's exactly, draw for draw: both plans start from the same kernel, and what muP
  changes is that the kernel then moves by O(1) in training instead of freezing.
"""

from __future__ import annotations

import math

import torch

import ntkit as nk
from ntkit import layers as L
from ntkit.parametrize import plan

F64 = torch.float64
D = 24
W_STD = 1.5
LAYERS = ("0", "2", "4")  # the three Dense modules of the serial spec


def _spec(width: int, parametrization: str):
    dense = dict(W_std=W_STD, b_std=None, parametrization=parametrization)
    return L.serial(L.Dense(width, **dense), L.ReLU(), L.Dense(width, **dense), L.ReLU(),
                    L.Dense(1, **dense))


def _planned(width: int, seed: int, parametrization: str):
    model = _spec(width, "standard").module((D,), generator=torch.Generator().manual_seed(seed),
                                            dtype=F64)
    base = _spec(D, "standard").module((D,), generator=torch.Generator().manual_seed(999),
                                       dtype=F64)
    p = plan(model, parametrization, base=base)
    p.apply_(model, generator=torch.Generator().manual_seed(seed))
    return model, p


def _x(n: int = 8):
    return torch.randn(n, D, dtype=F64, generator=torch.Generator().manual_seed(0))


def test_ntp_plan_entk_approaches_the_spec_ntk_like_one_over_sqrt_width():
    # Relative Frobenius error of eNTK / c against the analytic NTK, averaged over 3 seeds.
    # Measured: 0.39, 0.14, 0.06 at widths 96, 384, 1536 (slope -0.68 in log-log): the
    # O(width^-1/2) fluctuation plus an O(1/width) bias that still shows at width 96, so the
    # slope lies between -1/2 and -1; [-0.9, -0.3] rules out a biased limit (slope ~0).
    x = _x()
    c = D / W_STD**2
    widths = (96, 384, 1536)
    errors = []
    for width in widths:
        theta = _spec(width, "ntk").kernel(x, x).ntk
        err = 0.0
        for seed in range(3):
            model, _ = _planned(width, seed, "ntp")
            err += ((nk.empirical_ntk(model, x) / c - theta).norm() / theta.norm()).item() / 3
        errors.append(err)
    slope = math.log(errors[-1] / errors[0]) / math.log(widths[-1] / widths[0])
    assert -0.9 < slope < -0.3, errors
    assert errors[-1] < 0.12, errors


def test_mup_plan_same_learning_rate_weighted_kernel_as_ntp_smaller_output():
    # Identities between two plans of the same draws (float64 rounding only: 1e-10).
    x = _x()
    width = 192
    r = width / D
    for seed in range(2):
        ntp, p_ntp = _planned(width, seed, "ntp")
        mup, p_mup = _planned(width, seed, "mup")
        with torch.no_grad():
            assert torch.allclose(mup(x), ntp(x) / math.sqrt(r), rtol=1e-10, atol=1e-12)
        kernels = []
        for model, p in ((ntp, p_ntp), (mup, p_mup)):
            kernels.append(sum(p.params[f"{layer}.weight"].lr_sgd
                               * nk.empirical_ntk(model, x, params=layer) for layer in LAYERS))
        assert torch.allclose(kernels[1], kernels[0], rtol=1e-10)


def test_mup_raw_entk_keeps_only_the_hidden_layer():
    # Raw eNTK (no learning-rate weights) under muP, per layer, over the trace of the spec's
    # NTK: input and output parts fall like 1/width (slope -1 +- 0.2: their gradients carry
    # the output multiplier 1/r, so they are r^-1/2 of NTP's, whose parts are O(1) with
    # O(width^-1/2) noise; measured -1.10 and -1.08); the hidden part is NTP's own, which
    # converges to c times the hidden layer's share of Theta_spec (an identity, 1e-10).
    x = _x()
    widths = (96, 768)
    traces = {layer: [] for layer in ("0", "4")}
    for width in widths:
        ref = _spec(width, "ntk").kernel(x, x).ntk.trace()
        t = dict.fromkeys(traces, 0.0)
        for seed in range(2):
            model, _ = _planned(width, seed, "mup")
            for layer in traces:
                t[layer] += (nk.empirical_ntk(model, x, params=layer).trace() / ref).item() / 2
            ntp, _ = _planned(width, seed, "ntp")
            assert torch.allclose(nk.empirical_ntk(model, x, params="2"),
                                  nk.empirical_ntk(ntp, x, params="2"), rtol=1e-10)
        for layer in traces:
            traces[layer].append(t[layer])

    def slope(v):
        return math.log(v[1] / v[0]) / math.log(widths[1] / widths[0])

    assert -1.2 < slope(traces["0"]) < -0.8, traces
    assert -1.2 < slope(traces["4"]) < -0.8, traces


def _kernel_movement(width: int, seed: int, parametrization: str, x, y) -> float:
    """||Theta_eta(t) - Theta_eta(0)||_F / ||Theta_eta(0)||_F after 20 SGD steps with the
    plan's learning rates (base lr 0.5 / lambda_max(Theta_eta(0) / n), a stable step)."""
    model, p = _planned(width, seed, parametrization)

    def kernel():
        return sum(p.params[f"{layer}.weight"].lr_sgd
                   * nk.empirical_ntk(model, x, params=layer) for layer in LAYERS)

    k0 = kernel()
    lr = 0.5 * len(x) / torch.linalg.eigvalsh(k0)[-1].item()
    opt = torch.optim.SGD(p.param_groups(lr, optimizer="sgd"))
    for _ in range(20):
        opt.zero_grad()
        (0.5 * ((model(x) - y) ** 2).mean()).backward()
        opt.step()
    return ((kernel() - k0).norm() / k0.norm()).item()


def test_kernel_freezes_under_ntp_and_keeps_moving_under_mup():
    # Same kernel at init (test above), different fate: under NTP the kernel's movement in a
    # fixed number of steps vanishes with width (Jacot et al. 2018), under muP features and
    # kernel move at every width (Yang & Hu 2021). Measured (mean of 2 seeds), widths 96 ->
    # 768: NTP 0.084 -> 0.0074 (x0.09), muP 0.061 -> 0.025 (x0.41; still approaching its
    # O(1) limit at these widths). Bands: NTP falls more than 4x, muP less than 3x, and at
    # width 768 muP moves more than twice as much as NTP.
    x = _x()
    y = torch.sin(2 * x[:, :1])
    move = {par: [sum(_kernel_movement(w, s, par, x, y) for s in range(2)) / 2
                  for w in (96, 768)] for par in ("ntp", "mup")}
    assert move["ntp"][1] < move["ntp"][0] / 4, move
    assert move["mup"][1] > move["mup"][0] / 3, move
    assert move["mup"][1] > 2 * move["ntp"][1], move
