"""Activations by name: the one registry shared by the estimators, ``ntkit.apps.uci`` and the CLI.

A name maps to a factory that returns an :class:`~ntkit.layers.Activation`; keyword arguments
of :func:`activation` go to the factory, so a caller that needs a non-default parameter states
it where it is used (``activation("leaky_relu", negative_slope=0.1)``) rather than in a second
table. A user's activation joins with :func:`register_activation`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from ._activation import Activation
from ._closed_form import GELU, ABReLU, Abs, Cos, Erf, Gaussian, LeakyReLU, ReLU, Sin

__all__ = ["ACTIVATIONS", "activation", "register_activation"]


def _identity() -> Activation:
    # ABReLU(1, 1) is phi(x) = x with closed-form expectations, so the FC kernel family (which
    # takes an Activation with expectations) gives the linear network.
    return ABReLU(1.0, 1.0)


_REGISTRY: dict[str, Callable[..., Activation]] = {
    "relu": ReLU,
    # negative_slope 0.01 by default, as torch.nn.LeakyReLU.
    "leaky_relu": LeakyReLU,
    "abs": Abs,
    "erf": Erf,
    "gelu": GELU,
    "sin": Sin,
    "cos": Cos,
    "gaussian": Gaussian,
    "identity": _identity,
}

ACTIVATIONS: Mapping[str, Callable[..., Activation]] = MappingProxyType(_REGISTRY)
"""Read-only view of the registry, ``name -> factory`` (it shows later registrations too)."""


def activation(name: str, **kwargs) -> Activation:
    """The activation registered as ``name``, built with ``kwargs``.

    **Arguments:** ``name``, a key of :data:`ACTIVATIONS`; ``kwargs``, passed to its factory
    (e.g. ``negative_slope`` for ``"leaky_relu"``, whose default is 0.01 as in torch).

    **Returns:** an :class:`~ntkit.layers.Activation`.

    **Raises:** ``ValueError`` naming the known names for an unknown ``name``; ``TypeError``
    for a keyword the factory does not take.

    Example:
        >>> activation("leaky_relu")
        LeakyReLU(negative_slope=0.01)
        >>> activation("leaky_relu", negative_slope=0.1)
        LeakyReLU(negative_slope=0.1)
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"activation must be one of {sorted(_REGISTRY)}; got {name!r}")
    out = _REGISTRY[name](**kwargs)
    if not isinstance(out, Activation):
        raise TypeError(f"the factory registered as {name!r} returned "
                        f"{type(out).__name__}, not an ntkit.layers.Activation")
    return out


def register_activation(name: str, factory: Callable[..., Activation], *,
                        replace: bool = False) -> Callable[..., Activation]:
    """Register ``factory`` (a callable returning an :class:`~ntkit.layers.Activation`, such
    as the class itself) under ``name``.

    **Arguments:** ``name``, a non-empty string; ``factory``; ``replace=True`` to rebind a name
    that is already registered (otherwise a ``ValueError``).

    **Returns:** ``factory`` unchanged.

    Example:
        >>> from ntkit import layers as L
        >>> _ = register_activation("leaky_relu_02", lambda: L.LeakyReLU(0.2), replace=True)
        >>> activation("leaky_relu_02")
        LeakyReLU(negative_slope=0.2)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable; got {type(factory).__name__}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"activation {name!r} is already registered; pass replace=True to "
                         f"rebind it")
    _REGISTRY[name] = factory
    return factory
