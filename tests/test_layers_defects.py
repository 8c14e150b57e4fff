"""Regressions for inputs a new user (or an attacker) gives the layers (issue 17, section 5)."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass

import pytest
import torch

from ntkit import layers as L
from ntkit.kernel import input_variances
from ntkit.layers._compute import kernel_tile, layout


def _mlp() -> L.Serial:
    return L.serial(L.Dense(512, W_std=1.5, b_std=0.05), L.ReLU(), L.Dense(1))


def _x(scale: float, dtype: torch.dtype, n: int = 6, d: int = 784) -> torch.Tensor:
    x = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return (x * scale).to(dtype)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


# -- 5.3: finite inputs, non-finite kernels --------------------------------------------------
def test_half_inputs_give_the_kernel_of_their_values():
    # 784 squares of ~10 sum past float16's 65504, and so does the ReLU's K11 K22 (~250^2),
    # though the kernel itself (<= ~250) fits.
    x = _x(10.0, torch.float16)
    k = _mlp().kernel(x)
    ref = _mlp().kernel(x.double())  # the same (rounded) inputs, exactly representable
    assert k.nngp.dtype == k.ntk.dtype == k.cov1.dtype == torch.float16
    assert float(ref.nngp.max()) > 100
    # Computed in float32 then rounded once to float16: half an ulp, 2^-11 = 4.9e-4 relative.
    assert _rel(k.nngp, ref.nngp) < 1e-3 and _rel(k.ntk, ref.ntk) < 1e-3
    diag = _mlp().kernel(x, diagonal=True)
    assert diag.nngp.dtype == torch.float16
    assert _rel(diag.nngp, ref.nngp.diagonal()) < 1e-3


def test_half_images_give_the_kernel_of_their_values():
    x = (torch.randn(3, 4, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
         * 30).half()
    net = L.serial(L.Conv(8, (3, 3)), L.ReLU(), L.GlobalAvgPool(), L.Dense(1))
    k, ref = net.kernel(x), net.kernel(x.double())
    assert k.ntk.dtype == torch.float16
    assert _rel(k.nngp, ref.nngp) < 1e-3 and _rel(k.ntk, ref.ntk) < 1e-3


def test_float32_that_overflows_is_recomputed_in_float64():
    # Variances ~1e34 fit float32 (3.4e38) but the ReLU's K11 K22 ~1e68 does not.
    x = _x(1e17, torch.float32)
    k = _mlp().kernel(x)
    ref = _mlp().kernel(x.double())
    assert k.nngp.dtype == torch.float32
    # float64 arithmetic rounded once to float32: 2^-24 = 6e-8 relative, with margin.
    assert _rel(k.nngp, ref.nngp) < 1e-6 and _rel(k.ntk, ref.ntk) < 1e-6


@pytest.mark.parametrize(("scale", "dtype"), [(1e200, torch.float64), (1e30, torch.float32)])
def test_kernels_beyond_the_dtype_raise(scale, dtype):
    # The input kernel x.x'/d is ~scale^2: 1e400 and 1e60 exceed float64 and float32.
    with pytest.raises(ValueError, match=r"NaN or infinite entries although the inputs are "
                                         r"finite: with inputs as large as .*e\+(200|30)"):
        _mlp().kernel(_x(scale, dtype))
    with pytest.raises(ValueError, match=r"NaN or infinite entries"):
        _mlp().kernel(_x(scale, dtype), diagonal=True)


@dataclass(frozen=True)
class _Poison(L.Layer):
    """A user layer with a bug: its kernel is NaN."""

    def out_shape(self, in_shape):
        return in_shape

    def kernel_fn(self, k):
        return k.replace(nngp=k.nngp * float("nan"))


def test_a_layer_that_makes_nan_raises():
    with pytest.raises(ValueError, match=r"NaN or infinite entries"):
        L.serial(L.Dense(4), _Poison()).kernel(_x(1.0, torch.float64, d=3))


def test_tiles_compute_as_the_whole_kernel():
    net = _mlp()
    x = _x(10.0, torch.float16, n=8)
    planned, _, diag_sp = layout(net, x)
    var = input_variances(x)
    assert var.dtype == torch.float32  # squares of float16 inputs overflow float16
    nngp, ntk = kernel_tile(planned, x, None, var, None, need_ntk=True, diag_sp=diag_sp,
                            batch_size=4)
    whole = net.kernel(x, batch_size=4)
    # The same blocks in the same dtype, rounded alike: the same bits.
    assert torch.equal(nngp, whole.nngp) and torch.equal(ntk, whole.ntk)
    big = _x(1e30, torch.float32, n=4)
    with pytest.raises(ValueError, match=r"NaN or infinite entries"):
        kernel_tile(planned, big, None, input_variances(big), None, need_ntk=True,
                    diag_sp=diag_sp, batch_size=4)


def test_the_kernel_family_computes_as_the_layer_networks():
    from ntkit.family import fc_kernel_family

    x = _x(10.0, torch.float16)
    fam = fc_kernel_family(x, max_depth=2, W_std=1.5, b_std=0.05)
    ref = fc_kernel_family(x.double(), max_depth=2, W_std=1.5, b_std=0.05)
    assert fam.nngp(2).dtype == fam.ntk(2, 1).dtype == torch.float16
    # float32 arithmetic rounded once to float16 (2^-11 relative), as for net.kernel.
    assert _rel(fam.nngp(2), ref.nngp(2)) < 1e-3 and _rel(fam.ntk(2, 0), ref.ntk(2, 0)) < 1e-3
    big = _x(1e17, torch.float32)
    assert _rel(fc_kernel_family(big, max_depth=1).ntk(1),
                fc_kernel_family(big.double(), max_depth=1).ntk(1)) < 1e-6
    with pytest.raises(ValueError, match=r"NaN or infinite entries"):
        fc_kernel_family(_x(1e200, torch.float64), max_depth=1)


# -- 5.7: untrusted spec files -----------------------------------------------------------------
def test_load_spec_reads_regular_files_only(tmp_path):
    for path in ("/dev/zero", tmp_path):
        with pytest.raises(ValueError, match=r"is not a regular file"):
            L.load_spec(path)


def test_load_spec_does_not_wait_on_a_fifo(tmp_path):
    fifo = tmp_path / "spec.json"
    os.mkfifo(fifo)
    # Run in a thread so that a regression fails the test instead of hanging the suite.
    outcome: list = []

    def load():
        try:
            L.load_spec(fifo)
        except Exception as err:  # noqa: BLE001 - the test inspects it
            outcome.append(err)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():
        # Unblock the reader (an open for writing pairs with it) before failing.
        with open(fifo, "w"):
            pass
        pytest.fail("load_spec blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], ValueError)
    assert "is not a regular file" in str(outcome[0])


def test_load_spec_reads_a_bounded_prefix(tmp_path):
    net = _mlp()
    good = tmp_path / "net.json"
    L.save_spec(net, good)
    assert L.load_spec(good) == net
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (L.SPEC_LIMITS["bytes"] + 1))
    with pytest.raises(ValueError, match=r"over the limit of 1000000 bytes"):
        L.load_spec(big)
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=r"is not UTF-8 text"):
        L.load_spec(bad)


def _quadratures(n: int, deg: int) -> str:
    layer = {"type": "Elementwise", "fn": "tanh", "deg": deg}
    return json.dumps({"ntkit_spec": 1, "net": {"type": "Serial", "layers": [layer] * n}})


def test_total_cost_is_bounded():
    # 500 layers of degree-256 quadrature: 500 * 256^2 = 3.3e7 evaluations per entry.
    with pytest.raises(ValueError, match=r"total cost is over 1000000 evaluations per kernel "
                                         r"entry \(SPEC_LIMITS\['cost'\]"):
        L.from_json(_quadratures(500, 256))
    # The cost is deg^2 per quadrature layer plus 1 for the Serial: 15 * 65536 + 1 fits,
    # 16 * 65536 + 1 does not.
    assert 15 * 256**2 + 1 <= L.SPEC_LIMITS["cost"] < 16 * 256**2 + 1
    assert len(L.from_json(_quadratures(15, 256)).layers) == 15
    with pytest.raises(ValueError, match=r"net \(Serial\).layers\[15\] \(Elementwise\): the "
                                         r"spec's total cost"):
        L.from_json(_quadratures(16, 256))
    # A thousand default-degree layers (the layer limit) stay within the cost.
    assert len(L.from_json(_quadratures(999, 26)).layers) == 999


# -- 5.12: memory budgets ----------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("inf"), float("nan"), "1" * 400, -1.0, "1e9GB"])
def test_bad_max_memory_names_the_argument(value):
    x = _x(1.0, torch.float64, d=3)
    for net, inputs in ((_mlp(), x), (L.serial(L.Conv(2, (3,)), L.Flatten(), L.Dense(1)),
                                      x[:, None, :])):
        with pytest.raises(ValueError, match=r"^max_memory must be a positive number of bytes "
                                             r"\(int\) or a string such as '512MiB'"):
            net.kernel(inputs, max_memory=value)
