"""Symmetric rank-``k`` updates ``C += M M^T`` by BLAS ``?syrk`` for CPU tensors.

A block of the kernel against itself is ``J J^T``: a ``syrk`` computes one triangle of it,
half the multiply-adds of the product, in one call whose blocking suits a short, very wide
``J`` (``(B, P)``, ``P`` the parameters). torch exposes no ``syrk``, so ``_pairs._Triangle``
emulates it with batched products of tiles; on the CPU, for ``float32`` and ``float64``, the
BLAS that SciPy links does it directly (Dongarra et al. 1990, "A set of level 3 Basic Linear
Algebra Subprograms", ``xSYRK``), on the calling thread only.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["add_syrk_", "mirror_upper_", "syrk_supported"]

_ROUTINES = {torch.float64: "dsyrk", torch.float32: "ssyrk"}


def syrk_supported(like: Tensor) -> bool:
    """Whether :func:`add_syrk_` is used for tensors of ``like``'s dtype and device: on the
    CPU while torch runs one thread. With more, torch's own products are kept: the BLAS's
    idle threads wait busily after each call, beside torch's, and on a loaded machine
    that made whole kernels many times slower."""
    return (like.device.type == "cpu" and like.dtype in _ROUTINES
            and torch.get_num_threads() == 1)


def add_syrk_(acc: Tensor, mat: Tensor) -> None:
    """``acc += mat mat^T`` on and above the diagonal of ``acc`` (``(M, M)``, C-contiguous,
    of ``mat``'s dtype; the entries below are left as they are) for ``mat`` ``(M, P)``.

    Example:
        >>> import torch
        >>> m = torch.randn(5, 40, dtype=torch.float64)
        >>> acc = torch.zeros(5, 5, dtype=torch.float64)
        >>> add_syrk_(acc, m)
        >>> bool((acc.tril(-1) == 0).all()), bool(torch.allclose(mirror_upper_(acc), m @ m.T))
        (True, True)
    """
    from scipy.linalg import blas
    from threadpoolctl import threadpool_limits

    routine = getattr(blas, _ROUTINES[mat.dtype])
    # In column-major terms ``acc`` is ``C^T`` and ``mat`` is ``A^T`` for ``A`` = mat^T
    # (P, M): ``trans=1`` gives ``C += A^T A``, and C's lower triangle is acc's upper one.
    # Neither is copied (``overwrite_c`` on a Fortran-ordered C).
    c = acc.numpy().T
    a = mat.detach().numpy().T
    with threadpool_limits(1, user_api="blas"):
        out = routine(1.0, a, beta=1.0, c=c, trans=1, lower=1, overwrite_c=1)
    if out.ctypes.data != c.ctypes.data:  # the wrapper had to copy C
        acc.copy_(torch.from_numpy(out.T))


def mirror_upper_(acc: Tensor) -> Tensor:
    """``acc`` (``(M, M)``, zero below the diagonal) with its upper triangle mirrored below,
    in place: symmetric bit for bit."""
    return acc.add_(torch.triu(acc, diagonal=1).T)
