"""abc-parametrizations as data: the width exponents of SP, NTP, muP and MF per parameter role.

An abc-parametrization (Yang & Hu 2021, "Feature Learning in Infinite-Width Neural Networks",
§3) writes each weight as ``W = n^-a w`` with ``w`` initialised at standard deviation
``n^-b`` and trained with learning rate ``eta n^-c``. Here ``n`` is the *width multiplier*
of the parameter relative to a base model (``fan_in / base_fan_in`` as in ``mup``), and every
scale is relative to the base width: at ``n = 1`` the multiplier and the learning-rate scale
are 1 and the init std is the model's own default init, so every parametrization leaves the
base model unchanged and only says how to scale away from it.

Which ``n`` an exponent applies to depends on the role (:mod:`._roles`): the fan-out
multiplier for ``input`` weights, the fan-in multiplier for ``output`` and ``hidden`` weights,
the vector's own multiplier for ``bias`` and ``norm`` parameters. A ``fixed`` parameter (no
width dimension) has ``n = 1`` and is never rescaled.

Two abc-parametrizations related by the symmetry ``(a, b, c_sgd, c_adam) -> (a + t, b - t,
c_sgd - 2t, c_adam - t)`` of one layer train identically (SGD: TP4 §3; Adam, up to its
epsilon: Yang et al. 2022, "Tensor Programs V", §B). The tables below pick the representative
that ``mup`` 1.0.0 implements where one exists, so that a plan can be compared with it number
by number.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["ABC", "MF", "MUP", "NTP", "ROLES", "SP", "Exponents", "get_abc"]

ROLES = ("input", "hidden", "output", "bias", "norm")
"""The roles whose exponents a table gives; ``fixed`` parameters are never rescaled."""


@dataclass(frozen=True)
class Exponents:
    """Width exponents of one role: multiplier ``n^-a``, init std ``n^-b`` (relative to the
    base-width default init), learning-rate scale ``n^-c_sgd`` under SGD and ``n^-c_adam``
    under Adam / AdamW."""

    a: float = 0.0
    b: float = 0.0
    c_sgd: float = 0.0
    c_adam: float = 0.0


@dataclass(frozen=True)
class ABC:
    """An abc-parametrization: the :class:`Exponents` of each role.

    Example:
        >>> custom = ABC("my-mup", output=Exponents(a=1.0, c_sgd=-1.0))
        >>> custom.exponents("output").a, custom.exponents("fixed").a
        (1.0, 0.0)
    """

    name: str
    input: Exponents = Exponents()
    hidden: Exponents = Exponents()
    output: Exponents = Exponents()
    bias: Exponents = Exponents()
    norm: Exponents = Exponents()

    def __post_init__(self) -> None:
        for role in ROLES:
            e = getattr(self, role)
            if not isinstance(e, Exponents):
                raise TypeError(f"ABC {role}= must be an Exponents, got {type(e).__name__}")
            for f in fields(e):
                v = getattr(e, f.name)
                if not isinstance(v, (int, float)) or v != v or abs(v) == float("inf"):
                    raise ValueError(f"ABC {role}.{f.name} must be a finite number, got {v!r}")

    def exponents(self, role: str) -> Exponents:
        """The exponents of ``role`` (one of :data:`ROLES`, or ``"fixed"``: all zero)."""
        if role == "fixed":
            return Exponents()
        if role not in ROLES:
            raise ValueError(f"role must be one of {(*ROLES, 'fixed')}, got {role!r}")
        return getattr(self, role)


_HALF = 0.5

SP = ABC("sp", hidden=Exponents(b=_HALF), output=Exponents(b=_HALF))
"""Standard parametrization: PyTorch's default init (std ``fan_in^-1/2``) with one global
learning rate. TP4 §3 (SP: ``a = 0``, ``b_1 = 0``, ``b_l = b_{L+1} = 1/2``, ``c = 0``); TP5
Table 3, parenthesised SP entries (init var ``1/fan_in``, SGD and Adam LR 1; biases count as
input weights with fan-in 1, hence ``b = 0``)."""

NTP = ABC(
    "ntk",
    input=Exponents(c_adam=_HALF),
    hidden=Exponents(a=_HALF, c_adam=1.0),
    output=Exponents(a=_HALF, c_adam=_HALF),
    bias=Exponents(c_adam=_HALF),
    norm=Exponents(c_adam=_HALF),
)
"""NTK parametrization (Jacot et al. 2018): O(1) init, multiplier ``fan_in^-1/2`` on hidden
and output weights. a, b and c_sgd from TP4 §3 (NTP: ``a_1 = 0``, ``a_l = a_{L+1} = 1/2``,
``b = 0``, ``c = 0``). Neither TP4 nor TP5 tabulates NTP for Adam: ``c_adam`` here is derived
by the rule that reproduces TP5 Table 3's muP Adam column from its SGD column: Adam's update
has the sign pattern of the gradient with O(1) entries, so ``c_adam = c_sgd + g`` where
``n^-g`` is the order of the gradient of the raw parameter ``w`` (hidden ``1``, output, input,
bias and norm ``1/2`` in NTP)."""

MUP = ABC(
    "mup",
    input=Exponents(c_sgd=-1.0),
    hidden=Exponents(b=_HALF, c_adam=1.0),
    output=Exponents(a=1.0, c_sgd=-1.0),
    bias=Exponents(c_sgd=-1.0),
    norm=Exponents(c_sgd=-1.0),
)
"""Maximal-update parametrization in the form ``mup`` 1.0.0 implements (``MuReadout`` +
``set_base_shapes`` + ``MuSGD`` / ``MuAdam``): TP5 Table 3 (init var ``1/fan_in`` for input
weights and biases with fan-in 1, and hidden weights; SGD LR ``fan_out`` for input weights and
biases, 1 for hidden; Adam LR 1 for input weights and biases, ``1/fan_in`` for hidden), with the
output layer written as in the equivalent formulation of TP5's appendix with an output
multiplier (Tables 8-9: multiplier ``1/fan_in``, init var 1, SGD LR ``fan_in``, Adam LR 1),
the symmetry image (t = 1) of Table 3's output column (init var ``1/fan_in^2``, SGD and Adam
LR ``1/fan_in``)."""

MF = ABC(
    "mf",
    input=Exponents(c_sgd=-1.0),
    hidden=Exponents(a=_HALF, c_sgd=-1.0, c_adam=_HALF),
    output=Exponents(a=1.0, c_sgd=-1.0),
    bias=Exponents(c_sgd=-1.0),
    norm=Exponents(c_sgd=-1.0),
)
"""Mean-field parametrization: every weight initialised O(1), the readout multiplied by
``1/n``, SGD learning rate scaled by ``n`` (TP4 §3, MFP for one hidden layer: ``a_1 = b_1 =
b_2 = 0``, ``a_2 = 1``, ``c = -1``; TP4 shows it is muP for ``L = 1``). Hidden layers, which TP4's
MFP does not define, take muP's hidden exponents moved by the symmetry with ``t = 1/2`` (init
O(1), multiplier ``fan_in^-1/2``), so MF trains like :data:`MUP` at every depth."""

_NAMES = {
    "sp": SP, "standard": SP,
    "ntk": NTP, "ntp": NTP,
    "mup": MUP,
    "mf": MF, "mean_field": MF, "mfp": MF,
}


def get_abc(parametrization: str | ABC) -> ABC:
    """The :class:`ABC` named ``parametrization`` (``"sp"``/``"standard"``,
    ``"ntk"``/``"ntp"``, ``"mup"``, ``"mf"``/``"mean_field"``; case-insensitive), or
    ``parametrization`` itself if it is one.

    Example:
        >>> get_abc("muP").output
        Exponents(a=1.0, b=0.0, c_sgd=-1.0, c_adam=0.0)
    """
    if isinstance(parametrization, ABC):
        return parametrization
    if not isinstance(parametrization, str):
        raise TypeError(f"parametrization must be a name or an ABC, got "
                        f"{type(parametrization).__name__}")
    key = parametrization.strip().lower().replace("-", "_").replace("μ", "mu")
    if key not in _NAMES:
        raise ValueError(f"unknown parametrization {parametrization!r}; known: "
                         f"{sorted(_NAMES)} or an ABC(...)")
    return _NAMES[key]
