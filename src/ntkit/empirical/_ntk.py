"""The empirical NTK of a finite ``torch.nn.Module``: argument checks and strategy choice."""

from __future__ import annotations

from torch import Tensor, nn

from ._blocks import OUTPUTS
from ._checks import check_model, prepare_inputs
from ._jacobian import jacobian_cost, jacobian_ntk
from ._memory import check_max_memory
from ._model import ParamSpec, compute_dtype, functional_tensors, select_params
from ._ntk_vp import ntk_vp, ntk_vp_cost
from ._probe import probe
from ._structured import plan_structured, structured_ntk

__all__ = ["empirical_ntk"]

_STRATEGIES = ("auto", "jacobian", "ntk_vp", "structured")

VMAP_COST_FACTOR = 2.0
"""``"auto"`` doubles the FLOP estimates of ``"jacobian"`` and ``"ntk_vp"``: their vmapped
backward passes ran at about half the FLOP rate of the structured route's large products in
``bench/empirical_ntk.py`` (CNN, N = 64 and 256, trace; figures in bench/RESULTS.md), so
equal FLOPs are not equal time."""


def empirical_ntk(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    strategy: str = "auto",
    outputs: str = "trace",
    batch_size: int | None = None,
    max_memory: int | str | None = None,
    params: ParamSpec = None,
) -> Tensor:
    """The empirical neural tangent kernel of ``model`` at its current parameters.

    ``Theta_ab(x1_i, x2_j) = sum_p df_a(x1_i)/dp df_b(x2_j)/dp`` over the parameters ``p``
    that count (``params``; by default every parameter with ``requires_grad=True``, the
    others are constants), for output units ``a, b``. For a network with ``K`` outputs in the
    ``Theta ⊗ I_K`` convention of the infinite-width kernel, divide the trace by ``K``.

    The model must treat the examples of a batch independently (no batch statistics: a
    ``BatchNorm`` in training mode raises) and be deterministic: a second forward pass of the
    probe (below) must give the same outputs bit for bit, or the call raises naming the
    module (dropout in training mode, ``F.dropout(..., training=True)``: call
    ``model.eval()``). The computation runs in the inputs' dtype: floating-point parameters
    and buffers are cast to it (so a float32 model gives its float64 NTK for float64 inputs);
    integer inputs (indices, e.g. token ids for an ``nn.Embedding``) are passed to the model
    unchanged and the computation runs in its parameters' dtype. The model must be on the
    inputs' device. Recurrent modules (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``), which
    ``torch.func.vmap`` cannot batch, are supported in every strategy by per-example loops
    (slower: one forward and ``K`` backward passes, or ``K`` jvps, at a time).

    **Arguments:**

    - ``model``: maps ``(N, *features)`` to ``(N, *out)``; ``K = prod(out)`` output units.
    - ``x1``: ``(N1, *features)`` inputs (tensor or NumPy array, floating point and finite,
      or integer indices for a model that takes them).
    - ``x2``: ``(N2, *features)`` inputs, or ``None`` for ``x1`` against itself (only the
      upper triangle of blocks is computed; the result is exactly symmetric).
    - ``strategy``: all give the same kernel up to rounding.

      - ``"jacobian"``: per-example Jacobians ``(K, P)`` by ``torch.func`` (``vmap(jacrev)``)
        contracted block by block. Cost ``~ N K`` backward passes ``+ N1 N2 K P`` (``K^2``
        for ``"full"``) multiply-adds.
      - ``"ntk_vp"``: NTK-vector products, a vjp per example of ``x2`` and output unit then a
        jvp on ``x1`` (no Jacobian of ``x1`` stored). Cost ``~ N1 N2 K`` forward passes.
      - ``"structured"``: per-layer factorisation. ``nn.Linear`` / ``DenseModule`` /
        ``nn.Conv1d`` / ``nn.Conv2d`` / ``ConvModule`` weights and biases (and those of
        any module type added by :func:`register_structured`) by Gram matrices of layer inputs
        and back-propagated output gradients, or by their per-example gradients, whichever is
        cheaper for the layer's shapes; embeddings by index Grams; ``LayerNorm``,
        ``GroupNorm`` and eval ``BatchNorm`` affine parameters directly. Every other
        parameter falls back to per-example Jacobians of that parameter only. Cost: one
        forward and ``K`` backward passes per example (batched by ``vmap``, or one after
        another on the same graph for a model with convolutions, whose backward ``vmap``
        cannot batch) plus the per-layer products, accumulated in place; for ``x2=None``
        only the upper triangle of each diagonal block is multiplied (by BLAS ``syrk`` on
        the CPU while torch runs one thread, else in large tiles) and mirrored, and the
        per-example gradients of one block against itself are formed a chunk of columns at
        a time. Large buffers ask Linux for transparent huge pages (``madvise``), which
        makes filling them for the first time several times cheaper.
      - ``"auto"`` (default): the cheapest by a FLOP model. One forward pass of two
        examples under ``torch.utils.flop_counter`` gives the forward FLOPs ``F`` per
        example; a second, hooked one gives every layer's shapes, from which the structured
        plan picks each layer's route and adds up its FLOPs (passes: ``(N1 + N2)(1 + 2K) F``;
        Gram route ``N1 N2 S^2 (2 in + (2 out + 1) C)``
        per layer for ``C = K`` (trace) or ``K^2`` (full) output pairs; Jacobian route
        ``2 (N1 + N2) S K in out + 2 N1 N2 C in out``). It is compared with
        ``jacobian``'s ``(N1 + N2) 3 K F + 2 N1 N2 C P`` and ``ntk_vp``'s
        ``3 K F (N2 + N1 N2)``, both times :data:`VMAP_COST_FACTOR` (all counting full
        products, without the symmetry of ``x2=None``). The plan is made once per call and
        reused by the computation.
    - ``outputs``: ``"trace"`` (``(N1, N2)``, summed over output units), ``"full"``
      (``(N1, N2, K, K)``) or ``"diagonal"`` (``(N1, N2, K)``, the ``a == b`` entries).
    - ``batch_size``: at most this many examples per block. ``None``: as large as the memory
      budget allows.
    - ``max_memory``: bytes of working memory (Jacobians, layer features, temporaries of
      a block pair; estimated, not counting the model, the inputs and the result): an int,
      or a string such as ``"512MiB"`` or ``"4GB"``. Default 1 GiB. Too small for one
      example raises ``ValueError``.
    - ``params``: which parameters count: a parameter or module name, a list of them, or a
      predicate ``(name, parameter) -> bool`` (e.g. ``"head"`` for the last layer only, or
      ``lambda n, p: not n.startswith("embed")``). ``None``: all with ``requires_grad``.

    **Returns:** the kernel in the ``outputs`` layout, of the inputs' dtype and device, not
    requiring grad.

    Example:
        >>> import torch
        >>> import ntkit as nk
        >>> from ntkit import layers as L
        >>> net = L.serial(L.Dense(64, W_std=1.5, b_std=0.1), L.ReLU(), L.Dense(2))
        >>> model = net.module((3,), generator=torch.Generator().manual_seed(0),
        ...                    dtype=torch.float64)
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> theta = nk.empirical_ntk(model, x)
        >>> theta.shape
        torch.Size([5, 5])
        >>> bool(torch.allclose(theta, nk.empirical_ntk(model, x, strategy="jacobian")))
        True
        >>> nk.empirical_ntk(model, x[:2], x, outputs="full").shape
        torch.Size([2, 5, 2, 2])
        >>> nk.empirical_ntk(model, x, params="2").shape   # the last layer only
        torch.Size([5, 5])
    """
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}; got {strategy!r}")
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS}; got {outputs!r}")
    max_memory = check_max_memory(max_memory)
    x1, x2, batch_size = prepare_inputs(model, x1, x2, batch_size)
    selected = select_params(model, params)
    check_model(model, x1)

    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    dtype = compute_dtype(model, x1)
    trainable, constants = functional_tensors(model, dtype, selected=selected,
                                              requires_grad=False)
    pr = probe(model, trainable, constants, x1)
    options = dict(selected=selected, outputs=outputs, batch_size=batch_size,
                   max_memory=max_memory, pr=pr)
    plan = None
    if strategy in ("auto", "structured"):
        plan = plan_structured(model, x1, selected=selected, outputs=outputs, n1=n1, n2=n2,
                               pr=pr)
    if strategy == "auto":
        costs = _costs(plan, pr, n1, n2, outputs)
        strategy = min(costs, key=costs.__getitem__)
    if strategy == "jacobian":
        theta = jacobian_ntk(model, x1, x2, **options)
    elif strategy == "ntk_vp":
        theta = ntk_vp(model, x1, x2, **options)
    else:
        theta = structured_ntk(model, x1, x2, plan=plan, **options)
    return theta.detach()  # for x2=None symmetric bit for bit (fill_blocks)


def choose_strategy(model: nn.Module, x1: Tensor, x2: Tensor | None = None, *,
                    outputs: str = "trace", params: ParamSpec = None) -> dict[str, float]:
    """The FLOP estimates that ``strategy="auto"`` compares (for tests and benchmarks)."""
    x1, x2, _ = prepare_inputs(model, x1, x2, None)
    selected = select_params(model, params)
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    dtype = compute_dtype(model, x1)
    trainable, constants = functional_tensors(model, dtype, selected=selected,
                                              requires_grad=False)
    pr = probe(model, trainable, constants, x1)
    plan = plan_structured(model, x1, selected=selected, outputs=outputs, n1=n1, n2=n2, pr=pr)
    return _costs(plan, pr, n1, n2, outputs)


def _costs(plan, pr, n1: int, n2: int, outputs: str) -> dict[str, float]:
    return {"structured": plan.cost,
            "jacobian": VMAP_COST_FACTOR * jacobian_cost(pr, n1, n2, outputs),
            "ntk_vp": VMAP_COST_FACTOR * ntk_vp_cost(pr, n1, n2)}
