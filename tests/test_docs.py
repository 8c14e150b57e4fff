"""The docs site builds (``mkdocs build --strict``, as ``make docs``), and shows what it should.

The build runs on a copy of the site's sources in a temporary folder, so that it always runs
every example afresh (mkdocs-gallery skips examples whose output it already has) and leaves
the checkout untouched; the examples run at their reduced size (``NTKIT_EXAMPLES_SMALL=1``).
Deselect with ``-m "not docs"``.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ntkit

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("plot_*.py"))
# Subpackages documented on a page of their own elsewhere: the applications are commands
# (docs/cli.md), and `ntkit.cli` is the command itself.
NOT_API = {"apps", "cli"}


def _text(page: Path) -> str:
    """A built page's visible text: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs_gallery", reason="the docs extra is not installed "
                                                 '(pip install -e ".[docs]")')
    pytest.importorskip("mkdocstrings_handlers.python", reason="the docs extra is not installed")
    work = tmp_path_factory.mktemp("docs")
    shutil.copy(ROOT / "mkdocs.yml", work)
    shutil.copytree(ROOT / "docs", work / "docs", ignore=shutil.ignore_patterns("generated"))
    shutil.copytree(ROOT / "examples", work / "examples")
    (work / "bench").mkdir()
    shutil.copy(ROOT / "bench" / "RESULTS.md", work / "bench")
    (work / "src").symlink_to(ROOT / "src", target_is_directory=True)
    env = {**os.environ, "NTKIT_EXAMPLES_SMALL": "1", "MPLBACKEND": "Agg",
           "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", "site"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-6000:]}"
    return work / "site"


@pytest.mark.docs
def test_every_example_runs_and_shows_its_figure(site):
    assert EXAMPLES, "examples/ has no plot_*.py script"
    gallery = site / "generated" / "gallery"
    index = (gallery / "index.html").read_text(encoding="utf-8")
    for name in EXAMPLES:
        assert f"{name}/" in index, f"the gallery's index does not link {name}"
        page = (gallery / name / "index.html").read_text(encoding="utf-8")
        figure = f"mkd_glr_{name}_001.png"
        assert figure in page, f"{name}'s page shows no figure"
        # A real plot, not an empty canvas (a blank figure of these sizes is under 5 kB).
        assert (gallery / "images" / figure).stat().st_size > 10_000


@pytest.mark.docs
def test_example_pages_show_their_printed_results(site):
    gallery = site / "generated" / "gallery"
    # What each example prints when its computation succeeded (the gallery shows stdout).
    printed = {
        "plot_infinite_vs_finite": r"fitted slope -0\.\d+ \(theory: -0\.5\)",
        "plot_closed_form_dynamics": r"largest \|twin - its closed form\| on test inputs",
        "plot_empirical_ntk_user_model": r"structured: relative difference to the Jacobian "
                                         r"product \d\.\de-1[3-6]",
        "plot_uci_estimators": r"NTK: best \{.*\}, cross-validated accuracy 0\.\d+",
        "plot_learning_curve_from_ntk": r"n = +\d+: predicted \d\.\d+, measured \d\.\d+",
        "plot_mup_coord_check": r"mup: best learning rate per width \{64: ",
        "plot_siren_winner": r"siren-winner (broadband 1-D|china\.jpg): top-\d+ eNTK energy SIREN "
                             r"[\d.]+ WINNER [\d.]+; PSNR at step \d+ SIREN [\d.]+ WINNER [\d.]+ "
                             r"dB; at step \d+ SIREN [\d.]+ WINNER [\d.]+ dB",
        "plot_criticality": r"relu width +\d+ depth \d+: n kappa4 / 3K\^2 = \d+\.\d+ \+- "
                            r"\d+\.\d+ \(leading order \d+\.\d+\)",
        "plot_deep_limit_classifiers": r"deep limit of relu, NTK: majority_vote \(alpha -\), "
                                       r"agreement [01]\.\d+ at depth \d+",
        "plot_tangent_task_arithmetic": r"disentanglement error \(mean over \[-3, 3\]\^2\): "
                                        r"non-linear \d\.\d+ ± \d\.\d+, tangent \d\.\d+ ± "
                                        r"\d\.\d+",
        "plot_dkm_vs_nngp": r"DKM has the lower test RMSE than the exact NNGP on \d+ of \d+ sets",
        "plot_grokking_lazy_rich": r"alpha +[\d.e-]+: loss < 0\.1 x initial at step ~\d+ "
                                   r"\(train\), ~\d+ \(test\); alignment \d\.\d{3} -> "
                                   r"\d\.\d{3}",
        "plot_student_t_nngp": r"corruption \d\.\d: Student-t -?\d\.\d{3}; minus Gaussian NNGP "
                               r"\(sigma\^2 = 1\) [+-]\d\.\d{3} nats, minus tuned Gaussian "
                               r"[+-]\d\.\d{3} nats",
        "plot_self_distillation": r"step \d+: optimal alpha test MSE \d\.\d{3} vs alpha = 0 "
                                  r"\d\.\d{3} \(better in \d+/\d+ seeds",
        "plot_permutation_ensembles": r"permutation ensemble complexity: k=\d+\.\.\d+ one-input "
                                      r"M \d+->\d+ \(exponent [\d.]+;",
        "plot_shortcut_learning": r"shortcut bias \(ratio [\d.]+ -> [\d.]+\): ntk [+-][\d.]+ -> "
                                  r"[+-][\d.]+",
        "plot_attention_kernels": r"attention: test accuracy \d\.\d{3} ± \d\.\d{3} over \d+ seeds",
        "plot_task_geometry": r"width 64, small readout: tanh - relu after \d+ steps over \d+ "
                              r"seeds: target alignment [+-]\d\.\d+ \[[+-]\d\.\d+, [+-]\d\.\d+\] "
                              r"\(tanh higher in \d+/\d+\), input alignment [+-]\d\.\d+",
    }
    assert set(printed) == set(EXAMPLES), "a new example needs its expected output here"
    for name, pattern in printed.items():
        assert re.search(pattern, _text(gallery / name / "index.html")), name


@pytest.mark.docs
def test_api_pages_render_signatures_and_doctests(site):
    text = _text(site / "api" / "empirical" / "index.html")
    signature = re.search(r"empirical_ntk\(\s*model: Module,\s*x1: Tensor,\s*x2: Tensor \| None"
                          r" = None,\s*\*,\s*strategy: str = \"auto\",\s*outputs: str = "
                          r"\"trace\"", text)
    assert signature, "the empirical_ntk signature is missing from its API page"
    page = (site / "api" / "layers" / "index.html").read_text(encoding="utf-8")
    assert 'id="ntkit.layers.Dense"' in page
    # Doctests (the "Example:" sections) render as highlighted code, not prose.
    assert '<span class="gp">&gt;&gt;&gt; </span>' in page


@pytest.mark.docs
def test_cli_page_shows_the_parsers_help(site):
    text = _text(site / "cli" / "index.html")
    for command in ("demo", "uci", "kernel"):
        assert f"usage: ntkit {command}" in text
    assert "<!-- ntkit --help" not in (site / "cli" / "index.html").read_text(encoding="utf-8")


@pytest.mark.docs
def test_results_page_includes_bench_results(site):
    text = _text(site / "results" / "index.html")
    assert "Collected from code comments" in text
    assert "bench/empirical_ntk.py --n 64,256 --repeats 5" in text


def test_every_public_subpackage_has_an_api_page():
    """Cheap and not marked: a new subpackage of ``ntkit`` needs a page in docs/api/ and in the
    nav of mkdocs.yml."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    modules = [name for name in ntkit.__all__ if name not in NOT_API
               and importlib.util.find_spec(f"ntkit.{name}") is not None]
    assert {"layers", "empirical", "predict", "solve", "tiles", "estimators"} <= set(modules)
    for name in modules:
        page = ROOT / "docs" / "api" / f"{name}.md"
        assert page.is_file(), f"docs/api/{name}.md is missing"
        assert f"::: ntkit.{name}" in page.read_text(encoding="utf-8")
        assert f"api/{name}.md" in config, f"api/{name}.md is not in the nav of mkdocs.yml"
