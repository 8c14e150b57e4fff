"""The empirical NTK of a finite ``torch.nn.Module``: argument checks and strategy choice."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import as_inputs, check_pair, positive_int
from ._jacobian import jacobian_ntk
from ._structured import NotStructured, structured_layers, structured_ntk

__all__ = ["empirical_ntk"]

_STRATEGIES = ("auto", "jacobian", "structured")


def empirical_ntk(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    strategy: str = "auto",
    batch_size: int | None = None,
) -> Tensor:
    """The empirical neural tangent kernel of ``model`` at its current parameters.

    ``Theta(x1_i, x2_j) = sum_o sum_p df_o(x1_i)/dp df_o(x2_j)/dp``: the trace over the
    output units ``o`` of the Jacobian product over every parameter ``p`` with
    ``requires_grad=True`` (frozen parameters are constants). For a network with ``K``
    outputs in the ``Theta ⊗ I_K`` convention of the infinite-width kernel, divide by ``K``.

    The model must treat the examples of a batch independently (no batch statistics: a
    ``BatchNorm`` in training mode raises, and so does active dropout: call ``model.eval()``).
    The computation runs in the inputs' dtype: floating-point parameters and buffers are cast
    to it (so a float32 model gives its float64 NTK for float64 inputs); the model must be on
    the inputs' device.

    **Arguments:**

    - ``model``: maps ``(N, *features)`` to ``(N, *out)``; ``K = prod(out)`` output units
      (``(N,)`` outputs count as ``K = 1``).
    - ``x1``: ``(N1, *features)`` inputs (tensor or NumPy array, floating point, finite).
    - ``x2``: ``(N2, *features)`` inputs, or ``None`` for ``x1`` against itself (one pass
      over ``x1``; the result is exactly symmetric).
    - ``strategy``:

      - ``"jacobian"``: per-example Jacobians by ``torch.func`` (``vmap(jacrev)``),
        contracted block by block; any model. Memory ``2 * batch_size * K * P`` numbers for
        ``P`` trainable parameters.
      - ``"structured"``: for models whose trainable modules are all ``nn.Linear`` or
        :class:`ntkit.layers.DenseModule` (each called once, on ``(N, in)`` inputs), with
        any parameter-free modules between them. One forward pass records each layer's
        inputs ``A`` and ``K`` backward passes the gradients ``G`` at its outputs; then
        ``Theta = sum_layers (w^2 A1 A2^T + b^2) * (G1 G2^T)`` (elementwise; ``w``, ``b`` the
        layers' weight and bias scales). Cost: about ``K + 1`` forward passes plus the
        Gram matrices; memory ``(N1 + N2) * sum(in + K * out)`` numbers. Anything else
        raises ``NotImplementedError``.
      - ``"auto"`` (default): ``"structured"`` where it applies, else ``"jacobian"``.
    - ``batch_size``: examples per forward pass (``"structured"``) or per Jacobian block
      (``"jacobian"``); bounds the memory of one pass. ``None`` picks a size.

    **Returns:** a ``(N1, N2)`` tensor (``(N1, N1)`` when ``x2`` is ``None``) of the inputs'
    dtype and device, not requiring grad.

    Example:
        >>> import torch
        >>> import ntkit as nk
        >>> from ntkit import layers as L
        >>> net = L.serial(L.Dense(64, W_std=1.5, b_std=0.1), L.ReLU(), L.Dense(1))
        >>> model = net.module((3,), generator=torch.Generator().manual_seed(0),
        ...                    dtype=torch.float64)
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> theta = nk.empirical_ntk(model, x)
        >>> theta.shape
        torch.Size([5, 5])
        >>> bool(torch.allclose(theta, nk.empirical_ntk(model, x, strategy="jacobian")))
        True
        >>> nk.empirical_ntk(model, x[:2], x).shape
        torch.Size([2, 5])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}; got {strategy!r}")
    if batch_size is not None:
        batch_size = positive_int(batch_size, "batch_size")
    x1 = as_inputs(x1, "x1")
    if x2 is not None:
        x2 = as_inputs(x2, "x2")
        check_pair(x1, x2)
        if x2 is x1 or (x2.shape == x1.shape and torch.equal(x1, x2)):
            x2 = None  # one pass over x1, and an exactly symmetric result
        else:
            x2 = x2.detach()
    x1 = x1.detach()
    _check_model(model, x1)

    if strategy == "jacobian":
        theta = jacobian_ntk(model, x1, x2, batch_size=batch_size)
    elif strategy == "structured":
        theta = structured_ntk(model, x1, x2, batch_size=batch_size)
    else:
        theta = None
        try:
            layers = structured_layers(model)
        except NotStructured:
            layers = None
        if layers is not None:
            try:
                theta = structured_ntk(model, x1, x2, batch_size=batch_size,
                                       layers=layers)
            except NotStructured:
                theta = None
        if theta is None:
            theta = jacobian_ntk(model, x1, x2, batch_size=batch_size)
    if x2 is None:
        # Addition commutes exactly in floating point, so this is bit-for-bit symmetric.
        theta = (theta + theta.T) * 0.5
    return theta.detach()


def _check_model(model: nn.Module, x: Tensor) -> None:
    """Trainable parameters exist, sit on ``x``'s device, and no module couples the batch."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(
            f"model has no parameters with requires_grad=True, so its NTK is zero; got "
            f"{type(model).__name__} with {sum(1 for _ in model.parameters())} parameter "
            f"tensor(s), all frozen"
        )
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.device != x.device:
            raise ValueError(
                f"model and inputs must be on the same device: model tensor {name!r} is on "
                f"{t.device} but x1 is on {x.device}; move one of them (model.to(x1.device))"
            )
    for name, m in model.named_modules():
        where = f"module {name!r} ({type(m).__name__})" if name else type(m).__name__
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
            m.training or m.running_mean is None
        ):
            raise ValueError(
                f"model: {where} normalises with batch statistics, so each output depends "
                f"on the whole batch and the NTK is not per-example; call model.eval() "
                f"(with track_running_stats=True) first"
            )
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            raise ValueError(
                f"model: {where} is in training mode, so the network is random and has no "
                f"single NTK; call model.eval() first"
            )
