"""Random features, sketches and Nyström approximations of neural-network kernels, and linear
attention built on positive random features: the approximations that make kernels usable past
the ~50 000 examples where an exact ``N x N`` kernel stops fitting.

Each feature map is a ``torch.nn.Module`` and a scikit-learn transformer (``fit`` /
``transform``), whose inner products ``phi(x) . phi(x')`` estimate a kernel of ``ntkit.layers``
in its conventions.
"""

from ._arccos import ArcCosineFeatures as ArcCosineFeatures
from ._arccos import NNGPFeatures as NNGPFeatures
from ._arccos import arc_cosine_kernel as arc_cosine_kernel
from ._base import RandomFeatureMap as RandomFeatureMap
from ._ntk_features import NTKFeatures as NTKFeatures
from ._ntk_sketch import NTKSketch as NTKSketch
from ._ntk_sketch import ntk_polynomial as ntk_polynomial

__all__ = ["RandomFeatureMap", "ArcCosineFeatures", "NNGPFeatures", "NTKFeatures",
           "NTKSketch", "arc_cosine_kernel", "ntk_polynomial"]
