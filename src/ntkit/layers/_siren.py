"""SIREN (Sitzmann et al., "Implicit Neural Representations with Periodic Activation
Functions", NeurIPS 2020) as a spec: its infinite-width NNGP/NTK and its finite twin with the
paper's uniform initialization.

SIREN computes ``h1 = sin(omega_0 (W1 x + b1))`` with ``W1 ~ U(-1/d, 1/d)``, then
``h_l = sin(omega_0 (W_l h + b_l))`` with ``W_l ~ U(-sqrt(6/n)/omega_0, sqrt(6/n)/omega_0)``
and a linear read-out initialised like the hidden layers; the biases keep PyTorch's
``nn.Linear`` default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (the paper's code re-draws only
the weights).

**What the kernel sees of "uniform".** A hidden pre-activation sums ``n -> infinity``
independent terms, so by the central limit theorem only the weights' variance reaches the
infinite-width kernel: a uniform ``U(-c, c)`` layer is the Gaussian layer of variance
``c^2 / 3`` (:class:`UniformDense` reuses :class:`~ntkit.layers.Dense`'s kernel map). The first
layer sums only ``d`` input coordinates (``d = 1`` for audio, 2 for images), so there the
distribution itself matters: :class:`SirenInput` integrates ``sin`` over the uniform weights
exactly for every ``d`` (a product of ``sinc`` over the coordinates, computed from the raw
inputs that ``Kernel.from_inputs`` keeps for it, see ``Kernel.raw_inputs``) or, with
``distribution="normal"``, draws Gaussian first-layer weights of the same variance, whose
kernel is ``Sin``'s closed form for every ``d``.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import positive_int, real_number
from ..kernel import Kernel, restore_diagonal
from ._base import Layer
from ._closed_form import Sin
from ._combinators import Serial, serial
from ._dense import Dense, DenseModule
from ._serialize import register_layer
from ._twin import AffineTwin

__all__ = ["SirenInput", "SirenInputModule", "UniformDense", "siren"]

_DISTRIBUTIONS = ("uniform", "normal")
_DENSE_FIELDS = {"out_features": "width", "W_std": "real", "b_std": "real or null",
                 "parametrization": "string"}


def redraw_uniform_(twin: AffineTwin, *, W_std: float, b_std: float | None, fan_in: int,
                    parametrization: str, generator: torch.Generator | None) -> None:
    """Replace the Gaussian draws of ``twin`` by uniform ones of the same variance, in place:
    ``U(-sqrt(3) s, sqrt(3) s)`` has standard deviation ``s`` (``s = 1`` for the NTK
    parametrization, where the scales live in the forward pass)."""
    ntk = parametrization == "ntk"
    stds = [(twin.weight, 1.0 if ntk else W_std / math.sqrt(fan_in))]
    if twin.bias is not None:
        stds.append((twin.bias, 1.0 if ntk else b_std))
    with torch.no_grad():
        for param, std in stds:
            u = torch.rand(param.shape, generator=generator, dtype=torch.float64)
            param.copy_(((2 * u - 1) * (math.sqrt(3) * std)).to(param.dtype))


@register_layer(fields=_DENSE_FIELDS, required=("out_features",))
@dataclass(frozen=True)
class UniformDense(Dense):
    """:class:`~ntkit.layers.Dense` whose finite twin draws uniform weights and biases of the
    same variances (``U(-sqrt(3) s, sqrt(3) s)`` for standard deviation ``s``).

    The kernel map is ``Dense``'s: after a layer of infinite width the pre-activations are
    Gaussian whatever the weights' distribution (central limit theorem). On raw inputs a
    pre-activation sums only ``d`` uniform terms and is not Gaussian, so the kernel it returns
    there is marked non-Gaussian and a nonlinearity after it raises (use :class:`SirenInput`
    for SIREN's first layer). Arguments as for ``Dense``.

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> g = torch.Generator().manual_seed(0)
        >>> m = L.UniformDense(1000, W_std=2.0).module((4,), generator=g)
        >>> bool(m.weight.abs().max() <= 3 ** 0.5), round(m.weight.var().item(), 1)
        (True, 1.0)
    """

    def __repr__(self):
        return "Uniform" + super().__repr__()

    def kernel_fn(self, k: Kernel) -> Kernel:
        out = super().kernel_fn(k)
        # Raw inputs (no random layer before): a sum of d uniform terms, not Gaussian.
        return out if k.depends_on else out.replace(is_gaussian=False)

    def build(self, in_shape, generator, dtype) -> nn.Module:
        twin = DenseModule(in_shape[0], self.out_features, W_std=self.W_std, b_std=self.b_std,
                           parametrization=self.parametrization, generator=generator,
                           dtype=dtype)
        redraw_uniform_(twin, W_std=self.W_std, b_std=self.b_std, fan_in=in_shape[0],
                        parametrization=self.parametrization, generator=generator)
        return twin


def _sinc(t: Tensor) -> Tensor:
    """``sin(t) / t`` (1 at 0); ``torch.sinc`` is the normalized ``sin(pi t) / (pi t)``."""
    return torch.sinc(t / math.pi)


class _UniformSine:
    """The two expectations of SIREN's first layer with uniform weights, ``d`` coordinates.

    The unit is ``sin(w z)`` with ``z = u . x + v``, ``u_k ~ U(-a, a)`` (``a = 1 / d``) and
    ``v ~ U(-c, c)`` (``c = 1 / sqrt(d)``), all independent. For symmetric independent
    variables ``E[cos(s + t)] = E[cos s] E[cos t]`` and ``E[cos(w u_k y)] = sinc(w a y)``, so
    with ``S(y) = prod_k sinc(w a y_k)`` and ``sinc t = sin t / t``:

    ``E[sin(w z) sin(w z')] = (S(x - x') - sinc(2 w c) S(x + x')) / 2``,
    ``w^2 E[cos(w z) cos(w z')] = w^2 (S(x - x') + sinc(2 w c) S(x + x')) / 2``

    (``sin A sin B = (cos(A - B) - cos(A + B)) / 2``, ``cos A cos B`` with ``+``). The second
    is the derivative factor of the NTK: ``d sin(w z) / d u_k = w cos(w z) x_k`` with the same
    ``cos(w z)`` for every ``k``, so the first layer's NTK is it times the affine map's NTK
    (``x . x' / (3 d^2) + 1 / (3 d)`` in the NTK parametrization, ``x . x' + 1`` in the
    standard one) exactly, for every ``d``.
    """

    def __init__(self, omega_0: float, d: int):
        self.wa = omega_0 / d
        self.c = math.sin(2 * omega_0 / math.sqrt(d)) / (2 * omega_0 / math.sqrt(d))
        self.w2 = omega_0 * omega_0

    def pair(self, x1: Tensor, x2: Tensor | None, ntk: bool) -> tuple[Tensor, Tensor | None]:
        """``(E[phi phi'], w^2 E[cos cos'])`` for ``(B1, d)`` against ``(B2, d)`` coordinates,
        ``(B1, B2)`` each, or with ``x2=None`` each point with itself, ``(B1,)``
        (``S(x - x) = 1``). The second is ``None`` unless ``ntk``."""
        d = x1.shape[1]
        if x2 is None:
            minus = torch.ones_like(x1[:, 0])
            plus = self._product(2 * x1[:, k] for k in range(d)) * self.c
        else:
            minus = self._product(x1[:, None, k] - x2[None, :, k] for k in range(d))
            plus = self._product(x1[:, None, k] + x2[None, :, k] for k in range(d)) * self.c
        return (minus - plus) / 2, ((minus + plus) * (self.w2 / 2) if ntk else None)

    def _product(self, columns) -> Tensor:
        """``prod_k sinc(w a y_k)`` over the coordinates' arrays ``y_k``, taken one at a time
        so that the working memory stays one array for any ``d``."""
        out = None
        for y in columns:
            factor = _sinc(self.wa * y.abs())
            out = factor if out is None else out * factor
        return out


@register_layer(fields={"out_features": "width", "omega_0": "real", "distribution": "string",
                        "parametrization": "string"}, required=("out_features",))
@dataclass(frozen=True)
class SirenInput(Layer):
    """SIREN's first layer on raw ``(N, d)`` inputs: ``sin(omega_0 (W x + b))`` with
    ``out_features`` units, ``W`` entries of variance ``1 / (3 d^2)`` and ``b`` of variance
    ``1 / (3 d)`` (SIREN's ``U(-1/d, 1/d)`` and PyTorch's bias default ``U(-1/sqrt(d),
    1/sqrt(d))``).

    **Arguments:**

    - ``out_features``: width of the finite twin.
    - ``omega_0``: the frequency factor, ``> 0`` (SIREN: 30).
    - ``distribution``: ``"uniform"`` (SIREN) or ``"normal"`` (Gaussian draws of the same
      variances).
    - ``parametrization``: ``"ntk"`` (parameters of unit variance, scaled in the forward pass)
      or ``"standard"`` (the parameters are ``W`` and ``b``, as in SIREN's code).

    **Kernel.** With ``omega_0 = w``: ``"normal"`` is :class:`~ntkit.layers.Dense` with
    ``W_std = b_std = 1 / sqrt(3 d)`` followed by ``Sin(b=w)``. ``"uniform"`` is exact for
    every ``d``: with ``W_k ~ U(-1/d, 1/d)``, ``b ~ U(-1/sqrt(d), 1/sqrt(d))`` independent,
    ``E[cos(w W . y)] = S(y) = prod_k sinc(w y_k / d)`` and
    ``E[cos 2 w b] = sinc(2 w / sqrt(d))`` give
    ``E[phi phi] = (S(x - x') - sinc(2 w / sqrt(d)) S(x + x')) / 2`` and
    ``E[phi' phi'] = w^2 (S(x - x') + sinc(2 w / sqrt(d)) S(x + x')) / 2``
    (``sinc t = sin t / t``), times the affine map's NTK as for any activation (the gradient
    in ``W_k`` is ``w cos(w z) x_k``, one ``cos`` for every ``k``). The expectation depends on
    the coordinates themselves, not only on ``x . x'``, so the layer must come first, on the
    raw inputs of ``kernel`` (it reads them through ``Kernel.raw_inputs``).

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> x = torch.tensor([[0.0], [0.5]], dtype=torch.float64)
        >>> k = L.SirenInput(64, omega_0=30.0).kernel(x)
        >>> round(k.nngp[0, 0].item(), 4)  # (1 - sinc(60)) / 2
        0.5025
        >>> xy = torch.tensor([[0.0, 0.0], [0.1, -0.2]], dtype=torch.float64)
        >>> k = L.SirenInput(64, omega_0=30.0).kernel(xy)
        >>> round(k.nngp[0, 1].item(), 4)  # d = 2: (1 - sinc(60 / sqrt 2)) sinc(1.5) sinc(3) / 2
        0.016
    """

    out_features: int
    _: KW_ONLY
    omega_0: float = 30.0
    distribution: str = "uniform"
    parametrization: str = "ntk"

    def __post_init__(self):
        object.__setattr__(self, "out_features", positive_int(self.out_features, "out_features"))
        omega = real_number(self.omega_0, "omega_0")
        if omega <= 0:
            raise ValueError(f"omega_0 must be > 0; got {omega}")
        object.__setattr__(self, "omega_0", omega)
        if self.distribution not in _DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {_DISTRIBUTIONS}; got "
                             f"{self.distribution!r}")
        self._affine(1)  # validates parametrization

    def _affine(self, d: int) -> Dense:
        s = 1.0 / math.sqrt(3 * d)
        return Dense(self.out_features, W_std=s, b_std=s, parametrization=self.parametrization)

    def out_shape(self, in_shape):
        in_shape = self._one(in_shape)
        if len(in_shape) != 1:
            raise ValueError(f"SirenInput acts on coordinates of shape (N, d); got per-example "
                             f"shape {in_shape}")
        return (self.out_features,)

    def kernel_fn(self, k: Kernel) -> Kernel:
        k = self._one(k)
        raw = k.raw_inputs()
        if k.depends_on or (raw is None and self.distribution == "uniform"):
            raise ValueError(
                "SirenInput must be the first layer, applied to the raw (N, d) coordinates "
                "given to kernel() (its uniform weights' kernel is a function of the "
                "coordinates, not of their inner products alone)")
        d = k.shape1[1]
        aff = self._affine(d).kernel_fn(k)
        if self.distribution == "normal":
            return Sin(b=self.omega_0).kernel_fn(aff)
        expect = _UniformSine(self.omega_0, d)
        need_ntk = aff.ntk is not None
        if k.diagonal:
            nngp, tdot = expect.pair(raw.x1, None, need_ntk)
            cov1, cov2 = nngp, None
        else:
            other = raw.x1 if raw.x2 is None else raw.x2
            nngp, tdot = expect.pair(raw.x1, other, need_ntk)
            cov1 = expect.pair(raw.x1, None, False)[0]
            cov2 = None if raw.x2 is None else expect.pair(raw.x2, None, False)[0]
            if k.x1_is_x2:
                restore_diagonal(nngp, cov1)
        return aff.replace(nngp=nngp, ntk=None if tdot is None else aff.ntk * tdot, cov1=cov1,
                           cov2=cov2, is_gaussian=False, linear_in=frozenset())

    def build(self, in_shape, generator, dtype) -> nn.Module:
        return SirenInputModule(in_shape[0], self.out_features, omega_0=self.omega_0,
                                distribution=self.distribution,
                                parametrization=self.parametrization, generator=generator,
                                dtype=dtype)


class SirenInputModule(AffineTwin):
    """Finite twin of :class:`SirenInput`: ``(N, d) -> (N, out_features)``,
    ``sin(omega_0 * (x @ (weight_scale * weight).T + bias_scale * bias))``."""

    def __init__(self, in_features: int, out_features: int, *, omega_0: float,
                 distribution: str, parametrization: str,
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None):
        s = 1.0 / math.sqrt(3 * in_features)
        super().__init__((out_features, in_features), in_features, W_std=s, b_std=s,
                         parametrization=parametrization, generator=generator, dtype=dtype)
        if distribution == "uniform":
            redraw_uniform_(self, W_std=s, b_std=s, fan_in=in_features,
                            parametrization=parametrization, generator=generator)
        self.in_features, self.out_features, self.omega_0 = in_features, out_features, omega_0

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.omega_0 * F.linear(x, *self.scaled_parameters()))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"omega_0={self.omega_0:g}")


def siren(widths, *, out_features: int = 1, omega_0: float = 30.0,
          first_layer: str = "uniform", b_std: float | None = None,
          parametrization: str = "ntk") -> Serial:
    """A SIREN with hidden widths ``widths`` and a linear read-out, as a spec.

    ``serial(SirenInput(widths[0]), UniformDense(widths[1]), Sin(b=omega_0), ...,
    UniformDense(out_features))`` with ``W_std = sqrt(2) / omega_0`` after the first layer:
    SIREN's ``U(-sqrt(6/n)/omega_0, sqrt(6/n)/omega_0)`` has variance ``2 / (n omega_0^2)``,
    so each hidden ``omega_0 z`` has variance ``2 E[h^2]`` (about 1) plus the bias's.

    **Arguments:**

    - ``widths``: the hidden widths (a non-empty sequence of positive ints).
    - ``out_features``: outputs of the read-out.
    - ``omega_0``: SIREN's frequency factor, ``> 0``.
    - ``first_layer``: ``"uniform"`` (SIREN) or ``"normal"`` (Gaussian first-layer weights of
      the same variances; see :class:`SirenInput`).
    - ``b_std``: bias scale of the layers after the first; ``None`` keeps SIREN's
      ``1 / sqrt(3 fan_in)`` at these widths (PyTorch's default, which vanishes as the width
      grows), a number fixes it (for a kernel independent of the widths).
    - ``parametrization``: ``"ntk"`` or ``"standard"`` (the twin's parameters are then exactly
      SIREN's).

    **Returns:** a :class:`~ntkit.layers.Serial` mapping ``(N, d)`` coordinates to
    ``(N, out_features)``.

    Example:
        >>> import torch
        >>> from ntkit import layers as L
        >>> net = L.siren((64, 64), omega_0=30.0, b_std=0.0)
        >>> x = torch.linspace(-1, 1, 5, dtype=torch.float64)[:, None]
        >>> net.kernel(x).ntk.shape, net.module((1,))(x.float()).shape
        (torch.Size([5, 5]), torch.Size([5, 1]))
    """
    if isinstance(widths, int) or not hasattr(widths, "__len__") or len(widths) == 0:
        raise ValueError(f"widths must be a non-empty sequence of hidden widths; got {widths!r}")
    widths = [positive_int(w, "widths") for w in widths]
    omega = real_number(omega_0, "omega_0")
    if omega <= 0:
        raise ValueError(f"omega_0 must be > 0; got {omega}")
    fixed = real_number(b_std, "b_std", minimum=0.0, allow_none=True)
    w_std = math.sqrt(2.0) / omega
    layers: list[Layer] = [SirenInput(widths[0], omega_0=omega, distribution=first_layer,
                                      parametrization=parametrization)]
    for fan_in, width in zip(widths, widths[1:] + [out_features], strict=True):
        bias = 1.0 / math.sqrt(3 * fan_in) if fixed is None else fixed
        layers.append(UniformDense(width, W_std=w_std, b_std=bias,
                                   parametrization=parametrization))
        layers.append(Sin(b=omega))
    return serial(*layers[:-1])
