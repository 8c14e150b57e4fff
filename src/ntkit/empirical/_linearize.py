"""Taylor expansions of a model in its parameters: ``linearize`` (order 1) and ``taylor``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from ._checks import check_model
from ._model import ParamSpec, select_params
from ._probe import check_deterministic

__all__ = ["linearize", "taylor"]


class _Expansion(nn.Module):
    """``sum_{k <= order} D^k f(x; p0)[p - p0, ..., p - p0] / k!`` with trainable ``p``."""

    def __init__(self, model: nn.Module, order: int, params: ParamSpec):
        super().__init__()
        check_model(model, next(model.parameters()))
        selected = select_params(model, params)
        names = [n for n, p in model.named_parameters() if id(p) in selected]
        self.order = order
        self.module = _copy(model)
        # p0: the expansion point, as buffers (moved by .to(), saved in state_dict).
        self.origin = nn.Module()
        for n in names:
            self.origin.register_buffer(n.replace(".", "__"), dict(
                self.module.named_parameters())[n].detach().clone())
        self._names = names
        self._deterministic = False  # checked on the first call, which has inputs
        for n, p in self.module.named_parameters():
            p.requires_grad_(n in names)

    def forward(self, x: Tensor) -> Tensor:
        if not self._deterministic:
            # The expansion's terms are separate passes: a random model would draw another
            # dropout mask for each.
            with torch.no_grad():
                check_deterministic(self.module, self.module, x[:2], self.module(x[:2]))
            self._deterministic = True
        p = dict(self.module.named_parameters())
        p0 = {n: getattr(self.origin, n.replace(".", "__")) for n in self._names}
        delta = {n: p[n] - p0[n] for n in self._names}

        def f(q: dict[str, Tensor]) -> Tensor:
            return functional_call(self.module, q, (x,))

        # D^k f[delta]^k by k nested jvps along delta; forward-mode AD, so the cost of order
        # k is about 2^k forward passes.
        terms = [f]
        for _ in range(self.order):
            prev = terms[-1]
            terms.append(lambda q, prev=prev: jvp(prev, (q,), (delta,))[1])
        out = terms[0](p0)
        for k in range(1, self.order + 1):
            out = out + terms[k](p0) / math.factorial(k)
        return out

    def extra_repr(self) -> str:
        return f"order={self.order}, parameters={len(self._names)}"


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def linearize(model: nn.Module, *, params: ParamSpec = None) -> nn.Module:
    """The model linearised in its parameters around their current values ``p0``.

    Returns an ``nn.Module`` computing ``f(x; p0) + J(x; p0) (p - p0)`` (one
    ``torch.func.jvp``), whose own trainable parameters ``p`` (a copy of ``model``'s, under
    ``module.<name>``) start at ``p0``. Gradient descent on it is the kernel regime: its NTK
    is the empirical NTK of ``model`` at ``p0``, constant in training (Lee et al. 2019).

    **Arguments:**

    - ``model``: any ``nn.Module`` whose examples are independent; it is copied, not changed.
    - ``params``: which parameters are linearised and trainable, as in ``empirical_ntk``;
      the others are frozen constants.

    **Returns:** an ``nn.Module`` mapping ``(N, *features)`` to the model's ``(N, *out)``.

    Example:
        >>> import torch
        >>> from ntkit.empirical import linearize
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(),
        ...                             torch.nn.Linear(8, 1)).double()
        >>> lin = linearize(model)
        >>> x = torch.randn(4, 3, dtype=torch.float64)
        >>> bool(torch.allclose(lin(x), model(x)))
        True
        >>> lin(x).sum().backward()   # gradients reach lin's own parameters
        >>> lin.module[0].weight.grad.shape
        torch.Size([8, 3])
    """
    return taylor(model, 1, params=params)


def taylor(model: nn.Module, order: int, *, params: ParamSpec = None) -> nn.Module:
    """The Taylor expansion of the model in its parameters around their current values.

    ``sum_{k=0}^{order} D^k f(x; p0)[p - p0]^k / k!`` by nested ``torch.func.jvp``; order 1
    is :func:`linearize`, order 0 the model frozen at ``p0``.

    **Arguments:** ``model``, ``params`` as for :func:`linearize`; ``order``: a
    non-negative integer (cost about ``2^order`` forward passes).

    **Returns:** an ``nn.Module`` with its own trainable parameters, starting at ``p0``.

    Example:
        >>> import torch
        >>> from ntkit.empirical import taylor
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(),
        ...                             torch.nn.Linear(4, 1)).double()
        >>> quad = taylor(model, 2)
        >>> x = torch.randn(3, 2, dtype=torch.float64)
        >>> bool(torch.allclose(quad(x), model(x)))
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(order, bool) or not isinstance(order, int):
        raise TypeError(f"order must be a non-negative integer; got {order!r}")
    if order < 0:
        raise ValueError(f"order must be a non-negative integer; got {order}")
    if not any(True for _ in model.parameters()):
        raise ValueError("model has no parameters to expand in")
    return _Expansion(model, order, params)

