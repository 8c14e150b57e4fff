"""The lazy/rich knob: a model's output centred at its initial function and scaled by ``alpha``.

Chizat, Oyallon & Bach ("On Lazy Training in Differentiable Programming", NeurIPS 2019, Sec. 2)
train ``h_alpha(x; w) = alpha * (f(x; w) - f(x; w0))`` on the loss ``L(h_alpha) / alpha^2``.
The centring makes the output start at exactly zero whatever ``alpha``; the ``1/alpha^2``
keeps the function-space speed of gradient descent independent of ``alpha`` (the NTK of
``h_alpha`` is ``alpha^2`` times that of ``f``, the gradient of the scaled loss carries one
``1/alpha``), so the weights move by ``O(1/alpha)``: ``alpha -> infinity`` is gradient descent
on the model linearised at ``w0`` (their Theorem 2.4, a gap of ``O(1/alpha)`` over a fixed
time), and small ``alpha`` is the rich, feature-learning regime.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .._checks import real_number

__all__ = ["Centered", "centered"]


class Centered(nn.Module):
    """``alpha * (f(x; w) - f(x; w0))``; see :func:`centered` (``Centered(model, alpha)`` is the
    same call).

    Attributes: ``model`` (the wrapped module, its parameters ``w`` the trainable ones),
    ``alpha`` (float), ``loss_scale`` (``1 / alpha^2``), and the frozen initial parameters
    ``w0`` as buffers under ``origin`` (moved by ``.to()``, saved in ``state_dict``, never
    returned by ``parameters()``).
    """

    def __init__(self, model: nn.Module, alpha: float):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if not any(True for _ in model.parameters()):
            raise ValueError("model has no parameters: there is nothing to centre or train")
        alpha = real_number(alpha, "alpha")
        # alpha^2 must neither overflow nor underflow: loss_scale is 1 / alpha^2.
        if not (alpha > 0 and 0.0 < alpha * alpha < math.inf):
            raise ValueError(f"alpha must be a number > 0 with 0 < alpha^2 < inf; got {alpha}")
        super().__init__()
        self.model = model
        self.alpha = alpha
        self.origin = nn.Module()
        # Parameters are keyed by their dotted names with "." -> "__" (buffer names cannot
        # hold dots); tied parameters appear once, as in named_parameters().
        self._names = [n for n, _ in model.named_parameters()]
        for n, p in model.named_parameters():
            self.origin.register_buffer(n.replace(".", "__"), p.detach().clone())

    @property
    def loss_scale(self) -> float:
        """``1 / alpha^2``: multiply the loss of this module's output by it (the one place the
        lazy-training loss scaling lives)."""
        return 1.0 / (self.alpha * self.alpha)

    def initial(self) -> dict[str, Tensor]:
        """The frozen initial parameters ``w0``, keyed like ``model.named_parameters()``."""
        return {n: getattr(self.origin, n.replace(".", "__")) for n in self._names}

    def forward(self, *args, **kwargs) -> Tensor:
        out = self.model(*args, **kwargs)
        # f(x; w0) needs a graph only for gradients with respect to the inputs; w0 has none.
        inputs_need_grad = any(isinstance(a, Tensor) and a.requires_grad
                               for a in (*args, *kwargs.values()))
        with torch.set_grad_enabled(torch.is_grad_enabled() and inputs_need_grad):
            out0 = functional_call(self.model, self.initial(), args, kwargs)
        return self.alpha * (out - out0)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}"


def centered(model: nn.Module, alpha: float) -> Centered:
    """The model centred at its current parameters and scaled: ``alpha * (f(x; w) - f(x; w0))``.

    Chizat, Oyallon & Bach (2019): train the returned module on ``loss * module.loss_scale``
    (``loss_scale = 1 / alpha^2``) with an ``alpha``-independent learning rate; large
    ``alpha`` then follows the linearised model (lazy training, gap ``O(1/alpha)``), small
    ``alpha`` learns features. ``w0`` is a detached copy of the parameters at the call, held
    as buffers; the trainable parameters are ``model``'s own (not copied), so training the
    returned module trains ``model``. The reference pass ``f(x; w0)`` uses ``model``'s
    current buffers and modes: a model in training mode with dropout or batch statistics is
    not exactly zero at ``w = w0`` (call ``model.eval()`` for that).

    **Arguments:**

    - ``model``: any ``nn.Module`` with at least one parameter; its forward may take any
      arguments, which the returned module passes through.
    - ``alpha``: the output scale, a finite number ``> 0``.

    **Returns:** a :class:`Centered` module with ``model``'s output shape (e.g. ``(N, out)``
    for ``(N, d)`` inputs), exactly zero at the parameters it was built with.

    Example:
        >>> import torch
        >>> from ntkit.parametrize import centered
        >>> g = torch.Generator().manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(),
        ...                           torch.nn.Linear(16, 1)).double()
        >>> h = centered(net, alpha=10.0)
        >>> x = torch.randn(5, 3, dtype=torch.float64, generator=g)
        >>> h(x).abs().max().item()
        0.0
        >>> y = torch.randn(5, 1, dtype=torch.float64, generator=g)
        >>> loss = h.loss_scale * 0.5 * ((h(x) - y) ** 2).sum()
        >>> loss.backward()          # gradients land on net's own parameters
        >>> net[0].weight.grad.shape, sum(1 for _ in h.parameters())
        (torch.Size([16, 3]), 4)
    """
    return Centered(model, alpha)
