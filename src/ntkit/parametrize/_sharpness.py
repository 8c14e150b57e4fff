"""Sharpness: the top Hessian eigenvalues of a training loss, and the top eigenvalue of the
empirical NTK on the same batch (Noci et al. 2024 explain learning-rate transfer under muP by
the first staying width-independent during training)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vjp

from ..empirical import empirical_ntk
from ..solve import lanczos_eigsh

__all__ = ["Sharpness", "sharpness"]


@dataclass(frozen=True)
class Sharpness:
    """What :func:`sharpness` measured at one set of parameters.

    - ``hessian``: ``(k,)`` the largest Hessian eigenvalues of the loss, descending, in the
      parameters' dtype.
    - ``ntk``: the largest eigenvalue of the empirical NTK of the batch as an ``(N K, N K)``
      matrix (``outputs="full"``, ``K`` output units; with ``param_groups``, each
      parameter's term weighted by its learning rate), or ``None`` when not asked for.
    - ``loss``: the loss at these parameters.
    """

    hessian: Tensor
    ntk: float | None
    loss: float

    @property
    def top(self) -> float:
        """The largest Hessian eigenvalue (the sharpness proper)."""
        return float(self.hessian[0])


def sharpness(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batch: tuple[Tensor, Tensor],
    *,
    k: int = 1,
    ntk: bool = True,
    tol: float | None = None,
    max_iter: int = 100,
    param_groups: list[dict] | None = None,
    generator: torch.Generator | None = None,
) -> Sharpness:
    """Top-``k`` Hessian eigenvalues of ``loss_fn(model(x), y)`` at the current parameters.

    The Hessian is never formed: :func:`ntkit.solve.lanczos_eigsh` runs on Hessian-vector
    products ``H v``, each a reverse-mode derivative of the reverse-mode gradient
    (``torch.func.vjp`` of ``torch.func.grad`` on the flattened parameters, ``H`` being
    symmetric): the gradient's graph is built once, and each product is one backward pass
    through it, about the cost of two forward passes. The parameters are every one with
    ``requires_grad=True``; the others and the buffers are constants (a ``BatchNorm`` in
    training mode normalises by the batch's statistics, a function of the parameters, and
    does not update its running statistics). The model's parameters, buffers and ``.grad``
    are left as they were. The model must be deterministic (``model.eval()`` for dropout),
    or the products are not those of one symmetric matrix.

    Scaling: the eigenvalues are those of the loss exactly as ``loss_fn`` reduces it, so a
    ``mean`` over the ``N`` examples gives ``1/N`` times the eigenvalues of a ``sum``. The
    NTK eigenvalue is of the unscaled kernel ``Theta = J J^T``, ``J`` the ``(N K, P)``
    Jacobian of the outputs; its nonzero eigenvalues are those of ``J^T J``. For
    ``L = 1/(2N) sum_i ||f(x_i) - y_i||^2`` the Gauss-Newton part of the Hessian,
    ``J^T J / N``, therefore has top eigenvalue ``ntk / N``; it equals the Hessian for a
    model linear in its parameters. (``torch.nn.functional.mse_loss`` also averages over the
    ``K`` outputs and drops the 1/2: ``2 ntk / (N K)``.)

    **Arguments:**

    - ``model``: maps ``(N, *features)`` to outputs that ``loss_fn`` takes.
    - ``loss_fn``: ``loss_fn(outputs, y)`` -> a scalar tensor, differentiable twice
      (``torch.nn.functional.cross_entropy``, ``mse_loss``, ...).
    - ``batch``: ``(x, y)``, ``x`` of shape ``(N, *features)``.
    - ``k``: how many eigenvalues, ``1 <= k <= P`` (the number of parameters).
    - ``ntk``: also compute the top eigenvalue of the empirical NTK on ``x``
      (:func:`ntkit.empirical_ntk` with ``outputs="full"``, then ``eigvalsh`` of the
      ``(N K, N K)`` matrix: memory ``(N K)^2``).
    - ``tol``: Lanczos' relative residual; default ``sqrt(eps)`` of the parameters' dtype,
      so the eigenvalues are accurate to about ``eps`` relative when the top ones are
      separated (an eigenvalue's error is about the residual squared over the gap).
    - ``max_iter``: at most this many Hessian-vector products (the Lanczos basis holds
      ``min(max_iter, P)`` vectors of ``P`` entries); Ritz values after the last are
      returned even if not converged to ``tol``. The top eigenvalue of a network's Hessian
      is usually an outlier that converges in tens of steps.
    - ``param_groups``: an optimizer's parameter groups (``[{"params": [...], "lr": ...}]``,
      e.g. :meth:`Plan.param_groups`): the parameters are then those in the groups (the
      others constants), and the eigenvalues are those of the preconditioned Hessian
      ``D^1/2 H D^1/2``, ``D`` the diagonal of each parameter's learning rate. Gradient
      descent with these rates is stable near a minimum while the top one is ``< 2``, and
      it is the same for every abc-parametrization related by the symmetry
      ``(a, b, c) -> (a + t, b - t, c - 2t)`` (TP4 §3), where the raw Hessian is not: under
      muP the readout's raw Hessian shrinks with width while its learning rate grows. With
      ``plan.param_groups(1.0, optimizer="sgd")`` compare the top eigenvalue with
      ``2 / lr``.
    - ``generator``: for Lanczos' start vector, so a measurement can be repeated exactly.

    **Returns:** a :class:`Sharpness` ``(hessian (k,), ntk, loss)``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch.nn.functional import mse_loss
        >>> g = torch.Generator().manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()
        >>> x = torch.randn(16, 3, generator=g, dtype=torch.float64)
        >>> s = sharpness(model, mse_loss, (x, x[:, :1] ** 2), k=2, generator=g)
        >>> s.hessian.shape, s.top == float(s.hessian[0]), s.ntk > 0
        (torch.Size([2]), True, True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(outputs, y), got {loss_fn!r}")
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError("batch must be a pair (x, y)")
    x, y = batch
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] == 0:
        raise ValueError("batch x must be a tensor of shape (N, *features) with N >= 1")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("batch x must be finite (it has NaN or inf)")
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if tol is not None and not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")

    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    rates = None
    if param_groups is not None:
        rates = _group_rates(param_groups)
        named = [(name, p) for name, p in named if id(p) in rates]
        unknown = set(rates) - {id(p) for _, p in named}
        if unknown:
            raise ValueError(f"param_groups holds {len(unknown)} tensors that are not "
                             "trainable parameters of model")
    if not named:
        raise ValueError("model has no parameter with requires_grad=True"
                         + (" in param_groups" if param_groups is not None else ""))
    dtype = named[0][1].dtype
    if any(p.dtype != dtype for _, p in named):
        raise ValueError("the trainable parameters of model must share one dtype, got "
                         f"{sorted({str(p.dtype) for _, p in named})}")
    trained = {id(p) for _, p in named}
    constants = {name: t.detach() for name, t in model.named_parameters()
                 if id(t) not in trained}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    names = [name for name, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    theta0 = torch.cat([p.detach().reshape(-1) for _, p in named])
    n = theta0.numel()

    def loss_at(theta: Tensor) -> Tensor:
        params = {name: t.view(shape) for name, t, shape
                  in zip(names, theta.split(sizes), shapes, strict=True)}
        # Fresh copies of the buffers inside the transform: a BatchNorm in training mode
        # updates its running statistics in place, which torch.func forbids on captured
        # tensors (and which must not reach the model).
        fresh = {name: b.clone() for name, b in buffers.items()}
        out = loss_fn(functional_call(model, {**params, **constants, **fresh}, (x,)), y)
        if not isinstance(out, Tensor) or out.ndim != 0:
            raise ValueError("loss_fn must return a scalar tensor, got "
                             f"{getattr(out, 'shape', type(out).__name__)}")
        return out

    with torch.no_grad():
        loss = float(loss_at(theta0))
    if loss != loss or abs(loss) == float("inf"):
        raise ValueError(f"the loss at the current parameters is not finite ({loss})")
    # Reverse over reverse: the gradient's graph is built once and every product is one
    # backward pass through it (forward over reverse, jvp of grad, would rebuild it each time,
    # and torch's forward-mode derivative of mse_loss's backward fails on the target's zero
    # tangent).
    _, pullback = vjp(grad(loss_at), theta0)

    if rates is None:
        def hvp(v: Tensor) -> Tensor:
            return pullback(v.to(dtype))[0]
    else:
        root = torch.cat([torch.full((p.numel(),), rates[id(p)] ** 0.5, dtype=dtype,
                                     device=theta0.device) for _, p in named])

        def hvp(v: Tensor) -> Tensor:
            return root * pullback(root * v.to(dtype))[0]

    if tol is None:
        tol = torch.finfo(dtype).eps ** 0.5
    evals, _ = lanczos_eigsh(hvp, n, k, dtype=dtype, device=theta0.device, tol=tol,
                             max_iter=max(k, min(max_iter, n)), generator=generator)
    top_ntk = None
    if ntk:
        # Theta = sum_p D_p J_p J_p^T over the trained parameters (D = I without groups): the
        # kernel of gradient descent at these rates, one empirical NTK per learning rate.
        by_rate: dict[float, set[int]] = {}
        for _, p in named:
            by_rate.setdefault(1.0 if rates is None else rates[id(p)], set()).add(id(p))
        theta = sum(rate * empirical_ntk(model, x, outputs="full",
                                         params=lambda _, p, ids=ids: id(p) in ids)
                    for rate, ids in by_rate.items())   # (N, N, K, K)
        big = theta.permute(0, 2, 1, 3).reshape(theta.shape[0] * theta.shape[2], -1)
        top_ntk = float(torch.linalg.eigvalsh(big)[-1])
    return Sharpness(hessian=evals.detach(), ntk=top_ntk, loss=loss)


def _group_rates(param_groups) -> dict[int, float]:
    """``id(parameter) -> lr`` from torch.optim-style parameter groups."""
    if isinstance(param_groups, dict) or not isinstance(param_groups, (list, tuple)):
        raise TypeError("param_groups must be a list of {'params': [...], 'lr': float} dicts")
    rates: dict[int, float] = {}
    for group in param_groups:
        if not isinstance(group, dict) or "params" not in group or "lr" not in group:
            raise ValueError("each of param_groups must be a dict with 'params' and 'lr'")
        lr = group["lr"]
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 \
                or lr == float("inf"):
            raise ValueError(f"param_groups learning rates must be finite and > 0, got {lr!r}")
        for p in group["params"]:
            if id(p) in rates:
                raise ValueError("a parameter appears in more than one of param_groups")
            rates[id(p)] = float(lr)
    return rates
