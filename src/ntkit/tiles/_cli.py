"""``ntkit kernel`` and ``ntkit kernel status`` (called by ``ntkit.cli``, which turns their
errors into ``ntkit kernel: message``)."""

from __future__ import annotations

import math

import numpy as np

from .._paths import open_regular

__all__ = ["kernel_command", "status_command", "load_npy"]


def load_npy(path: str, name: str) -> np.ndarray:
    """The array in the ``.npy`` file ``path`` (regular file, no pickles), whose header must
    describe exactly the bytes that follow it: a header claiming more data than the file
    holds is refused before anything is allocated."""
    fmt = np.lib.format
    with open_regular(path, what=f"{name}: {path}") as f:
        version = fmt.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{name}: {path} is .npy format {version}; expected 1.0 or 2.0")
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else \
            fmt.read_array_header_2_0
        shape, _, dtype = read_header(f)
        if dtype.hasobject:
            raise ValueError(f"{name}: {path} holds Python objects; expected numbers")
        size = math.prod(shape) * dtype.itemsize
        rest = _remaining(f)
        if size != rest:
            raise ValueError(f"{name}: the header of {path} says shape {shape} {dtype} "
                             f"({size} bytes) but {rest} bytes follow it")
        f.seek(0)
        return np.load(f, allow_pickle=False)


def _remaining(f) -> int:
    here = f.tell()
    end = f.seek(0, 2)
    f.seek(here)
    return end - here


def kernel_command(spec: str, x: str, *, x2: str | None, out: str, tile: int, get: str,
                   workers: int | None, scheduler: str | None, verify: bool,
                   progress: bool) -> int:
    """Compute the kernel of the spec file on the ``.npy`` inputs into the store ``out``."""
    import torch

    from ..layers import load_spec
    from ._compute import compute

    net = load_spec(spec)
    arrays = [load_npy(x, "X")] + ([] if x2 is None else [load_npy(x2, "--x2")])
    if tile <= 0:
        raise ValueError(f"--tile must be a positive integer; got {tile}")
    if workers is not None and workers <= 0:
        raise ValueError(f"--workers must be a positive integer; got {workers}")
    executor = scheduler if scheduler is not None else ("dask" if workers else None)
    k = compute(net, *(torch.from_numpy(a) for a in arrays), store=out, tile=tile,
                get=("nngp", "ntk") if get == "both" else get, executor=executor,
                workers=workers, verify=verify, progress=progress)
    print(f"{k.path}: {k.done}/{k.total} tiles, kernel {k.shape[0]} x {k.shape[1]}")
    return 0


def status_command(store: str, *, verify: bool, progress: bool) -> int:
    """Print the finished, missing and (with ``verify``) corrupt tiles and the provenance."""
    from ._lazy import open as open_store

    k = open_store(store, verify=verify)
    bad = k.check(progress=progress) if verify else []
    p = k.provenance
    done = k.done - len(bad)
    line = f"tiles: {done}/{k.total} done"
    if k.done < k.total:
        line += f", {k.total - k.done} missing"
    if bad:
        shown = ", ".join(bad[:8]) + (", ..." if len(bad) > 8 else "")
        line += f", {len(bad)} corrupt ({shown})"
    if done < k.total:
        line += " (rerun ntkit kernel to finish)"
    elif not verify:
        line += " (not verified)"
    net = p["spec"].get("net")
    kind = net.get("type") if isinstance(net, dict) else None
    print(f"{k.path}")
    print(line)
    print(f"kernel: {p['n1']} x {p['n2']} {p['dtype']} {'+'.join(p['get'])}, "
          f"{'symmetric' if p['symmetric'] else 'rectangular'}, tile {p['tile']}")
    print(f"spec: {p['spec_hash'][:12]} ({str(kind)[:40]})")
    print(f"inputs: x1 {p['x1'][:12]}" + ("" if p["x2"] is None else f", x2 {p['x2'][:12]}"))
    print(f"versions: ntkit {p['ntkit_version'][:40]}, torch {p['torch_version'][:40]}")
    return 0
