import pytest
import torch

from ntkit.apps.demo import kernel_regression_accuracy, run_demo
from ntkit.cli import main


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo(out_dir=out, widths=(64, 1024), seeds=2, n_ntk=40, cnn_train=60,
                    cnn_test=200, progress=False, echo=lambda line: None)


def test_demo_kernel_regression_beats_chance_by_far(small_demo):
    # Infinite-width MLP kernels reach ~98 % on digits (printed by `ntkit demo`); a wrong
    # kernel (e.g. a lost NTK term or a broken arc-cosine) drops far below 95 %.
    for name in ("NNGP", "NTK"):
        assert small_demo.accuracy[name] > 0.95, name


def test_demo_cnn_kernels_beat_the_mlp_on_few_digits(small_demo):
    # Myrtle-5 vs the MLP on 60 training digits (6 per class), 200 test digits, same inputs:
    # measured CNN 91.5 / 92.5 % against MLP 88.0 / 88.0 % (NNGP / NTK). The split is fixed, so
    # this is deterministic; a convolutional kernel that lost its spatial structure (wrong
    # pooling, positions mixed up) would do no better than the MLP, and a broken one falls
    # toward chance (10 %).
    for name in ("NNGP", "NTK"):
        assert small_demo.cnn_accuracy[f"MLP {name}"] > 0.8, name
        assert small_demo.cnn_accuracy[f"CNN {name}"] > small_demo.cnn_accuracy[f"MLP {name}"] \
            + 0.02, name
    assert any("CNN (Myrtle-5)" in line for line in small_demo.lines)


def test_demo_finite_twins_converge_at_about_inverse_sqrt_width(small_demo):
    d64 = sum(small_demo.distances[64]) / 2
    d1024 = sum(small_demo.distances[1024]) / 2
    # Theory: distance ~ width^(-1/2), i.e. a factor 4 from 64 to 1024. Two seeds on 40
    # inputs fluctuate by ~20 % per width; a factor 2.5 to 6.5 (slope -0.33 to -0.68)
    # separates the law from e.g. 1/width (factor 16) or no convergence (factor 1).
    assert 2.5 < d64 / d1024 < 6.5
    assert -0.68 < small_demo.slope < -0.33


def test_demo_writes_png_plot(small_demo):
    assert small_demo.plot is not None and small_demo.plot.exists()
    assert small_demo.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("fitted slope" in line for line in small_demo.lines)


def test_demo_finite_nets_follow_the_closed_form_dynamics(small_demo):
    dyn = small_demo.dynamics
    # Per-network gap to the closed form ~ width^-1/2 (test_predict_twins.py): 64 -> 1024 is
    # a factor 4 in theory; measured 0.37 -> 0.11 with 4 seeds. The loss falls with training.
    assert dyn.gap[1024] < 0.6 * dyn.gap[64] and dyn.gap[1024] < 0.2
    assert dyn.closed_form_loss[-1] < 0.5 * dyn.closed_form_loss[0]
    assert dyn.plot.exists()


def test_kernel_regression_accuracy_on_a_separable_toy_problem():
    # Linear kernel on two well separated clusters: every test point is classified right,
    # while flipping the test labels gives accuracy 0 -- the function reads labels correctly.
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20, 2, generator=g, dtype=torch.float64) + 5,
                   torch.randn(20, 2, generator=g, dtype=torch.float64) - 5])
    y = torch.cat([torch.zeros(20, dtype=torch.long), torch.ones(20, dtype=torch.long)])
    k = x @ x.T + 1.0
    tr, te = torch.arange(0, 40, 2), torch.arange(1, 40, 2)
    assert kernel_regression_accuracy(k[tr][:, tr], k[te][:, tr], y[tr], y[te]) == 1.0
    assert kernel_regression_accuracy(k[tr][:, tr], k[te][:, tr], y[tr], 1 - y[te]) == 0.0


@pytest.mark.parametrize("argv", [["demo", "--widths", "64"], ["demo", "--seeds", "0"]])
def test_cli_rejects_bad_demo_arguments(argv, capsys):
    assert main(argv) == 2
    assert "ntkit demo" in capsys.readouterr().err


def test_cli_rejects_malformed_widths():
    with pytest.raises(SystemExit) as err:
        main(["demo", "--widths", "64,abc"])
    assert err.value.code == 2
