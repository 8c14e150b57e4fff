"""Batch selection for kernel active learning: which pool points to label next.

The methods and how the labeled set enters follow Holzmüller et al., "A Framework and
Benchmark for Deep Batch Active Learning for Regression" (JMLR 2023; the package ``bmdal-reg``
3.0.2, whose ``select_batch`` chooses the same indices on the same kernel, see the tests), and
the coding rate of Luo et al., "KECOR: Kernel Coding Rate Maximization for Active 3D Object
Detection" (ICCV 2023).

The greedy log-determinant methods run a pivoted partial Cholesky factorisation: adding pivot
``j`` to the chosen set ``S`` multiplies ``det(K_SS + noise I)`` by the Schur complement
``d_j = var_S(x_j) + noise``, where ``var_S`` is the GP posterior variance given ``S``, and
updates every ``var_S(x)`` with one kernel column (the rank-one update of Holzmüller et al.,
Alg. "MaxDet"). Selecting ``b`` points after ``m`` labeled ones from ``P`` costs
``O(P (m + b)^2)`` time plus ``m + b`` kernel columns, and ``O(P (m + b))`` memory.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..._checks import positive_int, real_number
from ...solve import JitterWarning, cholesky
from ._pool import PoolKernel, pool_kernel

__all__ = ["METHODS", "SIGMA2_RELATIVE", "select"]

METHODS = ("random", "maxvar", "coding_rate", "maxdet", "kmeanspp", "lcmd")

LABELED_BLOCK = 256
"""Labeled points whose kernel columns are read at once (``P x 256`` entries at most)."""

SIGMA2_RELATIVE = 1e-2
"""Default noise variance ``sigma2``, relative to the mean kernel diagonal over all rows:
Holzmüller et al. use ``sigma = 0.1`` on a kernel scaled to mean diagonal 1."""


def select(kernel_or_features, n: int, *, method: str, labeled=None,
           sigma2: float | None = None, generator: torch.Generator | None = None,
           pool=None, gram: bool | None = None) -> Tensor:
    """Choose ``n`` unlabeled points to label next.

    Rows of ``kernel_or_features`` are all points, labeled or not; the candidates are the rows
    not in ``labeled``. Methods (``sigma2`` is the GP noise variance):

    - ``"random"``: uniform without replacement (uses ``generator``).
    - ``"maxvar"``: the ``n`` largest GP posterior variances given ``labeled`` (noise
      ``sigma2``), computed once ("naive active learning"; bmdal-reg's ``maxdiag`` on the
      posterior kernel, and on the prior kernel when nothing is labeled). Updating the variance
      after each pick instead is exactly ``"coding_rate"``.
    - ``"coding_rate"``: greedy maximisation of ``log det(I + K_{L+S} / sigma2)`` over the
      labeled set ``L`` plus the chosen ``S`` (KECOR): each pick is the candidate of largest
      posterior variance given ``L`` and the earlier picks.
    - ``"maxdet"``: the same greedy rule with no noise, ``det K_{L+S}`` (bmdal-reg's
      ``maxdet`` with ``sel_with_train=True``, ``maxdet_sigma=0``). A pick with zero residual
      variance (duplicate points, or more picks than the kernel's rank) gets a jitter of
      ``P * eps * max K_ii`` on its pivot, with a :class:`~ntkit.solve.JitterWarning`.
    - ``"kmeanspp"``: k-means++ seeding in the kernel's feature space, the labeled points
      being centres already: each pick is drawn with probability proportional to its squared
      distance to the nearest centre (the first uniformly when nothing is labeled).
    - ``"lcmd"``: largest cluster maximum distance (Holzmüller et al.): assign every candidate
      to its nearest centre (labeled and chosen points), take the cluster with the largest sum
      of squared distances, pick its point farthest from the centre; the first pick, when
      nothing is labeled, is the point of largest ``k(x, x)``.

    **Arguments:** ``kernel_or_features``: features ``(N, p)`` (linear kernel on them), a
    kernel matrix ``(N, N)`` with ``gram=True``, or a callable ``k(x1, x2) -> (n1, n2)``
    tensor with its inputs ``pool`` ``(N, ...)``. ``n``: how many to choose, at most the
    number of candidates. ``labeled``: indices of labeled rows (distinct, in ``[0, N)``).
    ``sigma2 > 0``: noise variance of ``"maxvar"`` and ``"coding_rate"``, by default
    :data:`SIGMA2_RELATIVE` times the mean of ``k(x, x)`` over all rows. ``generator``:
    randomness of ``"random"`` and ``"kmeanspp"``.

    **Returns:** ``(n,)`` int64 row indices, distinct, none in ``labeled``, in the order
    chosen (``"maxvar"``: by decreasing variance).

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.0, 0.5]])
        >>> select(x, 2, method="maxdet").tolist()  # largest norm, then most orthogonal
        [0, 2]
        >>> select(x, 1, method="coding_rate", labeled=[2], sigma2=0.01).tolist()
        [0]
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    pk = pool_kernel(kernel_or_features, pool=pool, gram=gram)
    n = positive_int(n, "n")
    lab = _labeled(labeled, pk.n)
    candidates = pk.n - len(lab)
    if n > candidates:
        raise ValueError(f"n={n} is more than the {candidates} unlabeled points in the pool "
                         f"({pk.n} rows, {len(lab)} labeled)")
    if sigma2 is None:
        mean = float(pk.diag.mean())
        sigma2 = SIGMA2_RELATIVE * (mean if mean > 0 else 1.0)
    sigma2 = real_number(sigma2, "sigma2")
    if sigma2 <= 0:
        raise ValueError(f"sigma2 must be > 0; got {sigma2}")
    is_labeled = torch.zeros(pk.n, dtype=torch.bool, device=pk.diag.device)
    is_labeled[lab] = True
    if method == "random":
        free = torch.nonzero(~is_labeled).flatten()
        order = torch.randperm(candidates, generator=generator).to(free.device)
        return free[order[:n]]
    if method == "maxvar":
        chol = _GreedyCholesky(pk, len(lab), noise=sigma2)
        chol.condition(lab)
        return torch.topk(chol.var.clamp(min=0).masked_fill(is_labeled, -math.inf), n).indices
    if method in ("coding_rate", "maxdet"):
        return _greedy_logdet(pk, lab, is_labeled, n, 0.0 if method == "maxdet" else sigma2)
    if method == "kmeanspp":
        return _kmeanspp(pk, lab, is_labeled, n, generator)
    return _lcmd(pk, lab, is_labeled, n)


def _labeled(labeled, n: int) -> list[int]:
    if labeled is None:
        return []
    if isinstance(labeled, (Tensor, np.ndarray)):
        arr = np.asarray(labeled.cpu() if isinstance(labeled, Tensor) else labeled)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"labeled must hold integer indices; got dtype {arr.dtype}")
        labeled = arr.reshape(-1).tolist()
    if not isinstance(labeled, Sequence) or not all(
            isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in labeled):
        raise TypeError(f"labeled must be a sequence of integer indices; got {labeled!r:.80}")
    out = [int(i) for i in labeled]
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"labeled indices must lie in [0, {n}); got {bad[:5]}")
    if len(set(out)) != len(out):
        raise ValueError("labeled contains repeated indices")
    return out


class _GreedyCholesky:
    """Pivoted partial Cholesky factor ``l`` ``(P, capacity)`` of ``K + noise I`` over the
    pivots added so far, and ``var`` ``(P,)``: the GP posterior variance given them."""

    def __init__(self, pk: PoolKernel, capacity: int, *, noise: float):
        self.pk, self.noise, self.k, self.warned = pk, noise, 0, False
        self.l = pk.diag.new_zeros(pk.n, capacity)
        self.var = pk.diag.clone()
        top = float(pk.diag.abs().max())
        self.jitter = pk.n * torch.finfo(pk.diag.dtype).eps * (top if top > 0 else 1.0)

    def condition(self, idx: list[int]) -> None:
        """Make the rows ``idx`` the first pivots at once (the labeled set): one block of
        kernel columns and one small Cholesky, ``L[:, :m] = K[:, idx] chol(K_idx,idx +
        noise I)^{-T}``, instead of ``m`` rank-one steps."""
        if not idx:
            return
        if self.k:
            raise RuntimeError("condition() must come before add()")
        t = torch.tensor(idx, device=self.l.device)
        cols = self.pk.columns(t).to(self.l.dtype)
        chol, _ = cholesky(cols[t], diag_reg=self.noise, name="the labeled points' kernel")
        m = len(idx)
        self.l[:, :m] = torch.linalg.solve_triangular(chol, cols.T, upper=False).T
        self.var -= (self.l[:, :m] ** 2).sum(1)
        self.k = m

    def add(self, j: int) -> float:
        """Make ``j`` the next pivot; returns its Schur complement ``d_j`` (``log d_j`` is the
        log-det increment)."""
        col = self.pk.column(j).to(self.l.dtype)
        if self.k:
            col = col - self.l[:, :self.k] @ self.l[j, :self.k]
        d = float(self.var[j]) + self.noise
        if d <= self.jitter:
            if not self.warned:
                warnings.warn(
                    f"pivot {j} has residual variance {d:.3g} <= {self.jitter:.3g} (duplicate "
                    f"points, or more picks than the kernel's rank): adding jitter "
                    f"{self.jitter:.3g} to its pivot and to any later such pivot",
                    JitterWarning, stacklevel=4)
                self.warned = True
            d = max(d, 0.0) + self.jitter
        col = col / math.sqrt(d)  # a new tensor: the caller's kernel matrix stays untouched
        col[j] = math.sqrt(d)
        self.l[:, self.k] = col
        self.var -= col * col
        self.k += 1
        return d


def _greedy_logdet(pk, lab, is_labeled, n, noise) -> Tensor:
    chol = _GreedyCholesky(pk, len(lab) + n, noise=noise)
    chol.condition(lab)
    taken = is_labeled.clone()
    picks = []
    for _ in range(n):
        j = int(torch.argmax(chol.var.masked_fill(taken, -math.inf)))
        chol.add(j)
        taken[j] = True
        picks.append(j)
    return torch.tensor(picks, dtype=torch.int64)


def _kmeanspp(pk, lab, is_labeled, n, generator) -> Tensor:
    # Distances are kept over the candidates only, in row order, so that a draw uses the
    # generator as bmdal-reg's ``torch.multinomial`` over its pool does.
    free = torch.nonzero(~is_labeled).flatten()
    min_sq = torch.full((free.shape[0],), math.inf, dtype=pk.diag.dtype)
    if lab:
        min_sq = _nearest_labeled(pk, lab, free)[0]
    picks = []
    for t in range(n):
        if t == 0 and not lab:
            i = int(torch.randint(free.shape[0], (1,), generator=generator))
        else:
            w = min_sq.clamp(min=0)
            if picks:
                w[torch.tensor(picks)] = 0
            if not float(w.sum()) > 0:
                warnings.warn("kmeanspp: every candidate coincides with a centre; drawing the "
                              "rest uniformly", RuntimeWarning, stacklevel=3)
                w = torch.ones_like(w)
                w[torch.tensor(picks, dtype=torch.int64)] = 0
            i = int(torch.multinomial(w, 1, generator=generator))
        picks.append(i)
        min_sq = torch.minimum(min_sq, pk.sq_dists(int(free[i]))[free])
    return free[torch.tensor(picks, dtype=torch.int64)]


def _lcmd(pk, lab, is_labeled, n) -> Tensor:
    free = torch.nonzero(~is_labeled).flatten()
    min_sq = torch.full((free.shape[0],), math.inf, dtype=pk.diag.dtype)
    cluster = torch.zeros(free.shape[0], dtype=torch.int64)
    taken = torch.zeros(free.shape[0], dtype=torch.bool)
    centres = 0

    def add(row: int) -> None:
        nonlocal centres
        centres += 1
        d = pk.sq_dists(row)[free]
        closer = d < min_sq
        cluster[closer] = centres
        min_sq[closer] = d[closer]

    if lab:
        min_sq, nearest = _nearest_labeled(pk, lab, free)
        cluster = nearest + 1
        centres = len(lab)
    picks = []
    for _ in range(n):
        if centres == 0:
            i = int(torch.argmax(pk.diag[free]))
        else:
            # Holzmüller et al.: the cluster whose squared distances to its centre sum
            # highest, then its point farthest from that centre.
            size = torch.bincount(cluster, weights=min_sq, minlength=centres + 1)
            in_largest = size[cluster] == size.max()
            score = min_sq.masked_fill(~in_largest | taken, -math.inf)
            i = int(torch.argmax(score))
        taken[i] = True
        picks.append(i)
        add(int(free[i]))
    return free[torch.tensor(picks, dtype=torch.int64)]


def _nearest_labeled(pk: PoolKernel, lab: list[int], free: Tensor) -> tuple[Tensor, Tensor]:
    """Squared distance of each candidate to its nearest labeled point ``(F,)`` and that
    point's position in ``lab`` ``(F,)`` (the first one on ties, as adding the labeled points
    one by one with a strict ``<`` would), in blocks of kernel columns."""
    best = torch.full((free.shape[0],), math.inf, dtype=pk.diag.dtype)
    arg = torch.zeros(free.shape[0], dtype=torch.int64)
    for start in range(0, len(lab), LABELED_BLOCK):
        idx = torch.tensor(lab[start:start + LABELED_BLOCK], device=pk.diag.device)
        d = (pk.diag[:, None] + pk.diag[idx][None, :] - 2 * pk.columns(idx))[free]
        dmin, darg = d.min(1)
        closer = dmin < best
        best = torch.where(closer, dmin, best)
        arg = torch.where(closer, darg + start, arg)
    return best, arg
