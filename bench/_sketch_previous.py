"""The NTK sketch as ntkit built it before the shared tree and the final SRHT: the anchor of
the NTK sketch rows of ``bench/_features_rf.py`` (bias-free networks only).

Each degree ``j >= 1`` with ``a_j > 0`` got its own balanced tree of TensorSRHTs (``j - 1``
of them, one SRHT for ``j = 1``) and an equal share ``(m - 1) / #degrees`` of the features;
the degrees' sketches were concatenated as they were, with no final compression.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ntkit.features import NTKSketch, ntk_polynomial
from ntkit.features._sketch import draw_tensor_srht, tensor_srht

__all__ = ["PreviousNTKSketch"]


def _tree(j: int, name: str) -> list[tuple[str, int, int]]:
    if j == 1:
        return []
    left, right = j // 2, j - j // 2
    return _tree(left, name + "l") + _tree(right, name + "r") + [(name, left, right)]


class PreviousNTKSketch(NTKSketch):
    """One tree per degree, ``m`` split evenly between the degrees, no final SRHT."""

    def _check_hyper(self, d):
        if self.b_std != 0:
            raise ValueError("the previous NTK sketch had no biases")

    def _plan(self, coef: np.ndarray) -> list[tuple[int, int]]:
        active = [j for j in range(1, len(coef)) if coef[j] > 0]
        share, extra = divmod(self.n_components - 1, len(active))
        return [(j, share + (i < extra)) for i, j in enumerate(active)]

    def _draw(self, d, generator):
        coef, err = ntk_polynomial(self.depth, float(self.W_std), self.degree)
        self.poly_error_ = err
        draws = {"coef": torch.from_numpy(coef)}
        for j, m_j in self._plan(coef):
            if j == 1:
                for key, value in draw_tensor_srht(d, 1, m_j, generator).items():
                    draws[f"d1_{key}"] = value
            for name, left, right in _tree(j, f"d{j}_"):
                p = d if left == 1 else m_j
                q = d if right == 1 else m_j
                for key, value in draw_tensor_srht(p, q, m_j, generator).items():
                    draws[f"{name}{key}"] = value
        return draws

    def _features(self, x):
        coef = self._buffer("coef_", x)
        norm = x.norm(dim=1, keepdim=True)
        unit = x / torch.where(norm > 0, norm, torch.ones_like(norm))
        scale = norm * x.shape[1] ** -0.5
        parts = [coef[0].sqrt() * scale]
        for j, _ in self._plan(coef.detach().cpu().numpy()):
            parts.append(coef[j].sqrt() * scale * self._power_of(unit, j))
        return torch.cat(parts, dim=1)

    def _power_of(self, unit: Tensor, j: int) -> Tensor:
        def srht(name: str, t: Tensor, s: Tensor) -> Tensor:
            return tensor_srht(t, s, *(self._buffer(f"{name}{key}_", unit)
                                       for key in ("sigma", "tau", "rows")))

        if j == 1:
            return srht("d1_", unit, torch.ones_like(unit[:, :1]))
        done: dict[str, Tensor] = {}
        for name, left, right in _tree(j, f"d{j}_"):
            t = unit if left == 1 else done.pop(name + "l")
            s = unit if right == 1 else done.pop(name + "r")
            done[name] = srht(name, t, s)
        return done[f"d{j}_"]

