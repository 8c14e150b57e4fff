"""ntkit: infinite-width and empirical neural tangent kernels in PyTorch."""

from . import layers as layers
from .empirical import empirical_nngp as empirical_nngp
from .empirical import empirical_ntk as empirical_ntk
from .empirical import linearize as linearize
from .empirical import taylor as taylor
from .kernel import Kernel as Kernel

__version__ = "0.1.0"

__all__ = ["Kernel", "empirical_nngp", "empirical_ntk", "estimators", "layers", "linearize",
           "predict", "solve", "taylor", "__version__"]


def __getattr__(name: str):
    # Imported on first access, so that `import ntkit` does not import scikit-learn or scipy.
    if name in ("estimators", "predict", "solve"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
