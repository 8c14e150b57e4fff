"""Network specs as plain data: dictionaries and JSON, versioned, loaded without running code.

A spec document is ``{"ntkit_spec": 1, "net": LAYER}`` where ``LAYER`` is
``{"type": NAME, FIELD: VALUE, ...}`` (``"layers": [LAYER, ...]`` for ``Serial``/``Parallel``).
Loading only ever calls layer classes registered with :func:`register_layer`, with checked JSON
values: no ``eval``, no pickle, no imports by name. Each layer class registers itself next to
its definition, naming its fields and their kinds (``FIELD_KINDS``). Elementwise
nonlinearities are stored by name from a fixed list of torch functions
(``ELEMENTWISE_FUNCTIONS``) or as a composition of layers.

Sizes are bounded (``SPEC_LIMITS``) so that a hostile file cannot ask for a billion-unit layer, a
million nested branches, a 10^6-point quadrature or a network that costs more in total than
any real one; the infinite-width kernel does not depend on the widths, which only size the
finite twin.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .._paths import read_regular
from ._functions import ELEMENTWISE_FUNCTIONS, Chain, function_name
from ._protocol import LayerProtocol

__all__ = ["SPEC_VERSION", "SPEC_LIMITS", "FIELD_KINDS", "register_layer", "to_dict",
           "from_dict", "to_json", "from_json", "load_spec", "save_spec", "spec_hash"]

SPEC_VERSION = 1

SPEC_LIMITS = {
    "width": 1_000_000,     # out_features / out_channels of the finite twin
    "layers": 1_000,        # layers in the whole spec, combinators included
    "nesting": 32,          # serial/parallel inside each other
    "branches": 64,         # FanOut(n)
    "filter": 64,           # each axis of filter_shape / window_shape / strides
    "spatial_dims": 3,      # axes of filter_shape / window_shape
    "deg": 256,             # Gauss-Hermite nodes per axis (deg^2 evaluations per entry)
    # Total cost, in evaluations per kernel entry summed over the layers: deg^2 for a layer
    # with a quadrature (each "deg" field), 1 for any other. 1000 layers at the default
    # deg=26 cost 676,000; 500 at deg=256 would cost 3.3e7.
    "cost": 1_000_000,
    "string": 64,           # characters of a string field
    "bytes": 1_000_000,     # size of a JSON spec
}

# What each field kind accepts in a document (and stores back as JSON).
FIELD_KINDS = {
    "width": "an integer from 1 to SPEC_LIMITS['width'] (a layer's width)",
    "real": "a finite number",
    "real or null": "a finite number or null",
    "string": "a string of at most SPEC_LIMITS['string'] characters",
    "bool": "true or false",
    "shape": "a list of 1 to SPEC_LIMITS['spatial_dims'] integers up to SPEC_LIMITS['filter']",
    "strides": "an integer or a list as for 'shape'",
    "branches": "an integer from 1 to SPEC_LIMITS['branches']",
    "deg": "an integer from 1 to SPEC_LIMITS['deg'] (quadrature nodes per axis)",
    "function": "a name in ELEMENTWISE_FUNCTIONS or {'compose': [nonlinearity layers]}",
    "function or null": "as 'function', or null",
    "layers": "a non-empty list of layers",
}
_MAXB = SPEC_LIMITS["bytes"]
_MAXS = SPEC_LIMITS["string"]  # longest string field (and echo of bad input)


@dataclass(frozen=True)
class _Entry:
    cls: type
    fields: dict[str, str]
    required: tuple[str, ...]


_BY_NAME: dict[str, _Entry] = {}
_NAME_OF: dict[type, str] = {}

_T = TypeVar("_T", bound=type)


def register_layer(cls: _T | None = None, /, *, fields: Mapping[str, str] | None = None,
                   required: tuple[str, ...] = (), name: str | None = None):
    """Give a layer class a spec: after registration its layers serialise
    (:func:`to_dict`, :func:`to_json`, :func:`spec_hash`) and load (:func:`from_dict`,
    :func:`from_json`). Use as a decorator, ``@register_layer(fields=...)``, or call
    ``register_layer(cls, fields=...)``.

    **Arguments:**

    - ``cls``: the layer class (a subclass of :class:`~ntkit.layers.Layer`).
    - ``fields``: ``{field: kind}``, the constructor's keyword arguments a spec stores, each
      read back as an attribute of the same name; kinds are the keys of ``FIELD_KINDS``
      (e.g. ``"real"``, ``"width"``), checked against ``SPEC_LIMITS`` on loading.
    - ``required``: fields a document must give (the others take the constructor's default).
    - ``name``: the ``"type"`` in documents (default: the class name).

    **Returns:** ``cls`` (or, without ``cls``, a decorator that registers and returns it).

    **Raises:** ``ValueError`` for a name already registered, an unknown kind, or a field the
    constructor does not take; ``TypeError`` for a ``cls`` that is not a layer class.

    Example:
        >>> from dataclasses import dataclass
        >>> from ntkit import layers as L
        >>> @L.register_layer(fields={"scale": "real"})
        ... @dataclass(frozen=True)
        ... class DocScale(L.Layer):
        ...     scale: float = 2.0
        ...     def out_shape(self, in_shape):
        ...         return in_shape
        ...     def kernel_fn(self, k):  # outputs times scale: every kernel times scale^2
        ...         def f(t):
        ...             return None if t is None else t * self.scale**2
        ...         return k.replace(nngp=f(k.nngp), ntk=f(k.ntk), cov1=f(k.cov1), cov2=f(k.cov2))
        >>> net = L.from_json(L.serial(L.Dense(4), DocScale(3.0)).to_json())
        >>> net
        serial(Dense(4), DocScale(scale=3.0))
        >>> import torch
        >>> net.kernel(torch.eye(2, dtype=torch.float64)).nngp.tolist()
        [[4.5, 0.0], [0.0, 4.5]]
    """
    def register(cls: _T) -> _T:
        _register(cls, dict(fields or {}), tuple(required), name)
        return cls

    return register if cls is None else register(cls)


def _register(cls, fields: dict[str, str], required: tuple[str, ...], name: str | None) -> None:
    if not isinstance(cls, type) or not all(
            callable(getattr(cls, m, None)) for m in ("kernel_fn", "out_shape", "build")):
        raise TypeError(f"register_layer: {cls!r} is not a layer class (a subclass of "
                        f"ntkit.layers.Layer)")
    name = cls.__name__ if name is None else name
    if not isinstance(name, str) or not name or len(name) > _MAXS:
        raise ValueError(f"register_layer: name must be a non-empty string of at most {_MAXS} "
                         f"characters; got {name!r}")
    if name in _BY_NAME:
        raise ValueError(f"register_layer: the layer type {name!r} is already registered "
                         f"(for {_BY_NAME[name].cls.__module__}.{_BY_NAME[name].cls.__qualname__})")
    if cls in _NAME_OF:
        raise ValueError(f"register_layer: {cls.__qualname__} is already registered as "
                         f"{_NAME_OF[cls]!r}")
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for field, kind in fields.items():
        if kind not in FIELD_KINDS:
            raise ValueError(f"register_layer({name}): field {field!r} has unknown kind "
                             f"{kind!r}; known: {sorted(FIELD_KINDS)}")
        if field == "type" or (field not in params and not takes_any):
            raise ValueError(f"register_layer({name}): {cls.__qualname__}(...) takes no "
                             f"argument {field!r}")
    missing = [f for f in required if f not in fields]
    if missing:
        raise ValueError(f"register_layer({name}): required fields {missing} are not in fields")
    _BY_NAME[name] = _Entry(cls, fields, required)
    _NAME_OF[cls] = name


# -- writing ------------------------------------------------------------------------------------
def to_dict(net: LayerProtocol) -> dict:
    """The spec document ``{"ntkit_spec": SPEC_VERSION, "net": {...}}`` of ``net`` (JSON types
    only). Raises ``TypeError`` for a layer that has no plain-data form (a class not
    registered with :func:`register_layer`, or an ``Elementwise`` of a function not in
    ``ELEMENTWISE_FUNCTIONS``).

    Example:
        >>> from ntkit import layers as L
        >>> L.serial(L.Dense(8, W_std=1.5), L.ReLU()).to_dict()["net"]["layers"][1]
        {'type': 'ReLU', 'a': 0.0, 'b': 1.0}
    """
    return {"ntkit_spec": SPEC_VERSION, "net": _layer_to_dict(net, "net")}


def _layer_to_dict(layer, where: str) -> dict:
    name = _NAME_OF.get(type(layer))
    if name is None:
        raise TypeError(f"{where}: {layer!r} ({type(layer).__name__}) has no serialisable "
                        f"spec; register its class with ntkit.layers.register_layer")
    out: dict = {"type": name}
    for field, kind in _BY_NAME[name].fields.items():
        out[field] = _encode(getattr(layer, field), kind, f"{where}.{field}")
    return out


def _encode(value, kind: str, where: str):
    if kind == "layers":
        return [_layer_to_dict(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind in ("function", "function or null"):
        if value is None:
            return None
        if isinstance(value, Chain):
            return {"compose": _encode(value.parts, "layers", f"{where}.compose")}
        if function_name(value) is not None:
            return function_name(value)
        raise TypeError(
            f"{where}: {value!r} cannot be stored by name; use one of "
            f"{sorted(ELEMENTWISE_FUNCTIONS)} or a closed-form layer"
        )
    return list(value) if isinstance(value, tuple) else value


def to_json(net: LayerProtocol, *, indent: int | None = 2) -> str:
    """The spec document of ``net`` as JSON text (see :func:`to_dict`)."""
    return json.dumps(to_dict(net), indent=indent, sort_keys=True)


def save_spec(net: LayerProtocol, path) -> None:
    """Write the spec of ``net`` to the JSON file ``path``."""
    Path(path).write_text(to_json(net) + "\n")


def spec_hash(net_or_doc) -> str:
    """SHA-256 of the canonical JSON of a spec (a layer or a spec document), hex."""
    doc = net_or_doc if isinstance(net_or_doc, dict) else to_dict(net_or_doc)
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# -- reading ------------------------------------------------------------------------------------
def from_dict(doc):
    """The network of a spec document (see :func:`to_dict`).

    Raises ``ValueError`` naming the place in the document for an unknown layer type or
    field, a missing field, a size or total cost over ``SPEC_LIMITS`` or an unsupported
    ``ntkit_spec`` version, and ``TypeError`` for a value of the wrong JSON type.

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
    return _Reader().layer(doc["net"], "net", 0)


def from_json(text: str):
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


def load_spec(path):
    """The network of the JSON spec file ``path`` (see :func:`from_dict`).

    Only a regular file is read, and at most ``SPEC_LIMITS["bytes"]`` of it: a device
    (``/dev/zero``), a FIFO or a directory raises ``ValueError`` without blocking.
    """
    return from_json(read_regular(path, limit=_MAXB, what=f"spec file {path}",
                                  encoding="utf-8"))


class _Reader:
    """One document's reading: counts layers and total cost against ``SPEC_LIMITS``."""

    def __init__(self):
        self.layers = 0
        self.cost = 0

    def layer(self, d, where: str, depth: int):
        if not isinstance(d, dict):
            raise TypeError(f"{where}: a layer must be a JSON object; got {type(d).__name__}")
        self.layers += 1
        if self.layers > SPEC_LIMITS["layers"]:
            raise ValueError(f"{where}: the spec has more than {SPEC_LIMITS['layers']} layers")
        if depth > SPEC_LIMITS["nesting"]:
            raise ValueError(f"{where}: layers nested more than {SPEC_LIMITS['nesting']} deep")
        name = d.get("type")
        if not isinstance(name, str) or name not in _BY_NAME:
            shown = repr(name)[: _MAXS]
            raise ValueError(f"{where}: unknown layer type {shown}; known: {sorted(_BY_NAME)}")
        entry = _BY_NAME[name]
        kinds = entry.fields
        where = f"{where} ({name})"
        unknown = [k for k in d if k != "type" and k not in kinds]
        if unknown:
            raise ValueError(f"{where}: unknown field {str(unknown[0])[: _MAXS]!r}; "
                             f"{name} takes {sorted(kinds) or 'no fields'}")
        for field in entry.required:
            if field not in d:
                raise ValueError(f"{where}: missing field {field!r}")
        kwargs = {k: self.value(d[k], kinds[k], f"{where}.{k}", depth)
                  for k in kinds if k in d}
        cost = math.prod(kwargs[k] ** 2 for k in kwargs if kinds[k] == "deg")
        self.cost += cost
        if self.cost > SPEC_LIMITS["cost"]:
            raise ValueError(
                f"{where}: the spec's total cost is over {SPEC_LIMITS['cost']} evaluations per "
                f"kernel entry (SPEC_LIMITS['cost']: deg^2 per quadrature layer, 1 per other "
                f"layer); use fewer quadrature layers or a smaller deg"
            )
        try:
            return entry.cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{where}: {err}") from None

    def value(self, v, kind: str, where: str, depth: int):
        if kind == "layers":
            if not isinstance(v, list) or not v:
                raise TypeError(f"{where} must be a non-empty list of layers")
            return tuple(self.layer(x, f"{where}[{i}]", depth + 1) for i, x in enumerate(v))
        if kind in ("function", "function or null"):
            return self.function(v, kind, where, depth)
        if kind == "real or null" and v is None:
            return None
        if kind in ("real", "real or null"):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"{where} must be a finite number; got {v!r}")
            return float(v)
        if kind == "bool":
            if not isinstance(v, bool):
                raise TypeError(f"{where} must be true or false; got {v!r}")
            return v
        if kind == "string":
            if not isinstance(v, str) or len(v) > _MAXS:
                raise TypeError(f"{where} must be a short string; got {str(v)[:_MAXS]!r}")
            return v
        if kind in ("width", "branches", "deg"):
            return _int(v, where, SPEC_LIMITS[kind])
        if kind == "strides" and isinstance(v, int) and not isinstance(v, bool):
            return _int(v, where, SPEC_LIMITS["filter"])
        # "shape", "strides"
        if not isinstance(v, list) or not 1 <= len(v) <= SPEC_LIMITS["spatial_dims"]:
            raise TypeError(f"{where} must be a list of 1 to {SPEC_LIMITS['spatial_dims']} "
                            f"positive integers; got {str(v)[:_MAXS]}")
        return tuple(_int(x, f"{where}[{i}]", SPEC_LIMITS["filter"]) for i, x in enumerate(v))

    def function(self, v, kind: str, where: str, depth: int) -> Callable | None:
        if v is None and kind == "function or null":
            return None
        if isinstance(v, str):
            if v not in ELEMENTWISE_FUNCTIONS:
                raise ValueError(f"{where}: unknown function {v[: _MAXS]!r}; known: "
                                 f"{sorted(ELEMENTWISE_FUNCTIONS)}")
            return ELEMENTWISE_FUNCTIONS[v]
        if isinstance(v, dict) and set(v) == {"compose"} and isinstance(v["compose"], list):
            parts = self.value(v["compose"], "layers", f"{where}.compose", depth)
            if not all(hasattr(p, "phi") for p in parts):
                raise ValueError(f"{where}.compose: every part must be a nonlinearity")
            return Chain(parts)
        raise TypeError(f"{where} must be a function name or {{'compose': [...]}}; got {v!r}")


def _int(v, where: str, limit: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{where} must be an integer; got {str(v)[:_MAXS]!r}")
    if not 1 <= v <= limit:
        raise ValueError(f"{where} must be between 1 and {limit} (SPEC_LIMITS); got {v}")
    return v
