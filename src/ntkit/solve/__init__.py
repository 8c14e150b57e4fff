"""Linear algebra on kernel matrices shared by ``ntkit.predict``, the estimators and benchmarks.

- :func:`cholesky`: Cholesky with increasing jitter (and a :class:`JitterWarning` giving the
  amount) for singular-to-working-precision kernels, and :class:`NotPSDError` naming the most
  negative eigenvalue of a kernel that is not PSD beyond round-off.
- :func:`eigh`: symmetric eigendecomposition with the same PSD check, eigenvalues below
  :func:`rank_tolerance` set to exactly 0.
- :func:`cg_solve`: preconditioned conjugate gradients.
- :func:`lanczos_eigsh`: the top eigenpairs of a symmetric operator given as a matrix-vector
  product (a large kernel's top spectrum, a loss's top Hessian eigenvalues).
- :func:`lanczos_funm`: ``f(A) B`` for a symmetric PSD operator by Lanczos (the finite-time
  predictions of ``ntkit.predict`` without an eigendecomposition), with
  :func:`exp_krylov_steps`, the a priori step count for ``exp(-tau A) b``.
- :class:`PSDSolver`: ``(K + ridge I)^+ B`` by Cholesky, falling back to the pseudo-inverse on
  the range for singular kernels, or by CG above :data:`CG_THRESHOLD` rows.
- :func:`kernel_ridge`, :func:`centred_one_hot`: the ridge solve of the estimators and demo.
- :func:`krr`: kernel ridge regression at scale (exact, or Nyström with FALKON's
  preconditioned CG streaming kernel blocks locally or on a Dask cluster), returning a
  :class:`KRRModel`; :func:`sample_landmarks` (uniform or ridge-leverage-score landmarks).
"""

from ._cg import CGConvergenceWarning as CGConvergenceWarning
from ._cg import PivotedCholeskyPreconditioner as PivotedCholeskyPreconditioner
from ._cg import cg_solve as cg_solve
from ._cholesky import JitterWarning as JitterWarning
from ._cholesky import NotPSDError as NotPSDError
from ._cholesky import cho_solve as cho_solve
from ._cholesky import cholesky as cholesky
from ._eigh import eigh as eigh
from ._eigh import rank_tolerance as rank_tolerance
from ._krr import KRRModel as KRRModel
from ._krr import krr as krr
from ._krylov import FunmResult as FunmResult
from ._krylov import exp_krylov_steps as exp_krylov_steps
from ._krylov import lanczos_funm as lanczos_funm
from ._lanczos import lanczos_eigsh as lanczos_eigsh
from ._landmarks import sample_landmarks as sample_landmarks
from ._psd import CG_THRESHOLD as CG_THRESHOLD
from ._psd import PSDSolver as PSDSolver
from ._ridge import centred_one_hot as centred_one_hot
from ._ridge import kernel_ridge as kernel_ridge

__all__ = [
    "cho_solve",
    "cholesky", "eigh", "rank_tolerance", "lanczos_eigsh", "cg_solve", "PSDSolver",
    "PivotedCholeskyPreconditioner",
    "CG_THRESHOLD", "JitterWarning", "NotPSDError", "CGConvergenceWarning",
    "kernel_ridge", "centred_one_hot",
    "krr", "KRRModel", "sample_landmarks",
    "lanczos_funm", "exp_krylov_steps", "FunmResult",
]
