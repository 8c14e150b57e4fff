"""One rule for turning a ``random_state`` argument into a ``torch.Generator``, shared by the
feature maps, the landmark sampling of ``ntkit.solve.krr`` and the estimators."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["torch_generator"]


def torch_generator(random_state) -> torch.Generator:
    """A CPU ``torch.Generator`` for ``random_state``.

    ``None``: seeded from torch's global generator (so ``torch.manual_seed`` repeats a run);
    an ``int``: seeded with it; a ``torch.Generator``: itself (each fit advances it); a NumPy
    ``RandomState`` / ``Generator``: seeded with one draw from it. Anything else raises
    ``TypeError``.
    """
    if isinstance(random_state, torch.Generator):
        if random_state.device.type != "cpu":
            raise ValueError(f"random_state must be a CPU torch.Generator; got one on "
                             f"{random_state.device}")
        return random_state
    if random_state is None:
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    elif isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        seed = int(random_state)
    elif isinstance(random_state, np.random.RandomState):
        seed = int(random_state.randint(0, 2**31 - 1))
    elif isinstance(random_state, np.random.Generator):
        seed = int(random_state.integers(0, 2**62))
    else:
        raise TypeError(f"random_state must be None, an int, a torch.Generator or a NumPy "
                        f"RandomState/Generator; got {random_state!r}")
    return torch.Generator().manual_seed(seed)
