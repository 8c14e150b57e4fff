"""Every depth and every number of frozen layers of a fully-connected network, from one recursion.

For ``Dense - phi`` repeated ``L`` times then a readout ``Dense`` (NTK parametrization), write
``K_j`` for the NNGP after the ``j``-th Dense (``j = 1 .. L + 1``) and ``T_j = W_std^2
E[phi'(u) phi'(v)]`` at the ``j``-th nonlinearity. The NTK with the bottom ``fix`` Dense layers
frozen (left out of the sum over parameters, as in Arora et al. 2020) is

    Theta(L, fix) = sum_{j = fix + 1}^{L + 1}  K_j  prod_{i = j}^{L} T_i,

so one pass through the deepest network gives every ``(L, fix)`` with ``fix <= L``; the NNGP
of depth ``L`` is ``K_{L + 1}``. ``fix = 0`` is the usual NTK (``net.kernel(...).ntk``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ._checks import all_finite, as_inputs, check_pair
from .kernel import Kernel, in_finite_dtype
from .layers import Activation, Dense, ReLU

__all__ = ["KernelFamily", "fc_kernel_family"]


class KernelFamily:
    """The per-layer pieces ``K_j``, ``T_i`` of :func:`fc_kernel_family` and what they give.

    ``max_depth`` is the deepest number of hidden layers available; ``dtype`` that of the
    tensors it returns (the pieces ``K``, ``T`` may be held in a wider one).
    """

    def __init__(self, K: list[Tensor], T: list[Tensor], *, dtype: torch.dtype | None = None):
        self._K = K
        self._T = T
        self.max_depth = len(T)
        # The dtype of what it returns (the inputs'); the pieces may be held in a wider one.
        self.dtype = K[0].dtype if dtype is None else dtype

    def _out(self, t: Tensor) -> Tensor:
        """A new tensor of ``t`` in ``self.dtype``; raises if that cast overflows."""
        if t.dtype == self.dtype:
            return t.clone()
        out = t.to(self.dtype)
        if not all_finite(out):
            raise ValueError(f"the kernel's values overflow {self.dtype}; rescale the inputs")
        return out

    def _check(self, depth: int, fix: int = 0) -> None:
        if not isinstance(depth, int) or not 0 <= depth <= self.max_depth:
            raise ValueError(f"depth must be an int in 0..{self.max_depth}; got {depth!r}")
        if not isinstance(fix, int) or not 0 <= fix <= depth:
            raise ValueError(f"fix must be an int in 0..depth={depth}; got {fix!r}")

    def nngp(self, depth: int) -> Tensor:
        """``(N1, N2)`` NNGP of the network with ``depth`` hidden layers."""
        self._check(depth)
        k = self._K[depth]
        return k if k.dtype == self.dtype else self._out(k)

    def ntk(self, depth: int, fix: int = 0) -> Tensor:
        """``(N1, N2)`` NTK with ``depth`` hidden layers and the bottom ``fix`` Dense frozen."""
        self._check(depth, fix)
        for f, theta in self.ntks(depth):
            if f == fix:
                return theta
        raise AssertionError("unreachable")

    def ntks(self, depth: int) -> Iterator[tuple[int, Tensor]]:
        """``(fix, Theta(depth, fix))`` for ``fix = depth, depth - 1, ..., 0``, each a new
        tensor, with one multiply-add per step (so all ``fix`` cost as much as one)."""
        self._check(depth)
        theta = self._K[depth].clone()
        yield depth, self._out(theta)
        tail = None  # prod_{i = j}^{depth} T_i for the current j
        for j in range(depth - 1, -1, -1):
            tail = self._T[j] if tail is None else tail * self._T[j]
            theta.addcmul_(self._K[j], tail)
            yield j, self._out(theta)


def fc_kernel_family(
    x1,
    x2=None,
    *,
    max_depth: int,
    activation: Activation | None = None,
    W_std: float = 1.0,
    b_std: float = 0.0,
) -> KernelFamily:
    """All depths ``0..max_depth`` and frozen-layer counts of ``(Dense - activation) x L - Dense``.

    **Arguments:** ``x1`` ``(N1, d)`` and ``x2`` ``(N2, d)`` inputs (``x2=None``: ``x1``
    against itself); ``activation`` (default ``ReLU()``); ``W_std``, ``b_std`` of every Dense
    (NTK parametrization; the input kernel is ``x . x' / d`` as everywhere in ntkit).

    **Returns:** a :class:`KernelFamily`; ``family.ntk(L, fix)`` and ``family.nngp(L)`` are
    ``(N1, N2)`` tensors equal to the kernels of the corresponding ``ntkit.layers`` network,
    in ``x1``'s dtype and computed as that network's kernel is (see ``Layer.kernel``:
    float16 in float32, an overflowing float32 again in float64, ``ValueError`` rather than
    NaN or inf).

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> x = torch.randn(6, 3, dtype=torch.float64)
        >>> fam = fc_kernel_family(x, max_depth=2, W_std=1.5, b_std=0.1)
        >>> net = L.serial(L.Dense(9, W_std=1.5, b_std=0.1), L.ReLU(),
        ...                L.Dense(9, W_std=1.5, b_std=0.1), L.ReLU(),
        ...                L.Dense(1, W_std=1.5, b_std=0.1))
        >>> bool(torch.allclose(fam.ntk(2, fix=0), net.kernel(x).ntk, rtol=1e-12))
        True
    """
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0:
        raise ValueError(f"max_depth must be a non-negative int; got {max_depth!r}")
    activation = ReLU() if activation is None else activation
    if not isinstance(activation, Activation):
        raise TypeError(f"activation must be an ntkit.layers activation; got {activation!r}")
    x1 = as_inputs(x1, "x1")
    if x2 is not None:
        x2 = as_inputs(x2, "x2")
        check_pair(x1, x2)
    if x1.ndim != 2:
        raise ValueError(f"x1 must have shape (N, features); got {tuple(x1.shape)}")
    dense = Dense(1, W_std=W_std, b_std=b_std)

    def run(work: torch.dtype) -> tuple[tuple[list[Tensor], list[Tensor]], bool]:
        # In a dtype that holds the values, as net.kernel computes (see in_finite_dtype).
        k = Kernel.from_inputs(x1.to(work), None if x2 is None else x2.to(work), ntk=False)
        one = torch.ones((), dtype=work, device=x1.device)
        K: list[Tensor] = []
        T: list[Tensor] = []
        for depth in range(max_depth + 1):
            k = dense.kernel_fn(k)
            K.append(k.nngp)
            if depth < max_depth:
                # With Theta = 1 going in, the activation's kernel map leaves E[phi' phi'] in
                # ntk.
                k = activation.kernel_fn(k.replace(ntk=one))
                T.append(k.ntk * dense.W_std**2)
                k = k.replace(ntk=None)
        return (K, T), all(all_finite(t) for t in K + T)

    K, T = in_finite_dtype(run, x1, x2)
    return KernelFamily(K, T, dtype=x1.dtype)
