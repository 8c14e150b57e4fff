"""Similarity of kernels and of representations: alignment, centred alignment, HSIC, CKA and
the kernel distance.

Every kernel argument is checked by :func:`~ntkit.analysis._checks.as_kernel`. The
uncentred quantities (alignment, kernel distance) extend to multi-output kernels
``(N, N, O, O)`` through their Frobenius inner product; the centred ones centre over examples
(``H K H`` for ``(N, N)``, ``(H ⊗ I_O) K (H ⊗ I_O)`` for ``(N, N, O, O)``); HSIC and CKA,
statistics of ``N`` samples, take ``(N, N)`` kernels only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .._checks import all_finite
from ._checks import as_float_tensor, as_kernel, flatten

__all__ = [
    "centered_alignment", "centered_target_alignment", "cka", "cka_from_kernels", "hsic",
    "kernel_alignment", "kernel_distance", "target_alignment",
]


def kernel_alignment(K1, K2) -> float:
    """Kernel alignment ``<K1, K2>_F / (||K1||_F ||K2||_F)`` (Cristianini, Shawe-Taylor,
    Elisseeff & Kandola, 2001), in ``[-1, 1]`` (``[0, 1]`` for PSD kernels).

    **Arguments:** ``K1``, ``K2`` of the same shape, ``(N, N)`` or ``(N, N, O, O)``.

    **Returns:** a float.

    Example:
        >>> K = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> round(kernel_alignment(K, 3 * K), 12), round(kernel_alignment(K, torch.eye(2)), 12)
        (1.0, 0.894427191)
    """
    K1, K2 = _pair(K1, K2, "K1", "K2")
    return _cosine(K1, K2, "K1", "K2")


def kernel_distance(K1, K2) -> float:
    """Kernel distance ``1 - <K1, K2>_F / (||K1||_F ||K2||_F)`` of Fort et al. (2020), the
    measure of how far an empirical NTK moved during training: ``1 - kernel_alignment``.

    **Arguments:** ``K1``, ``K2`` of the same shape, ``(N, N)`` or ``(N, N, O, O)``.

    Computed as ``||K1 / ||K1||_F - K2 / ||K2||_F||_F^2 / 2``, equal to it in exact arithmetic
    and accurate to working precision *relative to the distance itself*, where ``1 - cos`` would
    lose it to cancellation: a wide network's kernel moves by ``1e-4`` or less.

    **Arguments:** ``K1``, ``K2`` of the same shape, ``(N, N)`` or ``(N, N, O, O)``.

    **Returns:** a float in ``[0, 2]`` (``[0, 1]`` for PSD kernels); 0 for proportional kernels.

    Example:
        >>> K = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> kernel_distance(K, 5 * K) < 1e-15, round(kernel_distance(K, torch.eye(2)), 12)
        (True, 0.105572809)
    """
    K1, K2 = _pair(K1, K2, "K1", "K2")
    norm1, norm2 = _norm(K1, "K1"), _norm(K2, "K2")
    return float(torch.linalg.vector_norm(K1 / norm1 - K2 / norm2)) ** 2 / 2


def target_alignment(K, y) -> float:
    """Kernel-target alignment: the alignment of ``K`` with ``y y^T`` (Cristianini et al.,
    2001), ``y^T K y / (||K||_F ||y||^2)`` for one output.

    With ``O`` outputs, ``y y^T`` is ``Y Y^T`` ``(N, N)`` for an ``(N, N)`` kernel, and
    ``vec(Y) vec(Y)^T`` for an ``(N, N, O, O)`` kernel (``vec`` with index ``i * O + a``).
    Computed without forming an ``N x N`` target matrix.

    **Arguments:** ``K`` ``(N, N)`` or ``(N, N, O, O)``; ``y`` ``(N,)`` or ``(N, O)``.

    **Returns:** a float in ``[0, 1]`` for a PSD ``K``.

    Example:
        >>> y = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
        >>> round(target_alignment(torch.outer(y, y), y), 12)
        1.0
    """
    K = as_kernel(K, "K")
    Y = _targets(y, K)
    return _target_cosine(flatten(K), Y)


def centered_alignment(K1, K2) -> float:
    """Centred kernel alignment ``<K1c, K2c>_F / (||K1c||_F ||K2c||_F)``, ``Kc = H K H`` with
    ``H = I - 1 1^T / N`` (Cortes, Mohri & Rostamizadeh, 2012).

    **Arguments:** ``K1``, ``K2`` of the same shape, ``(N, N)`` or ``(N, N, O, O)`` (centred
    over examples, ``H ⊗ I_O``).

    **Returns:** a float in ``[-1, 1]``.

    Example:
        >>> K = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
        >>> round(centered_alignment(K, K + 7.0), 6)  # a constant shift is centred away
        1.0
    """
    K1, K2 = _pair(K1, K2, "K1", "K2")
    return _cosine(_center(K1), _center(K2), "K1 (centred)", "K2 (centred)")


def centered_target_alignment(K, y) -> float:
    """Centred kernel-target alignment (Cortes, Mohri & Rostamizadeh, 2012): the centred
    alignment of ``K`` with ``y y^T``, ``yc^T K yc / (||H K H||_F ||yc||^2)``, ``yc = H y``
    (the targets minus their mean over examples). Multi-output as in
    :func:`target_alignment`.

    **Arguments:** ``K`` ``(N, N)`` or ``(N, N, O, O)``; ``y`` ``(N,)`` or ``(N, O)``.

    **Returns:** a float in ``[-1, 1]``.

    Example:
        >>> y = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
        >>> K = torch.outer(y, y) + 3.0
        >>> round(centered_target_alignment(K, y), 12)
        1.0
    """
    K = as_kernel(K, "K")
    return _target_cosine(flatten(_center(K)), _targets(y, K, center=True))


def hsic(K, L, *, unbiased: bool = False) -> float:
    """Hilbert-Schmidt independence criterion of two kernels on the same ``N`` samples.

    - biased (Gretton et al., 2005): ``tr(K H L H) / (N - 1)^2``;
    - ``unbiased=True`` (Song et al., 2012), ``N >= 4``: with ``K~``, ``L~`` the
      kernels with zeroed diagonals,
      ``[tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((N-1)(N-2)) - 2/(N-2) 1^T K~ L~ 1] / (N (N-3))``.

    **Arguments:** ``K``, ``L`` ``(N, N)`` (kernels between examples); ``unbiased``.

    **Returns:** a float.

    Example:
        >>> K = torch.eye(4, dtype=torch.float64)
        >>> round(hsic(K, K), 12)  # tr(H) / 9 = 3 / 9
        0.333333333333
    """
    K, L = _pair(K, L, "K", "L", multi_output=False)
    return _hsic(K, L, unbiased)


def cka_from_kernels(K, L, *, unbiased: bool = False) -> float:
    """Centred kernel alignment of Kornblith et al. (2019) from two kernel matrices:
    ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with the biased or unbiased HSIC.

    The biased form equals :func:`centered_alignment` (``(N - 1)^2`` cancels).

    **Arguments:** ``K``, ``L`` ``(N, N)``; ``unbiased`` (``N >= 4``).

    **Returns:** a float (in ``[0, 1]`` for PSD kernels with the biased HSIC).

    Example:
        >>> K = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
        >>> round(cka_from_kernels(K, 4 * K), 12)
        1.0
    """
    K, L = _pair(K, L, "K", "L", multi_output=False)
    kl, kk, ll = _hsic(K, L, unbiased), _hsic(K, K, unbiased), _hsic(L, L, unbiased)
    return _normalised(kl, kk, ll, "K", "L", unbiased)


def cka(X, Y, *, kernel: str = "linear", sigma: float | None = None,
        unbiased: bool = False) -> float:
    """Centred kernel alignment (CKA) of two representations of the same ``N`` examples
    (Kornblith, Norouzi, Lee & Hinton, 2019).

    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``K``, ``L`` the kernels of ``X``
    and ``Y``:

    - ``kernel="linear"``: ``K = X X^T``. When ``p, q <= N`` the Gram matrices are never
      formed: the biased form is ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` on
      column-centred features (their identity ``<X X^T, Y Y^T>_F = ||Y^T X||_F^2``), and the
      unbiased HSIC is expanded into ``p x q`` products and row norms likewise (``O(N p q)``).
    - ``kernel="rbf"``: ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))``; ``sigma=None`` takes
      ``0.8`` times the median distance between distinct examples, separately for ``X`` and
      ``Y`` (the largest of the fractions 0.2, 0.4, 0.8 in Kornblith et al.'s tables).

    **Arguments:** ``X`` ``(N, p)``, ``Y`` ``(N, q)`` (more axes are flattened into features);
    ``kernel``; ``sigma`` ``> 0`` or ``None``; ``unbiased`` (``N >= 4``).

    **Returns:** a float; 1 for identical representations, and for ``Y = c X Q`` with ``Q``
    orthogonal (linear CKA, and RBF CKA with the median bandwidth).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.randn(50, 5, dtype=torch.float64, generator=g)
        >>> round(cka(X, 3 * X), 12), round(cka(X, X, kernel="rbf"), 12)
        (1.0, 1.0)
    """
    X, Y = _representation(X, "X"), _representation(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must hold the same examples; got N = {X.shape[0]} and "
                         f"{Y.shape[0]}")
    if X.dtype != Y.dtype or X.device != Y.device:
        Y = Y.to(dtype=torch.promote_types(X.dtype, Y.dtype), device=X.device)
        X = X.to(Y.dtype)
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"kernel must be 'linear' or 'rbf'; got {kernel!r}")
    if sigma is not None and not (isinstance(sigma, (int, float)) and math.isfinite(sigma)
                                  and sigma > 0):
        raise ValueError(f"sigma must be None or a finite number > 0; got {sigma!r}")
    n = X.shape[0]
    if unbiased and n < 4:
        raise ValueError(f"the unbiased HSIC needs N >= 4 examples; got N = {n}")
    if kernel == "rbf":
        return cka_from_kernels(_rbf(X, sigma, "X"), _rbf(Y, sigma, "Y"), unbiased=unbiased)
    if max(X.shape[1], Y.shape[1]) > n:
        return cka_from_kernels(X @ X.T, Y @ Y.T, unbiased=unbiased)
    # Both HSIC estimators are invariant to a shift of the features (the biased one through H,
    # the unbiased one as a U-statistic of centred products): centring first spares the
    # cancellation between large means.
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    if not unbiased:
        kl = float(torch.linalg.matrix_norm(Yc.T @ Xc) ** 2)
        kk = float(torch.linalg.matrix_norm(Xc.T @ Xc))
        ll = float(torch.linalg.matrix_norm(Yc.T @ Yc))
        return _normalised(kl, kk**2, ll**2, "X", "Y", False)
    return _normalised(_hsic_linear_unbiased(Xc, Yc), _hsic_linear_unbiased(Xc, Xc),
                       _hsic_linear_unbiased(Yc, Yc), "X", "Y", True)


# --------------------------------------------------------------------------------------------
# Helpers.

def _pair(K1, K2, n1: str, n2: str, *, multi_output: bool = True) -> tuple[Tensor, Tensor]:
    K1 = as_kernel(K1, n1, multi_output=multi_output)
    K2 = as_kernel(K2, n2, multi_output=multi_output)
    if K1.shape != K2.shape:
        raise ValueError(f"{n1} and {n2} must have the same shape; got {tuple(K1.shape)} and "
                         f"{tuple(K2.shape)}")
    if K1.dtype != K2.dtype or K1.device != K2.device:
        K2 = K2.to(dtype=torch.promote_types(K1.dtype, K2.dtype), device=K1.device)
        K1 = K1.to(K2.dtype)
    return K1, K2


def _cosine(A: Tensor, B: Tensor, na: str, nb: str) -> float:
    """``<A, B>_F / (||A||_F ||B||_F)``; a zero matrix has no direction and raises."""
    norm_a, norm_b = _norm(A, na), _norm(B, nb)
    # Cauchy-Schwarz bounds the exact value; rounding must not leave [-1, 1].
    return min(1.0, max(-1.0, float((A * B).sum()) / norm_a / norm_b))


def _norm(A: Tensor, name: str) -> float:
    """``||A||_F``; a zero matrix has no direction, and its alignment is undefined."""
    norm = float(torch.linalg.vector_norm(A))
    if norm == 0:
        raise ValueError(f"{name} is zero: its alignment with another kernel is undefined")
    return norm


def _center(K: Tensor) -> Tensor:
    """``H K H`` over the example axes 0 and 1 (``(H ⊗ I_O) K (H ⊗ I_O)`` for 4-D ``K``)."""
    return K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean((0, 1), keepdim=True)


def _targets(y, K: Tensor, *, center: bool = False) -> Tensor:
    """``y`` as ``(N, O)`` for an ``(N, N)`` kernel, or as ``vec(Y)`` ``(N O,)`` for a 4-D one;
    with ``center``, minus its mean over examples first (``H y``, ``(H ⊗ I_O) vec(Y)``)."""
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor or numpy array; got {type(y).__name__}")
    y = y.to(dtype=K.dtype, device=K.device)
    n = K.shape[0]
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise ValueError(f"y must have shape (N,) or (N, O) with N = {n}; got {tuple(y.shape)}")
    if y.numel() == 0:
        raise ValueError(f"y is empty: shape {tuple(y.shape)}")
    if not all_finite(y):
        raise ValueError("y contains NaN or infinite values")
    Y = y[:, None] if y.ndim == 1 else y
    if center:
        Y = Y - Y.mean(0)
    if K.ndim == 4:
        o = K.shape[2]
        if Y.shape != (n, o):
            raise ValueError(f"y must have shape (N, O) = ({n}, {o}) for a multi-output kernel "
                             f"(N, N, O, O); got {tuple(y.shape)}")
        return Y.reshape(n * o, 1)
    return Y


def _target_cosine(K: Tensor, Y: Tensor) -> float:
    """Alignment of ``K`` (``(M, M)``) with ``Y Y^T`` (``Y`` ``(M, O)``), through
    ``<K, Y Y^T>_F = tr(Y^T K Y)`` and ``||Y Y^T||_F = ||Y^T Y||_F``."""
    norm_k = float(torch.linalg.vector_norm(K))
    norm_y = float(torch.linalg.matrix_norm(Y.T @ Y))
    if norm_k == 0:
        raise ValueError("K is zero (after centring, if centred): its alignment is undefined")
    if norm_y == 0:
        raise ValueError("y is zero (after centring, if centred): its alignment is undefined")
    return float((Y * (K @ Y)).sum()) / norm_k / norm_y


def _hsic(K: Tensor, L: Tensor, unbiased: bool) -> float:
    n = K.shape[0]
    if not unbiased:
        return float((_center(K) * L).sum()) / (n - 1) ** 2
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs N >= 4 examples; got N = {n}")
    Kt, Lt = K.clone(), L.clone()
    Kt.diagonal().zero_()
    Lt.diagonal().zero_()
    k1, l1 = Kt.sum(1), Lt.sum(1)
    value = ((Kt * Lt).sum() + k1.sum() * l1.sum() / ((n - 1) * (n - 2))
             - 2 * (k1 @ l1) / (n - 2))
    return float(value) / (n * (n - 3))


def _hsic_linear_unbiased(X: Tensor, Y: Tensor) -> float:
    """Song et al.'s unbiased HSIC of ``K = X X^T``, ``L = Y Y^T`` in ``O(N p q)``: with
    ``K~ = K - diag(kx)``, ``kx_i = ||x_i||^2``, ``tr(K~ L~) = ||X^T Y||_F^2 - kx . ly``,
    ``K~ 1 = X (X^T 1) - kx``, and likewise for ``L~``."""
    n = X.shape[0]
    kx, ly = (X * X).sum(1), (Y * Y).sum(1)
    k1, l1 = X @ X.sum(0) - kx, Y @ Y.sum(0) - ly
    trace = torch.linalg.matrix_norm(X.T @ Y) ** 2 - kx @ ly
    value = trace + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2 * (k1 @ l1) / (n - 2)
    return float(value) / (n * (n - 3))


def _normalised(kl: float, kk: float, ll: float, n1: str, n2: str, unbiased: bool) -> float:
    for value, name in ((kk, n1), (ll, n2)):
        if not value > 0:
            why = (" (the unbiased estimate can be <= 0 for a few examples)" if unbiased
                   else " (a constant representation or kernel)")
            raise ValueError(f"HSIC({name}, {name}) = {value:.3g} is not positive{why}: "
                             f"CKA is undefined")
    return kl / math.sqrt(kk * ll)


def _representation(X, name: str) -> Tensor:
    X = as_float_tensor(X, name)
    if X.ndim < 2 or X.shape[0] == 0 or X[0].numel() == 0:
        raise ValueError(f"{name} must be a non-empty representation (N, features...); got "
                         f"shape {tuple(X.shape)}")
    if not all_finite(X):
        raise ValueError(f"{name} contains NaN or infinite values")
    return X.reshape(X.shape[0], -1)


def _rbf(X: Tensor, sigma: float | None, name: str) -> Tensor:
    # The direct difference form: the matmul form loses close pairs to cancellation.
    sq = torch.cdist(X, X, compute_mode="donot_use_mm_for_euclid_dist").square()
    if sigma is None:
        n = X.shape[0]
        if n < 2:
            raise ValueError(f"{name}: the median-distance bandwidth needs N >= 2 examples")
        i, j = torch.triu_indices(n, n, 1, device=X.device)
        d = sq[i, j].clamp_min(0).sqrt()
        m = d.numel()
        # The median of an even count is the mean of the middle two (as numpy.median).
        median = 0.5 * float(d.kthvalue((m + 1) // 2).values + d.kthvalue(m // 2 + 1).values)
        if median == 0:
            raise ValueError(f"{name}: the median distance between examples is 0; pass sigma")
        sigma = 0.8 * median
    return torch.exp(-sq / (2 * sigma**2))
