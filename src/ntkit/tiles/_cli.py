"""``ntkit kernel`` and ``ntkit kernel status`` (called by ``ntkit.cli``)."""

from __future__ import annotations

import sys

__all__ = ["kernel_command", "status_command"]


def _fail(message: str) -> int:
    print(f"ntkit kernel: {message}", file=sys.stderr)
    return 2


def kernel_command(spec: str, x: str, *, x2: str | None, out: str, tile: int, get: str,
                   workers: int | None, scheduler: str | None, progress: bool) -> int:
    """Compute the kernel of the spec file on the ``.npy`` inputs into the store ``out``."""
    import numpy as np
    import torch

    from ..layers import load_spec
    from ._compute import compute

    try:
        net = load_spec(spec)
        arrays = [np.load(p, allow_pickle=False) for p in ([x] if x2 is None else [x, x2])]
    except (OSError, ValueError, TypeError) as err:
        return _fail(str(err))
    if workers is not None and workers <= 0:
        return _fail("--workers must be positive")
    executor = scheduler if scheduler is not None else ("dask" if workers else None)
    try:
        k = compute(net, *(torch.from_numpy(a) for a in arrays), store=out, tile=tile,
                    get=("nngp", "ntk") if get == "both" else get, executor=executor,
                    workers=workers, progress=progress)
    except (ValueError, TypeError) as err:
        return _fail(str(err))
    print(f"{k.path}: {k.done}/{k.total} tiles, kernel {k.shape[0]} x {k.shape[1]}")
    return 0


def status_command(store: str) -> int:
    """Print tiles done / total and the provenance of a store."""
    from tqdm.auto import tqdm

    from ._lazy import open as open_store

    try:
        k = open_store(store)
    except (OSError, ValueError) as err:
        return _fail(str(err))
    p = k.provenance
    print(f"{k.path}")
    print(f"tiles: {k.done}/{k.total} done" + ("" if k.complete else " (rerun to finish)"))
    with tqdm(total=k.total, initial=k.done, desc="tiles", file=sys.stdout,
              disable=None) as bar:
        bar.refresh()
    print(f"kernel: {p['n1']} x {p['n2']} {p['dtype']} {'+'.join(p['get'])}, "
          f"{'symmetric' if p['symmetric'] else 'rectangular'}, tile {p['tile']}")
    print(f"spec: {p['spec_hash'][:12]} ({p['spec']['net']['type']})")
    print(f"inputs: x1 {p['x1'][:12]}" + ("" if p["x2"] is None else f", x2 {p['x2'][:12]}"))
    print(f"versions: ntkit {p['ntkit_version']}, torch {p['torch_version']}")
    return 0
