"""The UCI small-data benchmark of Arora et al., "Harnessing the Power of Infinitely Wide Deep
Nets on Small-data Tasks" (ICLR 2020), on folders in the Fernández-Delgado et al. format.

Protocol ``"paper"`` (exactly the authors'): the ReLU NTK of ``L = 0..4`` hidden layers with
the bottom ``fix = 0..L`` layers frozen, input kernel ``Sigma^0 = x . x'``, weight variance 1,
no biases; a C-SVM on the precomputed kernel with ``C`` in ``1e-2 .. 1e4``. ``(L, fix, C)`` is
chosen by accuracy on the validation split of ``conxuntos.dat`` (first line trains, second
validates); the reported figure is the mean test accuracy over the 4 folds of
``conxuntos_kfold.dat``. Ties go to the first candidate in grid order: ``L`` ascending, then
``fix`` ascending, then ``C`` ascending.

Protocol ``"extended"`` adds candidates that the same split selects among: the kernels of
:func:`extended_kernels` (NNGP as well as NTK; ReLU, leaky ReLU of slope 0.1, GELU, erf; with
and without biases), each with the C-SVM over the same C grid and kernel ridge over
:data:`KRR_ALPHA`. Ties go to the first in grid order (the paper's candidates first, SVM before
ridge). On a set of at
most :data:`EXTENDED_SMALL_N` samples, a candidate's score is its mean accuracy over both
directions of ``conxuntos.dat`` (train on the first line and validate on the second, then the
reverse): less noise when choosing among many candidates on one small split. On a larger set,
whose validation half already has more than 500 samples, the score is the forward direction
only and the other families are fitted by kernel ridge only (the C-SVMs there cost minutes per
kernel); the paper's family keeps its SVMs. The score is reported as ``validation_accuracy``.
The test folds are never looked at before the choice is made.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

from .._paths import prepare_output_file
from ..datasets import UCIDataset, UCIFormatError, load_uci
from ..family import fc_kernel_family
from ..layers import activation
from ..solve import centred_one_hot, kernel_ridge

__all__ = ["PAPER_C", "PROTOCOLS", "extended_kernels", "paper_kernels", "run_dataset",
           "run_uci", "uci_folders"]

PAPER_C: tuple[float, ...] = tuple(10.0**k for k in range(-2, 5))
"""The C grid of the paper: ``1e-2, 1e-1, ..., 1e4``."""

KRR_ALPHA: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""Kernel ridge ridges of the extended protocol, relative to the mean diagonal of ``K_train``."""

PROTOCOLS = ("paper", "extended")

EXTENDED_SMALL_N = 1000
"""Largest set on which the extended protocol scores both directions of the validation split and
fits the C-SVM on every kernel family (see the module docstring)."""
MAX_DEPTH = 4

# libsvm's kernel-row cache (MB); the largest training split (2500 samples) fits whole.
_SVC_CACHE_MB = 1000

SVC_MAX_ITER = 10_000_000
"""Iteration cap of each libsvm solve, as upstream libsvm caps it (``max(1e7, 100 l)``, which is
1e7 for every split here). scikit-learn lifts the cap (``max_iter=-1``), and then some fits on
non-separable data at large C (the linear kernel, ``L = 0``, at ``C >= 1e3``) do not finish in
minutes even on 100-sample sets. The cap cannot change a fit that converges; fits that hit it are
counted in each result's ``"capped_fits"`` (39 of about 4,900 fits on the 45 development sets)."""

EXTENDED_MAX_ITER = 1_000_000
"""The extended protocol's cap: ten times lower, since it fits each kernel in both directions and
a fit that has not converged by then is the linear kernel at a huge C (counted as capped)."""

KernelSource = Iterator[tuple[int, dict, Callable[[], np.ndarray]]]


def paper_kernels(x: np.ndarray, depths: Sequence[int] | None = None) -> KernelSource:
    """The 15 ReLU NTKs of the paper, in grid order (``L`` ascending, then ``fix``).

    **Arguments:** ``x`` ``(N, d)`` float64 features; ``depths`` keeps only those ``L``
    (default: all of ``0..4``).

    **Returns:** an iterator of ``(index, params, get)``: ``index`` the position in the full
    grid, ``params = {"L": L, "fix": fix}``, and ``get()`` the ``(N, N)`` float64 kernel
    ``Theta(L, fix)`` of the README recursion.
    """
    depths = range(MAX_DEPTH + 1) if depths is None else depths
    # ntkit's input kernel is x.x'/d; scaling x by sqrt(d) gives the paper's Sigma^0 = x.x'.
    family = fc_kernel_family(torch.from_numpy(x * math.sqrt(x.shape[1])),
                              max_depth=max(depths))
    index = 0
    for L in range(MAX_DEPTH + 1):
        for fix in range(L + 1):
            if L in depths:
                yield index, {"L": L, "fix": fix}, (lambda L=L, fix=fix:
                                                    family.ntk(L, fix).numpy())
            index += 1


# (activation name, its keyword arguments, W_std, b_std, input scaling): the kernel families of
# the extended grid; names are those of ntkit.layers.ACTIVATIONS. Leaky ReLU has slope 0.1 here,
# not the registry's default 0.01: the extended protocol's figures were measured with 0.1.
# "paper" scaling is Sigma^0 = x.x' (features standardized, so pre-activations of variance ~d);
# "unit" is ntkit's x.x'/d (variance ~1), where bounded activations are not saturated and a bias
# of b_std = 0.1 is not negligible. W_std = sqrt(2) is the He initialisation for (leaky) ReLU.
EXTENDED_FAMILIES: tuple[tuple[str, dict[str, float], float, float, str], ...] = (
    ("relu", {}, 1.0, 0.0, "paper"),
    ("relu", {}, math.sqrt(2.0), 0.1, "unit"),
    ("leaky_relu", {"negative_slope": 0.1}, math.sqrt(2.0), 0.1, "unit"),
    ("gelu", {}, math.sqrt(2.0), 0.1, "unit"),
    ("erf", {}, 1.5, 0.1, "unit"),
)


def extended_kernels(x: np.ndarray, depths: Sequence[int] | None = None) -> KernelSource:
    """The kernels of the extended protocol, in grid order.

    The first family of :data:`EXTENDED_FAMILIES` is the paper's: every NTK ``(L, fix)`` (so the
    paper grid is a subset) and the NNGP of ``L = 1..4``. Each other family (activation,
    ``W_std``, ``b_std``, input scaling) adds the NTK (``fix = 0``) and the NNGP of
    ``L = 1..4``; ``L = 0`` would only repeat the linear kernel.

    **Arguments:** ``x`` ``(N, d)`` float64 features; ``depths`` keeps only those ``L``.

    **Returns:** an iterator of ``(index, params, get)`` with ``index`` the position in the
    full grid and ``get()`` an ``(N, N)`` float64 kernel.
    """
    depths = range(MAX_DEPTH + 1) if depths is None else depths
    d = x.shape[1]
    index = 0
    for i, (act, act_kwargs, W_std, b_std, scaling) in enumerate(EXTENDED_FAMILIES):
        xs = torch.from_numpy(x * math.sqrt(d) if scaling == "paper" else x)
        family = fc_kernel_family(xs, max_depth=max(depths),
                                  activation=activation(act, **act_kwargs),
                                  W_std=W_std, b_std=b_std)
        base = {"activation": act, **act_kwargs, "W_std": W_std, "b_std": b_std,
                "input": scaling}
        for L in range(0 if i == 0 else 1, MAX_DEPTH + 1):
            for fix in range(L + 1 if i == 0 else 1):
                if L in depths:
                    yield (index, {**base, "kernel": "ntk", "L": L, "fix": fix},
                           lambda f=family, L=L, fix=fix: f.ntk(L, fix).numpy())
                index += 1
            if L > 0:
                if L in depths:
                    yield (index, {**base, "kernel": "nngp", "L": L},
                           lambda f=family, L=L: f.nngp(L).numpy())
                index += 1


def _svc_accuracies(K: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                    Cs: Sequence[float], capped: list[int] | None = None,
                    max_iter: int = SVC_MAX_ITER) -> list[float]:
    """Test accuracy of ``SVC(kernel="precomputed", C=C)`` trained on ``train``, for each C;
    appends to ``capped`` the index of each C whose solve stopped at :data:`SVC_MAX_ITER`."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import SVC

    k_train = np.ascontiguousarray(K[np.ix_(train, train)])
    k_test = np.ascontiguousarray(K[np.ix_(test, train)])
    out = []
    for i, C in enumerate(Cs):
        svc = SVC(kernel="precomputed", C=C, cache_size=_SVC_CACHE_MB, max_iter=max_iter)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            svc.fit(k_train, y[train])
        if capped is not None and any(issubclass(w.category, ConvergenceWarning)
                                      for w in caught):
            capped.append(i)
        out.append(float(np.mean(svc.predict(k_test) == y[test])))
    return out


def _krr_accuracies(K: np.ndarray, y: np.ndarray, n_classes: int, train: np.ndarray,
                    test: np.ndarray, alphas: Sequence[float]) -> list[float]:
    """Test accuracy of kernel ridge regression on centred one-hot targets (argmax of the
    prediction), for each ridge ``alpha * mean(diag K_train)``."""
    k_train = torch.from_numpy(K[np.ix_(train, train)])
    k_test = torch.from_numpy(K[np.ix_(test, train)])
    targets = centred_one_hot(torch.from_numpy(y[train]), n_classes)
    out = []
    for alpha in alphas:
        coef = kernel_ridge(k_train, targets, alpha=alpha)
        pred = (k_test @ coef).argmax(1).numpy()
        out.append(float(np.mean(pred == y[test])))
    return out


def _learner_accuracies(protocol: str, K: np.ndarray, ds: UCIDataset, train: np.ndarray,
                        test: np.ndarray, c_indices: Sequence[int], krr: bool,
                        capped: list[int]) -> list[tuple[int, dict, float]]:
    """``(learner index, learner params, accuracy)`` for the SVMs with ``PAPER_C[i]`` for ``i``
    in ``c_indices`` and, when ``krr`` (extended protocol only), kernel ridge for each alpha."""
    max_iter = EXTENDED_MAX_ITER if protocol == "extended" else SVC_MAX_ITER
    Cs = [PAPER_C[i] for i in c_indices]
    accs = _svc_accuracies(K, ds.y, train, test, Cs, capped, max_iter)
    out = [(i, {"learner": "svc", "C": C} if protocol == "extended" else {"C": C}, acc)
           for i, C, acc in zip(c_indices, Cs, accs, strict=True)]
    if protocol == "extended" and krr:
        accs = _krr_accuracies(K, ds.y, ds.n_classes, train, test, KRR_ALPHA)
        out += [(len(PAPER_C) + j, {"learner": "krr", "alpha": a}, acc)
                for j, (a, acc) in enumerate(zip(KRR_ALPHA, accs, strict=True))]
    return out


def _sources(protocol: str):
    return paper_kernels if protocol == "paper" else extended_kernels


def _load(folder, max_samples: int) -> UCIDataset | dict:
    name = Path(folder).name
    try:
        ds = load_uci(folder)
    except UCIFormatError as err:
        return {"dataset": name, "skipped": True, "reason": err.problem}
    if ds.n > max_samples:
        return {"dataset": name, "skipped": True,
                "reason": f"{ds.n} samples > max_samples={max_samples}"}
    return ds


def _parts() -> list[tuple[tuple[int, ...], tuple[int, ...], bool]]:
    """How one set's selection is cut into jobs ``(depths, C indices, with ridge)``: each depth
    ``L >= 1`` is one job; the linear kernel ``L = 0``, whose large-C SVMs are by far the slowest
    fits, is one job per C so that two workers can share a large set."""
    all_c = tuple(range(len(PAPER_C)))
    return ([((0,), (i,), i == 0) for i in all_c]
            + [((L,), all_c, True) for L in range(1, MAX_DEPTH + 1)])


def _select_part(folder, protocol: str, max_samples: int, depths: tuple[int, ...],
                 c_indices: tuple[int, ...], krr: bool) -> dict:
    """Scores of one part of the grid on the validation split.

    **Returns:** ``{"scores": [((kernel index, learner index), params, score), ...],
    "capped": int, "seconds": float}``, or a skipped entry. In the extended protocol on a set
    of at most :data:`EXTENDED_SMALL_N` samples the score is the mean over both directions of
    ``conxuntos.dat`` (train -> validation and back); on a larger set it is the forward
    direction, and only the paper's family is fitted by the C-SVM.
    """
    start = time.perf_counter()
    ds = _load(folder, max_samples)
    if isinstance(ds, dict):
        return ds
    scores, capped = [], []
    small = protocol == "extended" and ds.n <= EXTENDED_SMALL_N
    for k, kernel_params, get in _sources(protocol)(ds.x, depths):
        K = get()
        svc = c_indices if small or kernel_params.get("input", "paper") == "paper" else ()
        fwd = _learner_accuracies(protocol, K, ds, ds.train, ds.validation, svc, krr, capped)
        if small:
            back = _learner_accuracies(protocol, K, ds, ds.validation, ds.train, svc, krr,
                                       capped)
            fwd = [(j, p, (a + b) / 2) for (j, p, a), (_, _, b) in zip(fwd, back, strict=True)]
        scores += [((k, j), {**kernel_params, **p}, acc) for j, p, acc in fwd]
        del K
    return {"scores": scores, "capped": len(capped), "seconds": time.perf_counter() - start}


def _choose(parts: list[dict]) -> tuple[dict, float]:
    """The best score; ties go to the first in grid order (kernel index, then learner)."""
    scores = [s for part in parts for s in part["scores"]]
    _, params, acc = min(scores, key=lambda s: (-s[2], s[0]))
    return params, acc


def _fit_accuracy(params: dict, K: np.ndarray, ds: UCIDataset, train: np.ndarray,
                  test: np.ndarray, capped: list[int]) -> float:
    if "learner" not in params:  # the paper protocol
        return _svc_accuracies(K, ds.y, train, test, [params["C"]], capped)[0]
    if params["learner"] == "svc":
        return _svc_accuracies(K, ds.y, train, test, [params["C"]], capped,
                               EXTENDED_MAX_ITER)[0]
    return _krr_accuracies(K, ds.y, ds.n_classes, train, test, [params["alpha"]])[0]


def _test_part(folder, protocol: str, max_samples: int, params: dict) -> dict:
    """Mean accuracy over the 4 folds of ``conxuntos_kfold.dat`` with the chosen ``params``:
    ``{"dataset", "n", "features", "classes", "test_accuracy", "capped", "seconds"}``."""
    start = time.perf_counter()
    ds = _load(folder, max_samples)
    for _, kernel_params, get in _sources(protocol)(ds.x, (params["L"],)):
        if all(params.get(k) == v for k, v in kernel_params.items()):
            K = get()
            break
    capped: list[int] = []
    test = [_fit_accuracy(params, K, ds, tr, te, capped) for tr, te in ds.folds]
    return {"dataset": ds.name, "n": ds.n, "features": ds.n_features, "classes": ds.n_classes,
            "test_accuracy": float(np.mean(test)), "capped": len(capped),
            "seconds": time.perf_counter() - start}


def _result(parts: list[dict], test: dict, params: dict, acc: float) -> dict:
    return {"dataset": test["dataset"], "n": test["n"], "features": test["features"],
            "classes": test["classes"], "params": params, "validation_accuracy": acc,
            "test_accuracy": test["test_accuracy"],
            "capped_fits": sum(p["capped"] for p in parts) + test["capped"],
            "seconds": round(sum(p["seconds"] for p in parts) + test["seconds"], 3)}


def run_dataset(folder, protocol: str = "paper", max_samples: int = 5000) -> dict:
    """Run the protocol on one folder, in this process.

    **Returns:** ``{"dataset", "n", "features", "classes", "params", "validation_accuracy",
    "test_accuracy", "capped_fits", "seconds"}`` (accuracies as fractions; ``seconds`` is
    compute time), or ``{"dataset", "skipped": True, "reason"}`` for a malformed folder or one
    with more than ``max_samples`` samples.
    """
    parts = []
    for depths, c_indices, krr in _parts():
        parts.append(_select_part(folder, protocol, max_samples, depths, c_indices, krr))
        if parts[-1].get("skipped"):
            return parts[-1]
    params, acc = _choose(parts)
    return _result(parts, _test_part(folder, protocol, max_samples, params), params, acc)


def uci_folders(data_dir, datasets: Sequence[str] | None = None) -> list[Path]:
    """The set folders under ``data_dir`` (sorted by name), or those named in ``datasets``.

    **Raises:** ``FileNotFoundError`` for a missing ``data_dir``; ``KeyError`` naming any
    entry of ``datasets`` that has no folder.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"UCI data folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if datasets is None:
        return folders
    by_name = {p.name: p for p in folders}
    unknown = [d for d in datasets if d not in by_name]
    if unknown:
        raise KeyError(f"unknown data set(s) in {root}: {', '.join(unknown)}")
    return [by_name[d] for d in dict.fromkeys(datasets)]


def _size(folder: Path) -> int:
    try:
        return (folder / f"{folder.name}_R.dat").stat().st_size
    except OSError:
        return 0


def _worker_init() -> None:
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def format_result(r: dict) -> str:
    """One line for a result (or skipped entry) of :func:`run_dataset`."""
    if r.get("skipped"):
        return f"{r['dataset']:32s} SKIPPED: {r['reason']}"
    params = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in r["params"].items())
    return (f"{r['dataset']:32s} n={r['n']:<5d} d={r['features']:<4d} "
            f"classes={r['classes']:<3d} {params}  val={100 * r['validation_accuracy']:.2f}% "
            f"test={100 * r['test_accuracy']:.2f}%  {r['seconds']:.1f}s")


def run_uci(data_dir, *, datasets: Sequence[str] | None = None, protocol: str = "paper",
            max_samples: int = 5000, workers: int = 2, progress: bool = True,
            echo: Callable[[str], None] | None = print, json_path=None) -> dict:
    """Run a protocol on every set folder of ``data_dir`` (or those named in ``datasets``).

    With ``workers > 1`` the work runs in a pool of that many processes (one thread each), cut
    into parts of each set's grid, largest sets first (``workers=1``: in this process, set by
    set). The result does not depend on the cut: the choice is the best validation score with
    ties to the first in grid order. Each line is echoed as its set finishes; ``echo=None``
    prints nothing.

    **Returns:** ``{"protocol", "results": [{"dataset", "n", "features", "classes", "params",
    "validation_accuracy", "test_accuracy", "seconds"}, ...] (sorted by name), "skipped":
    [{"dataset", "reason"}, ...], "mean_test_accuracy", "seconds"}``; accuracies are
    fractions in ``[0, 1]`` and the mean is over the sets that ran (``None`` if none did).
    With ``json_path`` (a file path) the same is also written there as JSON; the location is
    checked, and its missing folders created, before any set runs.

    **Raises:** ``ValueError`` for a bad ``protocol``, ``workers`` or ``json_path`` (a folder,
    or a location that cannot be created or written), before any work.
    """
    from tqdm.auto import tqdm

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}; got {protocol!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int; got {workers!r}")
    if json_path is not None:
        json_path = prepare_output_file(json_path, name="json_path")
    start = time.perf_counter()
    folders = sorted(uci_folders(data_dir, datasets), key=_size, reverse=True)
    bar = tqdm(total=len(folders), desc=f"uci {protocol}", unit="set", disable=not progress)

    def report(r: dict, steps: int = 1) -> None:
        bar.update(steps)
        if echo is not None:
            with tqdm.external_write_mode():
                echo(format_result(r))

    done: list[dict] = []
    if workers == 1:
        for f in folders:
            done.append(run_dataset(f, protocol, max_samples))
            report(done[-1])
    else:
        import multiprocessing

        # Jobs are parts of one set's grid (see _parts), largest sets first; a set's test job
        # is queued once all its parts are in. Each worker is single-threaded, like libsvm.
        ctx = multiprocessing.get_context("spawn")
        # The bar counts jobs here: each set's parts, then its test job.
        bar.reset(total=len(folders) * (len(_parts()) + 1))
        bar.unit = "job"
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
            pending: dict = {}
            parts: dict[Path, list[dict]] = {f: [] for f in folders}
            for f in folders:
                for part in _parts():
                    pending[pool.submit(_select_part, f, protocol, max_samples, *part)] = f
            while pending:
                fut = next(as_completed(pending))
                f = pending.pop(fut)
                out = fut.result()
                if "test_accuracy" in out:
                    done.append(_result(parts[f], out, *_choose(parts[f])))
                    report(done[-1])
                    continue
                parts[f].append(out)
                if len(parts[f]) < len(_parts()):
                    bar.update(1)
                    continue
                skipped = [p for p in parts[f] if p.get("skipped")]
                if skipped:
                    done.append(skipped[0])
                    report(done[-1], 2)
                else:
                    bar.update(1)
                    params, _ = _choose(parts[f])
                    pending[pool.submit(_test_part, f, protocol, max_samples, params)] = f
    bar.close()
    done.sort(key=lambda r: r["dataset"])
    results = [r for r in done if not r.get("skipped")]
    skipped = [{"dataset": r["dataset"], "reason": r["reason"]} for r in done
               if r.get("skipped")]
    mean = float(np.mean([r["test_accuracy"] for r in results])) if results else None
    out = {"protocol": protocol, "results": results, "skipped": skipped,
           "mean_test_accuracy": mean, "seconds": round(time.perf_counter() - start, 3)}
    if json_path is not None:
        json_path.write_text(json.dumps(out, indent=2) + "\n")
    if echo is not None:
        summary = "n/a" if mean is None else f"{100 * mean:.2f}%"
        echo(f"mean test accuracy over {len(results)} set(s): {summary} "
             f"({len(skipped)} skipped, {out['seconds']:.0f}s)")
    return out
