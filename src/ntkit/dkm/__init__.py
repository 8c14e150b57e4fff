"""Deep kernel machines (Yang et al., ICML 2023): kernel methods whose per-layer Gram matrices
are learned under the DKM objective, a likelihood plus KL pulls towards the NNGP prior."""

from ._gram_map import GramMap as GramMap
from ._model import DKM as DKM

__all__ = ["DKM", "GramMap"]
