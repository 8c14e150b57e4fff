"""Every bad input gets a clear error that says what is wrong and what to do.

Each case asserts the exception type and two parts of the message: the offending value or
shape, and the remedy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntkit import layers as L  # noqa: N812 - the documented alias

pytestmark = pytest.mark.usefixtures("single_thread")


def _mlp():
    return L.serial(L.Dense(4), L.ReLU(), L.Dense(1))


# --------------------------------------------------------------------------------------------
# Layer construction.


@pytest.mark.parametrize("make, exc, message", [
    (lambda: L.Dense(0), ValueError, r"out_features must be a positive integer; got 0"),
    (lambda: L.Dense(-3), ValueError, r"out_features must be a positive integer; got -3"),
    (lambda: L.Dense(2.5), TypeError, r"out_features must be a positive integer; got 2.5"),
    (lambda: L.Dense(4, W_std=-1.0), ValueError, r"W_std must be >= 0.0; got -1.0"),
    (lambda: L.Dense(4, b_std=math.nan), ValueError, r"b_std must be finite; got nan"),
    (lambda: L.Dense(4, parametrization="NTK"), ValueError,
     r"parametrization must be one of \('ntk', 'standard'\); got 'NTK'"),
    (lambda: L.FanOut(0), ValueError, r"n must be a positive integer; got 0"),
    (lambda: L.Erf(a="1"), TypeError, r"a must be a real number; got '1'"),
    (lambda: L.Elementwise(torch.tanh, deg=0), ValueError, r"deg must be a positive integer"),
    (lambda: L.Elementwise(3), TypeError, r"fn must be a callable Tensor -> Tensor; got 3"),
    (lambda: L.Elementwise(lambda z: z.sum()), TypeError,
     r"fn must return a tensor of its input's shape \(elementwise\)"),
    (lambda: L.Elementwise(lambda z: np.tanh(z.numpy()[0])), TypeError,
     r"fn must return a tensor of its input's shape"),
    (lambda: L.serial(), ValueError, r"serial\(\) needs at least one layer"),
    (lambda: L.serial(L.Dense(3), L.ReLU), TypeError,
     r"argument 1 is not an ntkit layer.*did you pass the class instead of an instance"),
    (lambda: L.parallel(L.Dense(3), "relu"), TypeError, r"argument 1 is not an ntkit layer"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_layer_arguments(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


# --------------------------------------------------------------------------------------------
# Inputs to Layer.kernel.


def _x(*shape, dtype=torch.float64):
    return torch.ones(shape, dtype=dtype)


@pytest.mark.parametrize("x1, x2, exc, message", [
    (_x(3), None, ValueError,
     r"x1 must have shape \(N, features...\).*got shape \(3,\).*x1\[None\]"),
    (_x(2, 3, 4), None, ValueError,
     r"inputs of shape \(N, features\); got x1 of shape \(2, 3, 4\).*x.reshape\(len\(x\), -1\)"),
    (_x(0, 4), None, ValueError, r"x1 is empty: shape \(0, 4\); pass at least one example"),
    (_x(3, 0), None, ValueError, r"x1 is empty: shape \(3, 0\)"),
    (_x(3, 4), _x(2, 3), ValueError,
     r"x1 and x2 must have the same feature shape; got \(4,\) and \(3,\)"),
    (_x(3, 4), _x(2, 4, dtype=torch.float32), TypeError,
     r"same dtype; got torch.float64 and torch.float32"),
    (torch.ones(3, 4, dtype=torch.int64), None, TypeError,
     r"floating-point dtype; got torch.int64 \(convert it, e.g. x1.double\(\)\)"),
    ([[1.0, 2.0]], None, TypeError, r"x1 must be a torch.Tensor or numpy array; got list"),
], ids=["rank-1", "rank-3", "no-examples", "no-features", "feature-mismatch",
        "dtype-mismatch", "integer", "list"])
def test_bad_inputs(x1, x2, exc, message):
    with pytest.raises(exc, match=message):
        _mlp().kernel(x1, x2)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("which", ["x1", "x2"])
def test_non_finite_inputs(bad, which, x, x2):
    # Two bad entries: the count is reported, and the remedy.
    target = x if which == "x1" else x2
    target[1, 2] = bad
    target[2, 0] = bad
    with pytest.raises(ValueError, match=rf"{which} contains 2 NaN or infinite value\(s\); "
                                         r"clean the inputs first"):
        _mlp().kernel(x, x2)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, r"batch_size must be a positive integer; got 0"),
    ({"get": "ntks"}, r"get: unknown kernel 'ntks'; expected 'nngp' and/or 'ntk'"),
    ({"get": ()}, r"get must be 'nngp', 'ntk' or a tuple of them; got \(\)"),
])
def test_bad_options(kwargs, message, x):
    with pytest.raises(ValueError, match=message):
        _mlp().kernel(x, **kwargs)


def test_diagonal_with_second_batch(x, x2):
    with pytest.raises(ValueError, match=r"diagonal=True gives k\(x, x\) of x1 alone; "
                                         r"pass x2=None"):
        _mlp().kernel(x, x2, diagonal=True)


# --------------------------------------------------------------------------------------------
# Networks that cannot be computed.

_GAUSS_HINT = r"needs Gaussian pre-activations.*put a Dense before it"


@pytest.mark.parametrize("net", [
    L.serial(L.ReLU(), L.Dense(1)),
    L.serial(L.Erf()),
    L.serial(L.Elementwise(torch.tanh), L.Dense(1)),
    L.serial(L.Dense(3), L.FanOut(2), L.parallel(L.Dense(2), L.Dense(3)), L.FanInConcat(),
             L.ReLU()),
    L.serial(L.FanOut(2), L.parallel(L.Dense(4), L.Identity()), L.FanInSum(), L.ReLU()),
], ids=["relu-on-inputs", "erf-on-inputs", "elementwise-on-inputs", "after-concat",
        "after-skip-of-raw-inputs"])
def test_activation_needs_gaussian_input(net, x):
    # Raw inputs are not a zero-mean Gaussian field; neither is a concatenation (a mixture)
    # nor x + Dense(x).
    with pytest.raises(ValueError, match=_GAUSS_HINT):
        net.kernel(x)


def test_fan_in_sum_of_mismatched_widths(x):
    net = L.serial(L.Dense(3), L.FanOut(2), L.parallel(L.Dense(3), L.Dense(4)), L.FanInSum())
    message = (r"FanInSum: branches must have equal shapes; got \[\(3,\), \(4,\)\]; give every "
               r"branch the same width.*or join them with FanInConcat\(\)")
    with pytest.raises(ValueError, match=message):
        net.kernel(x)
    with pytest.raises(ValueError, match=message):
        net.module((4,))


def test_fan_in_concat_of_mismatched_shapes():
    # Feature axes may differ, nothing else (the finite twin could not concatenate them).
    with pytest.raises(ValueError, match=r"every axis but the feature axis; got per-example "
                                         r"shapes \[\(3,\), \(2, 3\)\]: flatten them first"):
        L.FanInConcat().out_shape([(3,), (2, 3)])
    with pytest.raises(ValueError, match=r"shapes \[\(3, 5\), \(2, 4\)\]"):
        L.FanInConcat().out_shape([(3, 5), (2, 4)])
    assert L.FanInConcat().out_shape([(3, 5), (2, 5)]) == (5, 5)


@pytest.mark.parametrize("net, message", [
    (L.serial(L.Dense(3), L.FanOut(2)),
     r"the network ends in 2 branches; merge them with FanInSum\(\) or FanInConcat\(\)"),
    (L.serial(L.FanOut(2), L.parallel(L.Dense(3), L.Dense(3), L.Dense(3))),
     r"parallel\(\) has 3 layers but received 2 branches; use FanOut\(3\) before it"),
    (L.serial(L.FanOut(2), L.Dense(3)),
     r"takes one input but received 2 branches; merge them first"),
    (L.serial(L.Dense(3), L.FanInSum()),
     r"takes several branches but received a single input; split it first with FanOut\(n\)"),
], ids=["ends-in-branches", "parallel-count", "dense-on-branches", "sum-of-one"])
def test_branch_structure(net, message, x):
    with pytest.raises(ValueError, match=message):
        net.kernel(x)


def test_gaussian_activation_with_divergent_expectation(x):
    # phi = exp(b x^2) with b > 0 has E[phi^2] = inf once 4 b q >= 1: refuse, with the bound.
    net = L.serial(L.Dense(3, W_std=3.0), L.Gaussian(b=0.5))
    with pytest.raises(ValueError, match=r"infinite for pre-activation variance >= 1/\(4b\) = "
                                         r"0.5; lower W_std/b_std or use b <= 0"):
        net.kernel(x)


# --------------------------------------------------------------------------------------------
# The finite twin.


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"in_shape": (0,)}, ValueError, r"in_shape must be a non-empty tuple of positive ints.*"
                                     r"got \(0,\)"),
    ({"in_shape": ()}, ValueError, r"in_shape must be a non-empty tuple"),
    ({"in_shape": (2, 3)}, ValueError,
     r"Dense acts on inputs of shape \(N, features\); got per-example shape \(2, 3\): "
     r"flatten them first"),
    ({"in_shape": (4,), "dtype": torch.int64}, TypeError,
     r"dtype must be a floating-point torch dtype; got torch.int64"),
])
def test_bad_module_arguments(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        _mlp().module(**kwargs)
