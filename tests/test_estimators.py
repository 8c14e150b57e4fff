"""scikit-learn estimators: the estimator contract, agreement with SVC/closed forms on the same
kernels, the network path, pipelines and grid search, kernel reuse, and accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from ntkit import estimators as E
from ntkit import layers as L
from ntkit.family import fc_kernel_family


@pytest.fixture(autouse=True)
def _fresh_cache(single_thread):
    """Each test starts and ends with an empty kernel cache (no cross-test reuse); one torch
    thread, as the kernels here are small (see ``conftest.single_thread``)."""
    E.clear_kernel_cache()
    yield
    E.clear_kernel_cache()


def _blobs(n=60, d=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    X = rng.standard_normal((n, d)) + 2.0 * np.eye(classes, d)[y]
    return X, y


# Every one of scikit-learn's checks runs on both solvers, on the parameter path (with
# non-default depth/fix/activation/b_std) and on the network= path. Skipped by scikit-learn
# itself where its optional dependencies are missing: the pandas half of
# check_*_data_not_an_array (no pandas) and check_array_api_input (SCIPY_ARRAY_API unset).
# The one float32 variant is expected to fail the two checks that compare predictions on
# reordered or sliced inputs at rtol 1e-7: when X equals the training inputs the kernel
# driver takes K(x, x) on the exact diagonal path, while reordered rows reach the same pairs
# through the general formula, whose float32 rounding near c = 1 is ~1e-5 relative (2e-13 in
# float64, where the checks pass).
_NET = L.serial(L.Dense(1, W_std=1.2, b_std=0.1), L.Erf(), L.Dense(1, W_std=1.2, b_std=0.1))
_FLOAT32_XFAIL = {
    name: "float32: K(x, x) off the exact-diagonal path is ~1e-5 relative off near c = 1; "
          "the check's rtol is 1e-7"
    for name in ("check_methods_sample_order_invariance", "check_methods_subset_invariance")
}


@parametrize_with_checks(
    [
        E.NTKClassifier(), E.NTKClassifier(solver="ridge", depth=2, fix=1, b_std=0.1),
        E.NNGPClassifier(), E.NNGPClassifier(solver="ridge", activation="erf"),
        E.NTKRegressor(), E.NTKRegressor(solver="ridge", depth=3, fix=2, activation="gelu"),
        E.NNGPRegressor(), E.NNGPRegressor(solver="ridge", network=_NET),
        E.NTKClassifier(network=_NET, dtype="float32"),
    ],
    expected_failed_checks=lambda est: _FLOAT32_XFAIL if est.dtype == "float32" else {},
)
def test_sklearn_contract(estimator, check):
    check(estimator)


def test_svm_equals_sklearn_svc_on_family_kernel():
    X, y = _blobs()
    Xt, _ = _blobs(n=30, seed=1)
    clf = E.NTKClassifier(depth=3, fix=1, b_std=0.2, W_std=1.3, C=3.0).fit(X, y)
    xt, xtr = torch.from_numpy(Xt), torch.from_numpy(X)
    fam_train = fc_kernel_family(xtr, max_depth=3, W_std=1.3, b_std=0.2)
    fam_test = fc_kernel_family(xt, xtr, max_depth=3, W_std=1.3, b_std=0.2)
    svc = SVC(kernel="precomputed", C=3.0).fit(fam_train.ntk(3, 1).numpy(), y)
    k_test = fam_test.ntk(3, 1).numpy()
    np.testing.assert_array_equal(clf.predict(Xt), svc.predict(k_test))
    np.testing.assert_array_equal(clf.decision_function(Xt), svc.decision_function(k_test))


@pytest.mark.parametrize("cls, kind", [(E.NTKRegressor, "ntk"), (E.NNGPRegressor, "nngp")])
def test_ridge_equals_closed_form(cls, kind):
    rng = np.random.default_rng(2)
    X, Xt = rng.standard_normal((25, 3)), rng.standard_normal((7, 3))
    y = np.sin(X.sum(1))
    reg = cls(depth=2, activation="erf", b_std=0.3, solver="ridge", alpha=1e-3).fit(X, y)
    net = L.serial(L.Dense(1, b_std=0.3), L.Erf(), L.Dense(1, b_std=0.3), L.Erf(),
                   L.Dense(1, b_std=0.3))
    k = getattr(net.kernel(torch.from_numpy(X)), kind).numpy()
    k_test = getattr(net.kernel(torch.from_numpy(Xt), torch.from_numpy(X)), kind).numpy()
    expected = k_test @ np.linalg.solve(k + 1e-3 * np.mean(np.diag(k)) * np.eye(len(k)), y)
    np.testing.assert_allclose(reg.predict(Xt), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cls", [E.NTKClassifier, E.NNGPClassifier, E.NTKRegressor,
                                 E.NNGPRegressor])
@pytest.mark.parametrize("solver", ["svm", "ridge"])
def test_network_path_equals_parameter_path(cls, solver):
    X, y = _blobs(n=40)
    Xt, _ = _blobs(n=15, seed=3)
    params = {"W_std": 1.5, "b_std": 0.05}
    net = L.serial(L.Dense(8, **params), L.LeakyReLU(0.1), L.Dense(8, **params),
                   L.LeakyReLU(0.1), L.Dense(1, **params))
    a = cls(depth=2, activation=L.LeakyReLU(0.1), solver=solver, **params).fit(X, y)
    b = cls(network=net, solver=solver).fit(X, y)
    out = "decision_function" if hasattr(a, "decision_function") else "predict"
    np.testing.assert_allclose(getattr(a, out)(Xt), getattr(b, out)(Xt), rtol=1e-8, atol=1e-10)


def test_fix_changes_the_kernel_and_fix_depth_is_nngp():
    X, y = _blobs(n=30, classes=2)
    Xt, _ = _blobs(n=10, classes=2, seed=4)
    kw = {"depth": 2, "b_std": 0.1, "solver": "ridge"}
    d0 = E.NTKClassifier(fix=0, **kw).fit(X, y).decision_function(Xt)
    d1 = E.NTKClassifier(fix=1, **kw).fit(X, y).decision_function(Xt)
    d2 = E.NTKClassifier(fix=2, **kw).fit(X, y).decision_function(Xt)
    nngp = E.NNGPClassifier(**kw).fit(X, y).decision_function(Xt)
    assert not np.allclose(d0, d1)
    np.testing.assert_allclose(d2, nngp, rtol=1e-12)  # only the readout trained


def test_pipeline_and_grid_search():
    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), E.NTKClassifier())
    grid = GridSearchCV(pipe, {"ntkclassifier__depth": [1, 2], "ntkclassifier__fix": [0, 1],
                               "ntkclassifier__C": [1.0, 10.0]}, cv=3).fit(X, y)
    assert grid.best_score_ > 0.9
    assert grid.predict(X[:5]).shape == (5,)
    assert clone(grid.best_estimator_).get_params()["ntkclassifier__depth"] in (1, 2)


@pytest.mark.parametrize("solver, reg, values", [("ridge", "alpha", [1e-4, 1e-2]),
                                                 ("svm", "C", [0.1, 10.0])])
def test_grid_search_computes_each_family_once(monkeypatch, solver, reg, values):
    X, y = _blobs(n=45)
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs["max_depth"])
        return fc_kernel_family(*args, **kwargs)

    monkeypatch.setattr(E, "fc_kernel_family", counting)
    grid = {"depth": [1, 2, 3], "fix": [0, 1], reg: values}
    est = E.NTKRegressor(solver=solver, b_std=0.1)
    cached = GridSearchCV(est, grid, cv=3).fit(X, y.astype(float))
    # One family per training split and one per (validation split, training split), then one
    # for the refit on all data; not one per candidate.
    assert len(calls) == 2 * 3 + 1

    calls.clear()
    E.clear_kernel_cache()
    monkeypatch.setattr(E._CACHE, "max_entries", 0)  # no caching
    uncached = GridSearchCV(est, grid, cv=3).fit(X, y.astype(float))
    assert len(calls) == 2 * 3 * 12 + 1
    # Same numbers: the prefetched deeper family has the same shallower layers.
    np.testing.assert_array_equal(cached.cv_results_["mean_test_score"],
                                  uncached.cv_results_["mean_test_score"])


def test_cache_is_bounded_and_keyed_on_content():
    X, y = _blobs(n=20)
    a = E.NTKClassifier(solver="ridge").fit(X, y).decision_function(X)
    X2 = X.copy()
    X2[0, 0] += 1.0
    E.NTKClassifier(solver="ridge").fit(X2, y)
    b = E.NTKClassifier(solver="ridge").fit(X, y).decision_function(X)
    np.testing.assert_array_equal(a, b)
    for seed in range(40):
        E.NTKClassifier(solver="ridge").fit(*_blobs(n=10, seed=seed))
    assert len(E._CACHE._items) <= E._CACHE.max_entries


def test_accuracy_breast_cancer():
    # Majority class is 63 % of the test split; linear models and the published NTK-SVM
    # results on this set reach 95-98 %. 0.93 is far above the trivial baseline and leaves
    # room for split noise (a 1-sample change moves accuracy by 0.7 %).
    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    baseline = np.mean(yte == np.bincount(ytr).argmax())
    for est in (E.NTKClassifier(depth=3, C=10.0), E.NNGPClassifier(depth=2, solver="ridge",
                                                                    alpha=1e-2)):
        acc = make_pipeline(StandardScaler(), est).fit(Xtr, ytr).score(Xte, yte)
        assert baseline < 0.65 and acc > 0.93, (est, acc)


@pytest.mark.parametrize("params, name", [
    ({"depth": -1}, "depth"),
    ({"depth": 1.5}, "depth"),
    ({"fix": 2, "depth": 1}, "fix"),
    ({"activation": "tanh"}, "activation"),
    ({"W_std": 0.0}, "W_std"),
    ({"b_std": -1.0}, "b_std"),
    ({"solver": "lbfgs"}, "solver"),
    ({"C": 0.0}, "C"),
    ({"alpha": float("nan")}, "alpha"),
    ({"dtype": "float16"}, "dtype"),
    ({"network": "mlp"}, "network"),
    ({"network": _NET, "fix": 1}, "fix"),
])
def test_bad_parameters_name_the_parameter(params, name):
    X, y = _blobs(n=12)
    with pytest.raises(ValueError, match=rf"^{name} "):
        E.NTKClassifier(**params).fit(X, y)


def test_bad_epsilon_and_unfitted():
    X, y = _blobs(n=12)
    with pytest.raises(ValueError, match="^epsilon "):
        E.NTKRegressor(epsilon=-0.1).fit(X, y.astype(float))
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        E.NNGPRegressor().predict(X)


@pytest.mark.parametrize("value", [True, "1", 1j, np.complex64(1), float("inf"), [1.0]])
def test_non_real_C_is_rejected(value):
    X, y = _blobs(n=12)
    with pytest.raises(ValueError, match="^C "):
        E.NTKClassifier(C=value).fit(X, y)


@pytest.mark.parametrize("activation", sorted(E.ACTIVATIONS))
def test_every_activation_name_fits(activation):
    X, y = _blobs(n=30)
    clf = E.NNGPClassifier(activation=activation, b_std=0.1, solver="ridge", alpha=1e-3)
    assert clf.fit(X, y).score(X, y) > 0.8


def test_identity_activation_is_the_linear_network():
    X, y = _blobs(n=20)
    net = L.serial(L.Dense(4, b_std=0.2), L.Identity(), L.Dense(4, b_std=0.2), L.Identity(),
                   L.Dense(1, b_std=0.2))
    a = E.NTKRegressor(depth=2, activation="identity", b_std=0.2, solver="ridge").fit(X, y)
    b = E.NTKRegressor(network=net, solver="ridge").fit(X, y)
    np.testing.assert_allclose(a.predict(X[:5] + 0.3), b.predict(X[:5] + 0.3), rtol=1e-9)
