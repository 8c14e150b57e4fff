"""Random features, sketches and Nyström approximations of neural-network kernels, and linear
attention built on positive random features: the approximations that make kernels usable past
the ~50 000 examples where an exact ``N x N`` kernel stops fitting.

Each feature map is a ``torch.nn.Module`` and a scikit-learn transformer (``fit`` /
``transform``), whose inner products ``phi(x) . phi(x')`` estimate a kernel of ``ntkit.layers``
in its conventions.
"""

from ._base import RandomFeatureMap as RandomFeatureMap
from ._nystrom import Nystroem as Nystroem

__all__ = ["RandomFeatureMap", "Nystroem"]
