"""The architecture search space of the NAS benchmark: 240 MLPs and small CNNs on 8x8 digits.

A spec is a JSON-able dict ``{"kind", "depth", "width", "act", "skip", "norm"}``:

- ``kind="mlp"``: ``Linear(64, width) - act``, then ``depth`` blocks
  ``Linear(width, width) - norm - act`` (with ``skip``: ``h + block(h)``), then
  ``Linear(width, 10)``. ``depth`` in {1, 3}, ``width`` in {16, 64, 256}.
- ``kind="cnn"``: on ``(1, 8, 8)`` images, ``Conv2d(1, width, 3, padding=1) - act``, then
  ``depth`` blocks ``Conv2d(width, width, 3, padding=1) - norm - act`` (residual with ``skip``),
  then flatten and ``Linear(64 width, 10)``. ``depth`` in {1, 3}, ``width`` (channels) in
  {4, 16}.
- ``act`` in {relu, gelu, tanh, sin}; ``norm`` in {none, layernorm, batchnorm} (for the CNN,
  ``layernorm`` is ``GroupNorm(1, width)``, a LayerNorm over channels and positions).

PyTorch's default initialisation throughout. :func:`space` lists the specs in a fixed shuffled
order, so that the first ``n`` of them (``build.py --limit n``) already cover the space.
"""

from __future__ import annotations

import itertools
import json
import random

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "Sin", "build", "key", "space"]


class Sin(nn.Module):
    """Elementwise sine."""

    def forward(self, x):
        return torch.sin(x)


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sin": Sin}
NORMS = ("none", "layernorm", "batchnorm")


def space() -> list[dict]:
    """All 240 specs, in a fixed shuffled order."""
    specs = []
    for kind, depths, widths in (("mlp", (1, 3), (16, 64, 256)), ("cnn", (1, 3), (4, 16))):
        for depth, width, act, skip, norm in itertools.product(
                depths, widths, ACTIVATIONS, (False, True), NORMS):
            specs.append({"kind": kind, "depth": depth, "width": width, "act": act,
                          "skip": skip, "norm": norm})
    random.Random(0).shuffle(specs)
    return specs


def key(spec: dict) -> str:
    """The canonical JSON text of a spec (the ``spec`` column of ``table.csv``)."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


class _Block(nn.Module):
    def __init__(self, layer: nn.Module, norm: nn.Module, act: nn.Module, skip: bool):
        super().__init__()
        self.layer, self.norm, self.act, self.skip = layer, norm, act, skip

    def forward(self, h):
        out = self.act(self.norm(self.layer(h)))
        return h + out if self.skip else out


class _Image(nn.Module):
    """``(N, 64)`` digits as ``(N, 1, 8, 8)`` images."""

    def forward(self, x):
        return x.reshape(x.shape[0], 1, 8, 8)


def build(spec: dict, *, seed: int) -> nn.Module:
    """The network of ``spec`` with parameters drawn after ``torch.manual_seed(seed)``
    (the global generator's state is restored); it maps ``(N, 64)`` to ``(N, 10)``."""
    if spec["act"] not in ACTIVATIONS or spec["norm"] not in NORMS:
        raise ValueError(f"unknown act or norm in spec {spec}")
    w, act = spec["width"], ACTIVATIONS[spec["act"]]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec["kind"] == "mlp":
            def norm():
                return {"none": nn.Identity(), "layernorm": nn.LayerNorm(w),
                        "batchnorm": nn.BatchNorm1d(w)}[spec["norm"]]
            layers = [nn.Linear(64, w), act()]
            layers += [_Block(nn.Linear(w, w), norm(), act(), spec["skip"])
                       for _ in range(spec["depth"])]
            layers += [nn.Linear(w, 10)]
        elif spec["kind"] == "cnn":
            def norm():
                return {"none": nn.Identity(), "layernorm": nn.GroupNorm(1, w),
                        "batchnorm": nn.BatchNorm2d(w)}[spec["norm"]]
            layers = [_Image(), nn.Conv2d(1, w, 3, padding=1), act()]
            layers += [_Block(nn.Conv2d(w, w, 3, padding=1), norm(), act(), spec["skip"])
                       for _ in range(spec["depth"])]
            layers += [nn.Flatten(), nn.Linear(64 * w, 10)]
        else:
            raise ValueError(f"unknown kind in spec {spec}")
        return nn.Sequential(*layers)
