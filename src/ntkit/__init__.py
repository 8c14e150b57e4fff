"""ntkit: infinite-width and empirical neural tangent kernels in PyTorch."""

from . import layers as layers
from .empirical import empirical_ntk as empirical_ntk
from .kernel import Kernel as Kernel

__version__ = "0.1.0"

__all__ = ["Kernel", "empirical_ntk", "layers", "__version__"]
