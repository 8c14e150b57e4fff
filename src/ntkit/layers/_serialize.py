"""Network specs as plain data: dictionaries and JSON, versioned, loaded without running code.

A spec document is ``{"ntkit_spec": 1, "net": LAYER}`` where ``LAYER`` is
``{"type": NAME, FIELD: VALUE, ...}`` (``"layers": [LAYER, ...]`` for ``Serial``/``Parallel``).
Loading only ever calls the layer classes listed in ``_FIELDS`` with checked JSON scalars: no
``eval``, no pickle, no imports by name. Elementwise nonlinearities are stored by name from a
fixed list of torch functions (``ELEMENTWISE_FUNCTIONS``) or as a composition of layers.

Sizes are bounded (``SPEC_LIMITS``) so that a hostile file cannot ask for a billion-unit layer, a
million nested branches or a 10^6-point quadrature; the infinite-width kernel does not depend
on the widths, which only size the finite twin.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ._activation import Identity
from ._base import Layer
from ._closed_form import GELU, ABReLU, Abs, Cos, Erf, Gaussian, LeakyReLU, ReLU, Sin
from ._combinators import FanInConcat, FanInSum, FanOut, Parallel, Serial
from ._conv import Conv
from ._dense import Dense
from ._elementwise import Elementwise, _Chain
from ._norm import Dropout, LayerNorm
from ._pool import AvgPool, GlobalAvgPool, GlobalSumPool, SumPool
from ._shape import Flatten

__all__ = ["SPEC_VERSION", "SPEC_LIMITS", "ELEMENTWISE_FUNCTIONS", "to_dict", "from_dict",
           "to_json", "from_json", "load_spec", "save_spec", "spec_hash"]

SPEC_VERSION = 1

SPEC_LIMITS = {
    "width": 1_000_000,     # out_features / out_channels of the finite twin
    "layers": 1_000,        # layers in the whole spec, combinators included
    "nesting": 32,          # serial/parallel inside each other
    "branches": 64,         # FanOut(n)
    "filter": 64,           # each axis of filter_shape / window_shape / strides
    "spatial_dims": 3,      # axes of filter_shape / window_shape
    "deg": 256,             # Gauss-Hermite nodes per axis (deg^2 evaluations per entry)
    "string": 64,           # characters of a string field
    "bytes": 1_000_000,     # size of a JSON spec
}

ELEMENTWISE_FUNCTIONS = {
    "tanh": torch.tanh, "erf": torch.erf, "sigmoid": torch.sigmoid, "sin": torch.sin,
    "cos": torch.cos, "exp": torch.exp, "relu": torch.relu, "abs": torch.abs,
    "atan": torch.atan, "silu": F.silu, "softplus": F.softplus, "gelu": F.gelu, "elu": F.elu,
    "selu": F.selu, "mish": F.mish, "softsign": F.softsign,
}
_MAXB = SPEC_LIMITS["bytes"]
_MAXS = SPEC_LIMITS["string"]  # longest string field (and echo of bad input)
_FUNCTION_NAMES = {id(fn): name for name, fn in ELEMENTWISE_FUNCTIONS.items()}

# Field kinds, checked before the layer's own validation runs.
_W, _R, _RN, _S, _B, _SHAPE, _STRIDES, _N, _DEG, _FN, _FNN, _LAYERS = (
    "width", "real", "real or null", "string", "bool", "shape", "strides", "branches", "deg",
    "function", "function or null", "layers")
_FIELDS: dict[str, tuple[type, dict[str, str]]] = {
    "Dense": (Dense, {"out_features": _W, "W_std": _R, "b_std": _RN, "parametrization": _S}),
    "Conv": (Conv, {"out_channels": _W, "filter_shape": _SHAPE, "strides": _STRIDES,
                    "padding": _S, "W_std": _R, "b_std": _RN, "parametrization": _S}),
    "AvgPool": (AvgPool, {"window_shape": _SHAPE, "strides": _STRIDES, "padding": _S}),
    "SumPool": (SumPool, {"window_shape": _SHAPE, "strides": _STRIDES, "padding": _S}),
    "GlobalAvgPool": (GlobalAvgPool, {}),
    "GlobalSumPool": (GlobalSumPool, {}),
    "Flatten": (Flatten, {}),
    "LayerNorm": (LayerNorm, {"spatial": _B, "eps": _R}),
    "Dropout": (Dropout, {"rate": _R}),
    "ReLU": (ReLU, {"a": _R, "b": _R}),
    "LeakyReLU": (LeakyReLU, {"negative_slope": _R}),
    "ABReLU": (ABReLU, {"a": _R, "b": _R}),
    "Abs": (Abs, {}),
    "Erf": (Erf, {"a": _R, "b": _R, "c": _R}),
    "GELU": (GELU, {}),
    "Sin": (Sin, {"a": _R, "b": _R, "c": _R}),
    "Cos": (Cos, {"a": _R, "b": _R, "c": _R}),
    "Gaussian": (Gaussian, {"a": _R, "b": _R}),
    "Identity": (Identity, {}),
    "Elementwise": (Elementwise, {"fn": _FN, "d_fn": _FNN, "deg": _DEG}),
    "Serial": (Serial, {"layers": _LAYERS}),
    "Parallel": (Parallel, {"layers": _LAYERS}),
    "FanOut": (FanOut, {"n": _N}),
    "FanInSum": (FanInSum, {}),
    "FanInConcat": (FanInConcat, {}),
}
_REQUIRED = {"Dense": ("out_features",), "Conv": ("out_channels", "filter_shape"),
             "AvgPool": ("window_shape",), "SumPool": ("window_shape",), "Dropout": ("rate",),
             "ABReLU": ("a", "b"), "Elementwise": ("fn",), "Serial": ("layers",),
             "Parallel": ("layers",), "FanOut": ("n",)}


# -- writing ------------------------------------------------------------------------------------
def to_dict(net: Layer) -> dict:
    """The spec document ``{"ntkit_spec": SPEC_VERSION, "net": {...}}`` of ``net`` (JSON types
    only). Raises ``TypeError`` for a layer that has no plain-data form (an ``Elementwise``
    of a function not in ``ELEMENTWISE_FUNCTIONS``).

    Example:
        >>> from ntkit import layers as L
        >>> L.serial(L.Dense(8, W_std=1.5), L.ReLU()).to_dict()["net"]["layers"][1]
        {'type': 'ReLU', 'a': 0.0, 'b': 1.0}
    """
    return {"ntkit_spec": SPEC_VERSION, "net": _layer_to_dict(net, "net")}


def _layer_to_dict(layer, where: str) -> dict:
    name = type(layer).__name__
    if name not in _FIELDS or not isinstance(layer, _FIELDS[name][0]):
        raise TypeError(f"{where}: {layer!r} ({name}) has no serialisable spec")
    out: dict = {"type": name}
    for field in _FIELDS[name][1]:
        value = layer.negative_slope if field == "negative_slope" else getattr(layer, field)
        if field == "layers":
            out[field] = [_layer_to_dict(v, f"{where}.layers[{i}]") for i, v in enumerate(value)]
        elif field in ("fn", "d_fn"):
            out[field] = _fn_to_data(value, f"{where}.{field}")
        elif isinstance(value, tuple):
            out[field] = list(value)
        else:
            out[field] = value
    return out


def _fn_to_data(fn, where: str):
    if fn is None:
        return None
    if isinstance(fn, _Chain):
        return {"compose": [_layer_to_dict(p, f"{where}.compose[{i}]")
                            for i, p in enumerate(fn.parts)]}
    if id(fn) in _FUNCTION_NAMES:
        return _FUNCTION_NAMES[id(fn)]
    raise TypeError(
        f"{where}: {fn!r} cannot be stored by name; use one of "
        f"{sorted(ELEMENTWISE_FUNCTIONS)} or a closed-form layer"
    )


def to_json(net: Layer, *, indent: int | None = 2) -> str:
    """The spec document of ``net`` as JSON text (see :func:`to_dict`)."""
    return json.dumps(to_dict(net), indent=indent, sort_keys=True)


def save_spec(net: Layer, path) -> None:
    """Write the spec of ``net`` to the JSON file ``path``."""
    Path(path).write_text(to_json(net) + "\n")


def spec_hash(net_or_doc) -> str:
    """SHA-256 of the canonical JSON of a spec (a layer or a spec document), hex."""
    doc = to_dict(net_or_doc) if isinstance(net_or_doc, Layer) else net_or_doc
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# -- reading ------------------------------------------------------------------------------------
def from_dict(doc) -> Layer:
    """The network of a spec document (see :func:`to_dict`).

    Raises ``ValueError`` naming the place in the document for an unknown layer type or
    field, a missing field, a size over ``SPEC_LIMITS`` or an unsupported ``ntkit_spec`` version,
    and ``TypeError`` for a value of the wrong JSON type.

    Example:
        >>> from ntkit import layers as L
        >>> net = L.serial(L.Dense(8), L.Erf(), L.Dense(1))
        >>> L.from_dict(net.to_dict()) == net
        True
    """
    if not isinstance(doc, dict):
        raise TypeError(f"spec must be a JSON object; got {type(doc).__name__}")
    unknown = set(doc) - {"ntkit_spec", "net"}
    if unknown:
        raise ValueError(f"spec: unknown top-level field(s) {sorted(unknown)}; expected "
                         f"'ntkit_spec' and 'net'")
    version = doc.get("ntkit_spec")
    if version != SPEC_VERSION or isinstance(version, bool):
        raise ValueError(f"spec: 'ntkit_spec' must be {SPEC_VERSION} (the schema version this "
                         f"ntkit reads); got {version!r}")
    if "net" not in doc:
        raise ValueError("spec: missing field 'net'")
    counter = [0]
    return _layer_from_dict(doc["net"], "net", 0, counter)


def from_json(text: str) -> Layer:
    """The network of a JSON spec document (see :func:`from_dict`)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str of JSON; got {type(text).__name__}")
    if len(text) > _MAXB:
        raise ValueError(f"spec is {len(text)} characters, over the limit of {_MAXB}")

    def no_constants(name):
        raise ValueError(f"spec: {name} is not a number (JSON allows finite numbers only)")

    try:
        doc = json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as err:
        raise ValueError(f"spec is not valid JSON: {err}") from None
    except RecursionError:
        raise ValueError("spec is nested too deeply") from None
    return from_dict(doc)


def load_spec(path) -> Layer:
    """The network of the JSON spec file ``path`` (see :func:`from_dict`)."""
    path = Path(path)
    size = path.stat().st_size
    if size > _MAXB:
        raise ValueError(f"spec file {path} is {size} bytes, over the limit of {_MAXB}")
    return from_json(path.read_text())


def _layer_from_dict(d, where: str, depth: int, counter: list[int]) -> Layer:
    if not isinstance(d, dict):
        raise TypeError(f"{where}: a layer must be a JSON object; got {type(d).__name__}")
    counter[0] += 1
    if counter[0] > SPEC_LIMITS["layers"]:
        raise ValueError(f"{where}: the spec has more than {SPEC_LIMITS['layers']} layers")
    if depth > SPEC_LIMITS["nesting"]:
        raise ValueError(f"{where}: layers nested more than {SPEC_LIMITS['nesting']} deep")
    name = d.get("type")
    if not isinstance(name, str) or name not in _FIELDS:
        shown = repr(name)[: _MAXS]
        raise ValueError(f"{where}: unknown layer type {shown}; known: {sorted(_FIELDS)}")
    cls, kinds = _FIELDS[name]
    where = f"{where} ({name})"
    unknown = [k for k in d if k != "type" and k not in kinds]
    if unknown:
        raise ValueError(f"{where}: unknown field {str(unknown[0])[: _MAXS]!r}; "
                         f"{name} takes {sorted(kinds) or 'no fields'}")
    for field in _REQUIRED.get(name, ()):
        if field not in d:
            raise ValueError(f"{where}: missing field {field!r}")
    kwargs = {k: _value(d[k], kinds[k], f"{where}.{k}", depth, counter)
              for k in kinds if k in d}
    if name in ("Serial", "Parallel"):
        return cls(tuple(kwargs["layers"]))
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{where}: {err}") from None


def _value(v, kind: str, where: str, depth: int, counter: list[int]):
    if kind == _LAYERS:
        if not isinstance(v, list) or not v:
            raise TypeError(f"{where} must be a non-empty list of layers")
        return [_layer_from_dict(x, f"{where}[{i}]", depth + 1, counter) for i, x in enumerate(v)]
    if kind in (_FN, _FNN):
        if v is None and kind == _FNN:
            return None
        if isinstance(v, str):
            if v not in ELEMENTWISE_FUNCTIONS:
                raise ValueError(f"{where}: unknown function {v[: _MAXS]!r}; known: "
                                 f"{sorted(ELEMENTWISE_FUNCTIONS)}")
            return ELEMENTWISE_FUNCTIONS[v]
        if isinstance(v, dict) and set(v) == {"compose"} and isinstance(v["compose"], list):
            parts = _value(v["compose"], _LAYERS, f"{where}.compose", depth, counter)
            if not all(hasattr(p, "phi") for p in parts):
                raise ValueError(f"{where}.compose: every part must be a nonlinearity")
            return _Chain(tuple(parts))
        raise TypeError(f"{where} must be a function name or {{'compose': [...]}}; got {v!r}")
    if kind == _RN and v is None:
        return None
    if kind in (_R, _RN):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TypeError(f"{where} must be a finite number; got {v!r}")
        return float(v)
    if kind == _B:
        if not isinstance(v, bool):
            raise TypeError(f"{where} must be true or false; got {v!r}")
        return v
    if kind == _S:
        if not isinstance(v, str) or len(v) > _MAXS:
            raise TypeError(f"{where} must be a short string; got {str(v)[:_MAXS]!r}")
        return v
    if kind in (_W, _N, _DEG):
        limit = SPEC_LIMITS[kind]
        return _int(v, where, limit)
    if kind in (_SHAPE, _STRIDES):
        if kind == _STRIDES and isinstance(v, int) and not isinstance(v, bool):
            return _int(v, where, SPEC_LIMITS["filter"])
        if not isinstance(v, list) or not 1 <= len(v) <= SPEC_LIMITS["spatial_dims"]:
            raise TypeError(f"{where} must be a list of 1 to {SPEC_LIMITS['spatial_dims']} "
                            f"positive integers; got {str(v)[:_MAXS]}")
        return tuple(_int(x, f"{where}[{i}]", SPEC_LIMITS["filter"]) for i, x in enumerate(v))
    raise AssertionError(kind)


def _int(v, where: str, limit: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{where} must be an integer; got {str(v)[:_MAXS]!r}")
    if not 1 <= v <= limit:
        raise ValueError(f"{where} must be between 1 and {limit} (SPEC_LIMITS); got {v}")
    return v

