"""ntkit: infinite-width and empirical neural tangent kernels in PyTorch."""

from . import layers as layers
from .empirical import empirical_nngp as empirical_nngp
from .empirical import empirical_ntk as empirical_ntk
from .empirical import linearize as linearize
from .empirical import taylor as taylor
from .kernel import Kernel as Kernel

__version__ = "0.1.0"

# Subpackages and modules imported on first attribute access, so that `import ntkit` stays
# light (no scikit-learn, SciPy, zarr or dask until they are used).
_LAZY = ("analysis", "apps", "cli", "datasets", "dkm", "empirical", "estimators", "family",
         "features", "parametrize", "predict", "solve", "theory", "tiles")

__all__ = ["Kernel", "empirical_nngp", "empirical_ntk", "layers", "linearize", "taylor",
           "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
