"""The kernel contract, written once and applied to every layer and activation.

A test module lists :class:`Case` objects and subclasses :class:`KernelContract` with a
parametrised ``case`` fixture (GPyTorch's ``BaseKernelTestCase`` pattern). Every case is
checked for: symmetry, positive semi-definiteness, ``diagonal=True`` against the full kernel,
the exact diagonal, blocks against the whole, ``kernel(x1, x2)`` against the joint kernel,
float32 against float64, and agreement with its finite twins by Monte Carlo (NNGP from the
covariance of outputs over initialisations, NTK from explicit Jacobians), with the error
shrinking like ``1 / sqrt(width)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import pytest
import torch

from _reference import mean_and_se, relative_rms_error, twin_kernels
from ntkit import layers as L  # noqa: N812 - the documented alias

# Monte Carlo design. One twin of width 1024 has a finite-width kernel whose error is
# O(1/sqrt(1024)) ~ 3-10% of the kernel's scale; averaging independent twins (256 for the
# NNGP, 128 for the explicit-Jacobian NTK, which costs more) brings the standard error of the
# mean to ~0.5%. Width 64 vs 1024 is a factor 16, so the typical error of one twin should
# fall by sqrt(16) = 4. Each width has its own seeds, so the two estimates are independent.
# Networks with hidden-to-hidden layers cost width^2 per twin: they use widths 16 and 256 and
# four times the seeds (the same standard error for a sixteenth of the work).
WIDE, NARROW = 1024, 64
N_SEEDS = {"nngp": 256, "ntk": 128}
# A kernel is accepted if every entry of the Monte Carlo mean is within Z_MAX of its
# standard error (plus a case's stated bias allowance). With >= 128 seeds the estimated
# standard error is nearly exact (Student t, >= 127 dof): P(|t| > 6) ~ 1e-8 per entry, so
# over the ~1500 entries of the suite a spurious failure is out of the question, while the
# Monte Carlo allowance stays below 5% of the kernel (asserted: an error that size is caught).
Z_MAX = 6.0
# Shrinking error: the ratio of the typical error at width 64 to that at 1024. Pure
# 1/sqrt(width) gives 4; >= 128 seeds estimate each typical error to ~5-10%, so the ratio
# lies in about [3.3, 4.8] for a correct kernel. A wrong kernel leaves an error that does not
# shrink (ratio ~ 1); we accept (2, 8), i.e. rates between width^-1/4 and width^-3/4.
RATIO_RANGE = (2.0, 8.0)


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed float64 inputs ``x`` ``(6, 4)`` and ``x2`` ``(3, 4)``: random directions with
    ``|x|^2 / d`` in ``[0.5, 1.2]`` (pre-activation variances of order one, where the
    quadrature layers are accurate); ``x[5]`` is ``x[0]`` plus 5% noise, a pair near
    ``c = 1``."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(9, 4, generator=g, dtype=torch.float64)
    x[5] = x[0] + 0.05 * torch.randn(4, generator=g, dtype=torch.float64)
    size = 0.5 + 0.7 * torch.rand(9, 1, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * (4 * size).sqrt()
    return x[:6], x[6:]


def image_inputs(shape: tuple[int, ...] = (2, 5, 5)) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed float64 channels-first inputs ``x`` ``(6, *shape)`` and ``x2`` ``(3, *shape)``,
    like :func:`inputs`: ``|x|^2 / (C P)`` (the mean input variance over ``P`` positions) in
    ``[0.5, 1.2]``, and ``x[5]`` is ``x[0]`` plus 5% noise."""
    g = torch.Generator().manual_seed(4321)
    x = torch.randn(9, *shape, generator=g, dtype=torch.float64)
    x[5] = x[0] + 0.05 * torch.randn(shape, generator=g, dtype=torch.float64)
    size = 0.5 + 0.7 * torch.rand(9, generator=g, dtype=torch.float64)
    d = x[0].numel()
    norms = x.reshape(9, -1).norm(dim=1)
    x = x / (norms / (d * size).sqrt()).reshape(9, *(1,) * len(shape))
    return x[:6], x[6:]


def _head() -> L.Layer:
    return L.Dense(1, W_std=0.8, b_std=0.2)


@dataclass(frozen=True)
class Case:
    """One network under the contract.

    - ``spec(width)``: the network with hidden width ``width``; its ``(N, m)`` outputs give
      the NNGP Monte Carlo (``F F^T / m`` per twin).
    - ``head``: appended to ``spec(width)`` for the NTK Monte Carlo (one output).
    - ``nngp_bias``, ``ntk_bias``: allowance, relative to the kernel's largest entry, for the
      difference between the mean finite-width kernel of the wide twins and the limit. Zero
      when every nonlinearity acts on exactly Gaussian units (a random layer applied to fixed
      inputs): then the mean over initialisations equals the limit at any width.
    - ``atol``: extra allowance for a kernel known only to quadrature accuracy (relative to
      the largest entry; the documented accuracy of ``Elementwise``).
    - ``swap_rtol``: ``kernel(x2, x1)`` vs ``kernel(x1, x2).T``; rounding for closed forms,
      quadrature accuracy for a quadrature that conditions on ``x1``.
    - ``widths``: (narrow, wide) twins; the wide ones give the Monte Carlo mean.
    - ``seed_factor``: multiplies ``N_SEEDS``.
    - ``inputs``: the ``(x, x2)`` the case runs on (default :func:`inputs`; images use
      :func:`image_inputs`); :class:`KernelContract`'s ``x``, ``x2`` fixtures read it.
    """

    id: str
    spec: Callable[[int], L.Layer]
    head: Callable[[], L.Layer] = field(default=_head)
    nngp_bias: float = 0.0
    ntk_bias: float = 0.0
    atol: float = 0.0
    swap_rtol: float = 1e-13
    widths: tuple[int, int] = (NARROW, WIDE)
    seed_factor: int = 1
    inputs: Callable[[], tuple[torch.Tensor, torch.Tensor]] = field(default=inputs)

    def net(self, width: int = 8) -> L.Layer:
        """The full single-output network (spec then head) checked structurally."""
        return L.serial(self.spec(width), self.head())

    def __repr__(self) -> str:
        return self.id


@lru_cache(maxsize=256)
def _twins(case: Case, width: int, kind: str) -> torch.Tensor:
    x = case.inputs()[0]
    spec = case.spec if kind == "nngp" else case.net
    n = N_SEEDS[kind] * case.seed_factor
    seeds = range(10_000 * width, 10_000 * width + n)
    return twin_kernels(spec, x, width, seeds, kind)


def _limit(case: Case, width: int, kind: str) -> torch.Tensor:
    x = case.inputs()[0]
    if kind == "nngp":
        return case.spec(width).kernel(x, get="nngp").nngp
    return case.net(width).kernel(x).ntk  # depends on width in the standard parametrization


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


class KernelContract:
    """The generic checks. Subclasses provide a ``case`` fixture yielding :class:`Case`."""

    @pytest.fixture
    def x(self, case: Case) -> torch.Tensor:
        """The case's own ``x`` (for most cases the shared ``(6, 4)`` inputs)."""
        return case.inputs()[0].clone()

    @pytest.fixture
    def x2(self, case: Case) -> torch.Tensor:
        return case.inputs()[1].clone()

    def test_symmetric(self, case: Case, x):
        # x1 is x2: the input Gram matrix is mirrored, every formula is symmetric or
        # mirrored, so symmetry is exact, not approximate (by construction, on any CPU).
        k = case.net().kernel(x)
        assert torch.equal(k.nngp, k.nngp.T)
        assert torch.equal(k.ntk, k.ntk.T)

    def test_positive_semidefinite(self, case: Case, x):
        # The smallest eigenvalue of a PSD matrix computed with rounding errors E is at least
        # -||E||_2 >= -N max|E_ij|; entries carry a few eps of relative error, so -1e-13 of
        # the largest eigenvalue is a generous floor for N = 6 (a real sign error in a
        # formula gives eigenvalues of order the kernel).
        k = case.net().kernel(x)
        for m in (k.nngp, k.ntk):
            ev = torch.linalg.eigvalsh(m)
            assert ev.min() >= -1e-13 * ev.max(), ev

    def test_diagonal_matches_full(self, case: Case, x):
        # The same formulas on the same numbers; only vectorised and scalar transcendental
        # functions may round differently, by an ulp or so per layer.
        net = case.net()
        full, diag = net.kernel(x), net.kernel(x, diagonal=True)
        torch.testing.assert_close(diag.nngp, full.nngp.diagonal(), rtol=1e-14, atol=0)
        torch.testing.assert_close(diag.ntk, full.ntk.diagonal(), rtol=1e-14, atol=0)
        torch.testing.assert_close(diag.cov1, full.cov1, rtol=1e-14, atol=0)

    def test_diagonal_is_cov1_exactly(self, case: Case, x):
        # When x1 is x2 the diagonal is the variance itself, not an off-diagonal formula at
        # c = 1 (which would carry sqrt(eps) errors through arccos-type functions): one
        # computation written to both places, so bit for bit.
        k = case.net().kernel(x)
        assert torch.equal(k.nngp.diagonal(), k.cov1)

    def test_blocks_match_whole(self, case: Case, x, x2):
        # Each entry depends on its pair of inputs only: blocks of 4 (not dividing N = 6)
        # agree with one block up to summation order in the Gram matrices.
        # The mirrored blocks keep the kernel exactly symmetric (by construction: bit for bit).
        net = case.net()
        for a, b in ((x, None), (x, x2)):
            whole, blocked = net.kernel(a, b), net.kernel(a, b, batch_size=4)
            torch.testing.assert_close(blocked.nngp, whole.nngp, rtol=1e-13, atol=1e-15)
            torch.testing.assert_close(blocked.ntk, whole.ntk, rtol=1e-13, atol=1e-15)
            if b is None:
                assert torch.equal(blocked.nngp, blocked.nngp.T)
                assert torch.equal(blocked.ntk, blocked.ntk.T)

    def test_cross_is_block_of_joint(self, case: Case, x, x2):
        # kernel(x1, x2) is the off-diagonal block of the kernel of the concatenated inputs,
        # up to rounding in the Gram matrices (absolute, relative to the largest entry).
        net = case.net()
        joint = net.kernel(torch.cat([x, x2]))
        cross = net.kernel(x, x2)
        n = x.shape[0]
        for name in ("nngp", "ntk"):
            big = getattr(joint, name)
            scale = float(big.abs().max())
            torch.testing.assert_close(getattr(cross, name), big[:n, n:], rtol=1e-12,
                                       atol=1e-13 * scale)
        swapped = net.kernel(x2, x)
        for name in ("nngp", "ntk"):
            scale = float(getattr(cross, name).abs().max())
            torch.testing.assert_close(getattr(swapped, name).T, getattr(cross, name),
                                       rtol=case.swap_rtol, atol=case.swap_rtol * scale)

    def test_float32_matches_float64(self, case: Case, x):
        # float32 (unit roundoff u = 6e-8) through ~10-30 rounded operations per entry
        # (measured: at most 9u); 3e-6 = 50u of the largest entry leaves margin for the
        # near-parallel pair, whose angle carries u / theta. The diagonal keeps the
        # exactness of its cov1 path (the same numbers written twice: bit for bit).
        net = case.net()
        k64, k32 = net.kernel(x), net.kernel(x.float())
        assert k32.nngp.dtype == k32.ntk.dtype == torch.float32
        for name in ("nngp", "ntk"):
            a, b = getattr(k32, name).double(), getattr(k64, name)
            assert _rel(a, b) < 3e-6, (name, _rel(a, b))
        assert torch.equal(k32.nngp.diagonal(), k32.cov1)

    def test_nngp_only(self, case: Case, x):
        # get="nngp" must not change the NNGP (no shared state with the NTK recursion): the
        # same NNGP recursion on the same numbers, so bit for bit.
        net = case.net()
        k = net.kernel(x, get="nngp")
        assert k.ntk is None
        assert torch.equal(k.nngp, net.kernel(x).nngp)

    def test_nngp_monte_carlo(self, case: Case):
        # E[f(x) f(x')] over initialisations of the twins, vs the NNGP. Tolerance: Z_MAX
        # standard errors of the mean over seeds, plus the case's finite-width bias allowance.
        _check_monte_carlo(case, "nngp")

    def test_ntk_monte_carlo(self, case: Case):
        # The mean explicit-Jacobian NTK of the twins vs the NTK, same tolerance rule.
        _check_monte_carlo(case, "ntk")

    def test_error_shrinks_with_width(self, case: Case):
        # The typical error of one twin's kernel falls like 1/sqrt(width): see RATIO_RANGE.
        for kind in ("nngp", "ntk"):
            errs = [relative_rms_error(_twins(case, w, kind), _limit(case, w, kind))
                    for w in case.widths]
            ratio = errs[0] / errs[1]
            assert RATIO_RANGE[0] < ratio < RATIO_RANGE[1], (kind, errs, ratio)


def _check_monte_carlo(case: Case, kind: str) -> None:
    wide = case.widths[1]
    mean, se = mean_and_se(_twins(case, wide, kind))
    exact = _limit(case, wide, kind)
    scale = float(exact.abs().max())
    bias = (case.nngp_bias if kind == "nngp" else case.ntk_bias) * scale
    allowed = Z_MAX * se + bias + case.atol * scale
    worst = float(((mean - exact).abs() / allowed).max())
    assert worst <= 1.0, (kind, worst, mean, exact, se)
    # The Monte Carlo comparison has power: its allowance is a few percent of the kernel.
    assert float((Z_MAX * se).max()) + bias < 0.05 * scale

