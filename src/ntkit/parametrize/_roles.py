"""Each parameter's role and width multipliers, from a smaller base model or explicit widths.

A dimension of a parameter is a *width* ("infinite") dimension when it differs between the
model and its base (the same architecture at a smaller width), or between the base and an
optional ``delta`` model as in ``mup.set_base_shapes``; its multiplier is model size / base
size. Roles follow ``mup``'s shape rules with the module's meaning of its dimensions:

========================  ==========  ============================================
width dimensions          role        ``n`` the exponents apply to
========================  ==========  ============================================
fan-in and fan-out        hidden      fan-in multiplier (``mup``'s ``width_mult``)
fan-out only              input       fan-out multiplier
fan-in only               output      fan-in multiplier
a vector's dimension      bias/norm   its multiplier (``norm``: normalization layers)
none                      fixed       1 (never rescaled, as ``mup``'s finite params)
========================  ==========  ============================================

Fan-in is dimension 1 and fan-out dimension 0 (``nn.Linear``, ``nn.Conv*d``,
``nn.MultiheadAttention``, ``mup``'s convention for any matrix) except for ``nn.Embedding``
(``(num_embeddings, dim)``: fan-in 0) and ``nn.ConvTranspose*d`` (``(in, out, *k)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.modules.instancenorm import _InstanceNorm

__all__ = ["ParamWidth", "infer_widths", "named_parameters"]

_NORMS: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm, _BatchNorm, _InstanceNorm,
                            *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))
# Modules whose default init does not depend on the width (N(0, 1) rows, ones and zeros).
_WIDTH_FREE_INIT: tuple[type, ...] = (nn.Embedding, nn.EmbeddingBag, *_NORMS)


@dataclass(frozen=True)
class ParamWidth:
    """One parameter's place in the width scaling.

    - ``role``: ``"input" | "hidden" | "output" | "bias" | "norm" | "fixed"``.
    - ``fan_in_mult``, ``fan_out_mult``: width multipliers of its fan-in and fan-out (1 for a
      finite dimension; a vector's own multiplier is its ``fan_out_mult``).
    - ``n``: the multiplier its role's exponents apply to (see the module docstring).
    - ``default_ratio``: std of the model's default init at this width over its std at the
      base width: ``m^-1/2`` with ``m`` the multiplier of dimension 1 (the fan-in PyTorch's
      init reads) for matrices and for ``nn.Linear``/``nn.Conv*d``
      biases (PyTorch's ``kaiming_uniform_(a=sqrt(5))`` and bias bound ``fan_in^-1/2``, the
      scaling ``mup`` assumes), 1 for embeddings, normalization layers and other vectors.
    """

    name: str
    role: str
    fan_in_mult: float
    fan_out_mult: float
    n: float
    default_ratio: float


def named_parameters(model: nn.Module) -> dict:
    """``model.named_parameters()`` under the names they have without parametrizations: the
    original of ``a.parametrizations.w.original`` (``torch.nn.utils.parametrize``) is ``a.w``,
    so that a model keeps its plan after :meth:`Plan.apply_`."""
    out = {}
    for name, p in model.named_parameters():
        head, sep, tail = name.partition("parametrizations.")
        if sep and tail.endswith(".original"):
            name = head + tail[: -len(".original")]
        out[name] = p
    return out


def _fan_dims(module: nn.Module, ndim: int) -> tuple[int, int]:
    """(fan-in dimension, fan-out dimension) of a matrix-like parameter of ``module``."""
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag, _ConvTransposeNd)):
        return 0, 1
    return 1, 0


def _shape_mults(model: nn.Module, base: nn.Module, delta: nn.Module | None
                 ) -> dict[str, tuple[tuple[bool, ...], tuple[float, ...]]]:
    """Per parameter: which dimensions are widths, and their multipliers model/base."""
    shapes = {k: tuple(p.shape) for k, p in named_parameters(model).items()}
    base_shapes = {k: tuple(p.shape) for k, p in named_parameters(base).items()}
    delta_shapes = (None if delta is None
                    else {k: tuple(p.shape) for k, p in named_parameters(delta).items()})
    for other, what in ((base_shapes, "base"), (delta_shapes, "delta")):
        if other is None:
            continue
        extra, missing = sorted(set(other) - set(shapes)), sorted(set(shapes) - set(other))
        if extra or missing:
            name = (missing or extra)[0]
            raise ValueError(
                f"{what} must have the same parameters as model (the same architecture at "
                f"another width; a different depth is not a width): parameter {name!r} is "
                f"only in {'model' if missing else what} (model-only {missing[:5]}, "
                f"{what}-only {extra[:5]})")
    out = {}
    for name, shape in shapes.items():
        b = base_shapes[name]
        d = delta_shapes[name] if delta_shapes is not None else None
        for other, what in ((b, "base"), (d, "delta")):
            if other is not None and len(other) != len(shape):
                raise ValueError(f"parameter {name!r} has rank {len(shape)} in model but "
                                 f"{len(other)} in {what} (shape {shape} vs {other}): not a "
                                 "change of width")
        if any(s == 0 for s in (*shape, *b)):
            raise ValueError(f"parameter {name!r} has an empty dimension (model {shape}, "
                             f"base {b})")
        inf = tuple(bi != di for bi, di in zip(b, d, strict=True)) if d is not None else \
            tuple(bi != si for bi, si in zip(b, shape, strict=True))
        for i, (si, bi) in enumerate(zip(shape, b, strict=True)):
            if si != bi and not inf[i]:
                raise ValueError(f"dimension {i} of parameter {name!r} differs between model "
                                 f"({si}) and base ({bi}) but not between base and delta: "
                                 "it is not a width dimension")
        out[name] = inf, tuple(si / bi for si, bi in zip(shape, b, strict=True))
    return out


def _explicit_mults(model: nn.Module, widths) -> dict:
    """Per parameter, from ``widths``: ``name -> m`` (a vector's, or ``(fan_in, fan_out)``)."""
    if not hasattr(widths, "items"):
        raise TypeError(f"widths must map parameter names to multipliers, got "
                        f"{type(widths).__name__}")
    params = named_parameters(model)
    unknown = sorted(set(widths) - set(params))
    if unknown:
        raise ValueError(f"widths names parameters that model does not have: {unknown[:5]}")
    missing = sorted(set(params) - set(widths))
    if missing:
        raise ValueError(f"widths gives no multiplier for parameter {missing[0]!r} (and "
                         f"{len(missing) - 1} more); give 1 (or (1, 1)) for a parameter with "
                         "no width dimension")
    out = {}
    for name, p in params.items():
        m = widths[name]
        pair = tuple(m) if isinstance(m, (tuple, list)) else (m,)
        for v in pair:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                    math.isfinite(v) and v > 0):
                raise ValueError(f"widths[{name!r}] must be positive finite multipliers, "
                                 f"got {m!r}")
        module = model.get_submodule(name.rpartition(".")[0])
        if p.ndim >= 2:
            if len(pair) != 2:
                raise ValueError(f"widths[{name!r}] must be (fan_in_mult, fan_out_mult) for "
                                 f"a parameter of shape {tuple(p.shape)}, got {m!r}")
            i_in, i_out = _fan_dims(module, p.ndim)
            mults = [1.0] * p.ndim
            mults[i_in], mults[i_out] = float(pair[0]), float(pair[1])
        else:
            if len(pair) != 1 or p.ndim == 0 and pair[0] != 1:
                raise ValueError(f"widths[{name!r}] must be one multiplier for a parameter "
                                 f"of shape {tuple(p.shape)}, got {m!r}")
            mults = [float(pair[0])] * p.ndim
        out[name] = tuple(v != 1.0 for v in mults), tuple(mults)
    return out


def infer_widths(model: nn.Module, *, base: nn.Module | None = None,
                 delta: nn.Module | None = None, widths=None,
                 readout: str | None = None) -> dict[str, ParamWidth]:
    """The :class:`ParamWidth` of every parameter of ``model``, in ``named_parameters`` order.

    **Arguments:**

    - ``model``: the model at its target width.
    - ``base``: the same architecture at the base width (parameter names and ranks equal).
    - ``delta``: optional third width, to tell which dimensions are widths when a width
      dimension happens to be equal in ``model`` and ``base`` (as in ``mup``).
    - ``widths``: instead of ``base``, a mapping of every parameter name to its multiplier:
      ``(fan_in_mult, fan_out_mult)`` for a matrix-like parameter, one number for a vector
      (1 for a finite dimension).
    - ``readout``: name of the module whose weight is the output layer (default: inferred
      from the shapes).

    **Returns:** ``{name: ParamWidth}``.

    Example:
        >>> base, model = nn.Linear(3, 4), nn.Linear(3, 8)
        >>> infer_widths(model, base=base)["weight"].role
        'input'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if (base is None) == (widths is None):
        raise ValueError("give exactly one of base= (a smaller-width copy of model) and "
                         "widths= (each parameter's multipliers)")
    if base is None and delta is not None:
        raise ValueError("delta= needs base=")
    for arg, what in ((base, "base"), (delta, "delta")):
        if arg is not None and not isinstance(arg, nn.Module):
            raise TypeError(f"{what} must be an nn.Module, got {type(arg).__name__}")
    dims = _shape_mults(model, base, delta) if base is not None else \
        _explicit_mults(model, widths)
    modules = dict(model.named_modules())
    if readout is not None and readout not in modules:
        raise ValueError(f"readout={readout!r} is not a module of model")
    params = named_parameters(model)
    if not params:
        raise ValueError("model has no parameters to parametrize")
    # PyTorch's init reads a matrix's fan-in from dimension 1 (torch.nn.init's
    # _calculate_fan_in_and_fan_out; also for ConvTranspose), and a Linear or Conv bias is
    # drawn with bound fan_in^-1/2 of its own weight.
    fan_in_of = {name.rpartition(".")[0]: dims[name][1][1]
                 for name, p in params.items() if name.rpartition(".")[2] == "weight"
                 and p.ndim >= 2}
    out: dict[str, ParamWidth] = {}
    for name, p in params.items():
        inf, mult = dims[name]
        path, _, attr = name.rpartition(".")
        module = modules[path]
        if p.ndim >= 2:
            i_in, i_out = _fan_dims(module, p.ndim)
            if any(inf[i] for i in range(p.ndim) if i not in (i_in, i_out)):
                raise ValueError(f"cannot classify parameter {name!r} (shape "
                                 f"{tuple(p.shape)}): a width dimension other than its "
                                 f"fan-in ({i_in}) and fan-out ({i_out})")
            m_in, m_out = mult[i_in], mult[i_out]
            role = {(True, True): "hidden", (False, True): "input",
                    (True, False): "output", (False, False): "fixed"}[inf[i_in], inf[i_out]]
            if path == readout and attr == "weight":
                if not inf[i_in]:
                    raise ValueError(f"readout={readout!r}: its weight {name!r} has no width "
                                     "in its fan-in, so it cannot be the output layer")
                role = "output"
            n = {"hidden": m_in, "input": m_out, "output": m_in, "fixed": 1.0}[role]
            ratio = 1.0 if isinstance(module, _WIDTH_FREE_INIT) else mult[1] ** -0.5
            out[name] = ParamWidth(name, role, m_in, m_out, n, ratio)
        else:
            m = mult[0] if p.ndim == 1 else 1.0
            is_inf = bool(p.ndim == 1 and inf[0])
            role = ("norm" if isinstance(module, _NORMS) else "bias") if is_inf else "fixed"
            ratio = (fan_in_of.get(path, 1.0) ** -0.5
                     if isinstance(module, (nn.Linear, _ConvNd)) and attr == "bias" else 1.0)
            out[name] = ParamWidth(name, role, 1.0, m, m if is_inf else 1.0, ratio)
    return out
