"""ntkit: infinite-width and empirical neural tangent kernels in PyTorch."""

from . import layers as layers
from .kernel import Kernel as Kernel

__version__ = "0.1.0"

__all__ = ["Kernel", "layers", "__version__"]
