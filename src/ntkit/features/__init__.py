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
from ._favor import FAVORFeatures as FAVORFeatures
from ._favor import gaussian_projection as gaussian_projection
from ._favor import positive_random_features as positive_random_features
from ._linear_attention import LinearAttention as LinearAttention
from ._linear_attention import linear_attention as linear_attention
from ._ntk_features import NTKFeatures as NTKFeatures
from ._ntk_sketch import NTKSketch as NTKSketch
from ._ntk_sketch import ntk_polynomial as ntk_polynomial
from ._nystrom import Nystroem as Nystroem
from ._snnk import URF_FUNCTIONS as URF_FUNCTIONS
from ._snnk import SNNKFeatures as SNNKFeatures
from ._snnk import SNNKLayer as SNNKLayer
from ._snnk import UniversalRandomFeatures as UniversalRandomFeatures

__all__ = [
    "RandomFeatureMap",
    # NN-kernel random features and sketches
    "ArcCosineFeatures", "NNGPFeatures", "NTKFeatures", "NTKSketch", "arc_cosine_kernel",
    "ntk_polynomial",
    # FAVOR+, SNNK / URF, linear attention
    "FAVORFeatures", "gaussian_projection", "positive_random_features",
    "LinearAttention", "linear_attention",
    "URF_FUNCTIONS", "SNNKFeatures", "SNNKLayer", "UniversalRandomFeatures",
    # Nyström features of any ntkit kernel
    "Nystroem",
]
