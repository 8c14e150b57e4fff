"""Scalable neural network kernels (SNNK) and universal random features (URF).

Sehanobish, Choromanski, Zhao, Dubey & Likhosherstov, "Scalable Neural Network Kernels"
(ICLR 2024). A feed-forward layer ``f(x) = phi(W x + b)`` couples inputs and parameters only
through ``phi(w_i . x + b_i)``; an SNNK writes that coupling as an inner product
``Phi(x) . Psi(w_i, b_i)`` of a feature map of the input and one of the parameters, so the
layer becomes ``Phi(x) @ Psi(W, b)^T``.

- :class:`SNNKFeatures`: the paper's kernel ``K(x, w) = E_g[phi(g . x) phi(g . w)]`` with the
  same random map on both sides (their ReLU-SNNK); with ntkit's scaling it is the NNGP of
  ``Dense(W_std, b_std) - phi``, and its closed form comes from :mod:`ntkit.layers`.
- :class:`UniversalRandomFeatures`: unbiased features for ``f(x . w + b)`` itself, from the
  Fourier representation ``f(z) = E_xi[c(xi) exp(i xi z)]`` and the Gaussian identity
  ``E_g[exp(a g.x - a^2 |x|^2 / 2) exp(a g.w - a^2 |w|^2 / 2)] = exp(a^2 x . w)`` for complex
  ``a = sqrt(i xi)`` (their Section 3, "universal random features"); ``f = exp`` is the
  positive (FAVOR+) case with ``a = 1``.
- :class:`SNNKLayer`: ``nn.Linear`` followed by ``f``, computed through URFs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real

import torch
from sklearn.utils._param_validation import Interval
from torch import Tensor, nn

from ..layers import Activation
from ..layers import activation as named_activation
from ._base import RandomFeatureMap
from ._favor import gaussian_projection, positive_random_features

__all__ = ["SNNKFeatures", "SNNKLayer", "URF_FUNCTIONS", "UniversalRandomFeatures"]


class SNNKFeatures(RandomFeatureMap):
    """Random features ``phi(W_std / sqrt(d) G x + b_std beta) / sqrt(m)`` of an SNNK.

    With ``G`` ``(m, d)`` and ``beta`` ``(m,)`` standard normal, the inner product of the
    features of ``x`` and ``y`` is unbiased for
    ``K(x, y) = E[phi(u) phi(v)]``, ``(u, v)`` Gaussian with covariance
    ``W_std^2 [x.x, x.y; x.y, y.y] / d + b_std^2``: the kernel by which Sehanobish et al.
    replace ``phi(w . x)`` (ReLU-SNNK, with ``y`` a weight row), and the NNGP of
    ``L.serial(L.Dense(1, W_std=W_std, b_std=b_std), phi)`` in ntkit's conventions, which
    :meth:`exact_kernel` evaluates in closed form. Error of one entry ~ ``m^(-1/2)``.

    **Arguments:**

    - ``n_components``: ``m``, ``>= 1``.
    - ``activation``: an :class:`ntkit.layers.Activation` or a name of
      ``ntkit.layers.ACTIVATIONS`` (``"relu"``, ``"erf"``, ...).
    - ``W_std`` (``> 0``), ``b_std`` (``>= 0``): the scales of ntkit's ``Dense``.
    - ``random_state``: ``None``, an ``int`` seed, or a ``torch.Generator``.

    **Returns** (``forward`` / ``transform``): ``(N, d)`` -> ``(N, m)``.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
        >>> phi = SNNKFeatures(40000, activation="relu", random_state=0).fit(x)
        >>> k_hat = phi(x) @ phi(x).T
        >>> bool(((k_hat - phi.exact_kernel(x)).abs() < 0.01).all())
        True
    """

    _parameter_constraints: dict = {
        **RandomFeatureMap._parameter_constraints,
        "activation": [str, Activation],
        "W_std": [Interval(Real, 0, None, closed="neither")],
        "b_std": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, n_components: int = 256, *, activation: str | Activation = "relu",
                 W_std: float = 1.0, b_std: float = 0.0,
                 random_state: int | torch.Generator | None = None):
        super().__init__()
        self.n_components = n_components
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.random_state = random_state

    def _phi(self) -> Activation:
        act = self.activation
        return named_activation(act) if isinstance(act, str) else act

    def _check_hyper(self, d: int) -> None:
        if not (math.isfinite(self.W_std) and self.W_std > 0):
            raise ValueError(f"W_std must be a finite number > 0; got {self.W_std!r}")
        if not (math.isfinite(self.b_std) and self.b_std >= 0):
            raise ValueError(f"b_std must be a finite number >= 0; got {self.b_std!r}")
        if isinstance(self.activation, str):
            self._phi()  # raises ValueError naming the known activations

    def _draw(self, d: int, generator: torch.Generator) -> dict[str, Tensor]:
        m = self.n_components
        return {"weight": torch.randn(m, d, generator=generator, dtype=torch.float64),
                "bias": torch.randn(m, generator=generator, dtype=torch.float64)}

    def _features(self, x: Tensor) -> Tensor:
        scale = self.W_std / math.sqrt(self.n_features_in_)
        pre = scale * (x @ self._buffer("weight_", x).T) + self.b_std * self._buffer("bias_", x)
        return self._phi().phi(pre) / math.sqrt(self.n_components)

    def exact_kernel(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        """The kernel the features estimate, from :mod:`ntkit.layers`: ``(N1, d)``,
        ``(N2, d)`` -> ``(N1, N2)`` (``x2=None``: ``x1``)."""
        from .. import layers as L

        net = L.serial(L.Dense(1, W_std=float(self.W_std), b_std=float(self.b_std)),
                       self._phi())
        return net.kernel(x1, x2, get="nngp").nngp


@dataclass(frozen=True)
class _Spectral:
    """``f(z) = E_xi[Re(coefficient * exp(i xi z))]``: ``frequencies(n, generator)`` draws
    the ``xi`` (float64), ``imaginary`` says that ``coefficient = -i`` (take the imaginary
    part), and ``exact`` is ``f`` itself."""

    exact: Callable[[Tensor], Tensor]
    frequencies: Callable[[int, torch.Generator], Tensor]
    imaginary: bool = False


def _unit(n: int, generator: torch.Generator) -> Tensor:
    return torch.ones(n, dtype=torch.float64)


def _gaussian_frequencies(n: int, generator: torch.Generator) -> Tensor:
    # exp(-z^2) is the characteristic function of N(0, 2) (Bochner).
    return math.sqrt(2.0) * torch.randn(n, generator=generator, dtype=torch.float64)


URF_FUNCTIONS: dict[str, _Spectral | None] = {
    "exp": None,  # positive features, no frequencies
    "cos": _Spectral(torch.cos, _unit),
    "sin": _Spectral(torch.sin, _unit, imaginary=True),
    "gaussian": _Spectral(lambda z: torch.exp(-z * z), _gaussian_frequencies),
}
"""The functions ``f`` that :class:`UniversalRandomFeatures` and :class:`SNNKLayer` take:
``exp``, ``cos``, ``sin`` and ``gaussian`` (``exp(-z^2)``, ntkit's ``Gaussian`` activation)."""


def _check_function(name) -> str:
    if name not in URF_FUNCTIONS:
        hint = ""
        if name in ("relu", "gelu", "erf", "tanh", "sigmoid"):
            hint = (f"; {name!r} has no Fourier transform that is a function, so no unbiased "
                    f"URF exists: for the ReLU-SNNK kernel use SNNKFeatures(activation=...)")
        raise ValueError(f"function must be one of {sorted(URF_FUNCTIONS)}; got {name!r}{hint}")
    return name


class UniversalRandomFeatures(RandomFeatureMap):
    """Two feature maps, of inputs and of weights, with ``E[Phi(x) . Psi(w, b)] = f(x.w + b)``.

    Universal random features of Sehanobish et al. (2024). For ``f = exp``:
    ``Phi(x) = exp(G x - |x|^2/2) / sqrt(m)``, ``Psi(w, b) = e^b exp(G w - |w|^2/2) / sqrt(m)``
    (positive features). For ``f(z) = E_xi[Re(c exp(i xi z))]`` (``cos``, ``sin``,
    ``gaussian``): per draw ``(g, xi)``, ``a = sqrt(i xi)`` and
    ``phi(x) = exp(a g.x - i xi |x|^2 / 2)``, ``psi(w, b) = exp(i xi b) exp(a g.w - i xi |w|^2/2)``
    so that ``E_g[phi psi] = exp(i xi (x.w + b))``; the real and imaginary parts are stacked
    so that a real inner product gives ``Re(c phi psi)``: ``n_components`` must then be even
    (``m / 2`` draws). The variance grows like ``exp(|xi| (|x|^2 + |w|^2))`` (``exp`` as in
    FAVOR+): inputs and weight rows of norm of order one are where these features are useful.

    ``transform(X)`` / ``forward`` give the input side ``Phi``; :meth:`weight_features` the
    parameter side ``Psi``. ``Phi(x) . Phi(y)`` is NOT a kernel estimate unless ``f = exp``.

    **Arguments:**

    - ``n_components``: ``m``, the width of both maps, ``>= 1`` (even unless ``f = exp``).
    - ``function``: a name of :data:`URF_FUNCTIONS`.
    - ``orthogonal``: draw ``G`` in orthogonal blocks (unbiased still; lower variance).
    - ``random_state``: ``None``, an ``int`` seed, or a ``torch.Generator``.

    Example:
        >>> x = torch.tensor([[0.3, -0.4]], dtype=torch.float64)
        >>> w = torch.tensor([[0.5, 0.2], [-0.1, 0.6]], dtype=torch.float64)
        >>> urf = UniversalRandomFeatures(40000, function="cos", random_state=0).fit(x)
        >>> est = urf(x) @ urf.weight_features(w).T
        >>> bool(((est - torch.cos(x @ w.T)).abs() < 0.02).all())
        True
    """

    _parameter_constraints: dict = {
        **RandomFeatureMap._parameter_constraints,
        "function": [str],
        "orthogonal": ["boolean"],
    }

    def __init__(self, n_components: int = 256, *, function: str = "exp",
                 orthogonal: bool = False, random_state: int | torch.Generator | None = None):
        super().__init__()
        self.n_components = n_components
        self.function = function
        self.orthogonal = orthogonal
        self.random_state = random_state

    def _check_hyper(self, d: int) -> None:
        if URF_FUNCTIONS[_check_function(self.function)] is not None and self.n_components % 2:
            raise ValueError(f"n_components must be even for function={self.function!r} (real "
                             f"and imaginary parts of n_components/2 draws); got "
                             f"{self.n_components}")

    def _draw(self, d: int, generator: torch.Generator) -> dict[str, Tensor]:
        spectral = URF_FUNCTIONS[self.function]
        n = self.n_components if spectral is None else self.n_components // 2
        projection = gaussian_projection(n, d, orthogonal=self.orthogonal, generator=generator,
                                         dtype=torch.float64)
        freq = torch.zeros(n, dtype=torch.float64) if spectral is None \
            else spectral.frequencies(n, generator)
        return {"projection": projection, "frequency": freq}

    def _side(self, x: Tensor, shift: Tensor | None, *, weights: bool) -> Tensor:
        g = self._buffer("projection_", x)
        spectral = URF_FUNCTIONS[self.function]
        if spectral is None:
            phi = positive_random_features(x, g)
            return phi * torch.exp(shift)[:, None] if shift is not None else phi
        xi = self._buffer("frequency_", x)
        r = torch.sqrt(xi.abs() / 2)  # sqrt(i xi) = r (1 + i sign(xi))
        u = x @ g.T
        theta = torch.sign(xi) * r * u - 0.5 * xi * (x * x).sum(-1, keepdim=True)
        if shift is not None:
            theta = theta + shift[:, None] * xi
        size = torch.exp(r * u) / math.sqrt(self.n_components // 2)
        re, im = size * torch.cos(theta), size * torch.sin(theta)
        if not weights:
            return torch.cat([re, im], dim=-1)
        # Re(phi psi) = Re phi Re psi - Im phi Im psi; Im(phi psi) = Re phi Im psi + Im phi Re psi.
        return torch.cat([im, re], dim=-1) if spectral.imaginary \
            else torch.cat([re, -im], dim=-1)

    def _features(self, x: Tensor) -> Tensor:
        return self._side(x, None, weights=False)

    def weight_features(self, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """The parameter side ``Psi``: ``weight`` ``(K, d)`` and ``bias`` ``(K,)`` (or
        ``None``) -> ``(K, m)``, in ``weight``'s dtype and device (differentiable)."""
        w = self._check_tensor(weight, reset=False)
        if bias is not None and bias.shape != (w.shape[0],):
            raise ValueError(f"bias must have shape ({w.shape[0]},); got {tuple(bias.shape)}")
        return self._side(w, None if bias is None else bias.to(w.dtype), weights=True)

    def exact(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """``f(x @ weight.T + bias)``, ``(N, K)``: what ``Phi(x) @ Psi(weight, bias).T``
        estimates."""
        z = x @ weight.T if bias is None else x @ weight.T + bias
        spectral = URF_FUNCTIONS[_check_function(self.function)]
        return torch.exp(z) if spectral is None else spectral.exact(z)


class SNNKLayer(nn.Module):
    """``f(x W^T + b)`` (an ``nn.Linear`` and its activation) as ``Phi(x) @ Psi(W, b)^T``.

    The SNNK layer of Sehanobish et al. (2024) with universal random features
    (:class:`UniversalRandomFeatures`): unbiased for the layer's output, entrywise error
    ~ ``m^(-1/2)``; ``W`` and ``b`` stay the trainable parameters (gradients flow through
    ``Psi``). Cost ``O(N m (in + out))`` against ``O(N in out)`` for the dense layer, with
    ``Psi(W, b)`` computable once for inference.

    **Arguments:**

    - ``in_features``, ``out_features``: as ``nn.Linear``.
    - ``activation``: ``f``, a name of :data:`URF_FUNCTIONS` (``"exp"``, ``"cos"``, ``"sin"``,
      ``"gaussian"``); ReLU-like activations have no unbiased URF (see
      :class:`SNNKFeatures`).
    - ``n_components``: ``m`` (even unless ``f = exp``).
    - ``bias``, ``device``, ``dtype``: as ``nn.Linear`` (same initialisation).
    - ``orthogonal``, ``random_state``: of the random features.

    **Returns** (``forward``): ``(..., in_features)`` -> ``(..., out_features)``.

    Example:
        >>> torch.manual_seed(0) and None
        >>> lin = nn.Linear(4, 3, dtype=torch.float64)
        >>> layer = SNNKLayer.from_linear(lin, activation="exp", n_components=20000,
        ...                               random_state=0)
        >>> x = 0.3 * torch.randn(5, 4, dtype=torch.float64)
        >>> bool(((layer(x) - torch.exp(lin(x))).abs() < 0.05).all())
        True
    """

    def __init__(self, in_features: int, out_features: int, *, activation: str,
                 n_components: int, bias: bool = True, orthogonal: bool = False,
                 random_state: int | torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        linear = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.in_features, self.out_features = in_features, out_features
        self.weight = linear.weight
        self.register_parameter("bias", linear.bias)
        self.features = UniversalRandomFeatures(
            n_components, function=_check_function(activation), orthogonal=orthogonal,
            random_state=random_state,
        ).fit(torch.zeros(1, in_features, dtype=self.weight.dtype, device=self.weight.device))

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, activation: str, n_components: int,
                    orthogonal: bool = False,
                    random_state: int | torch.Generator | None = None) -> SNNKLayer:
        """An SNNK layer with a copy of ``linear``'s weight and bias."""
        layer = cls(linear.in_features, linear.out_features, activation=activation,
                    n_components=n_components, bias=linear.bias is not None,
                    orthogonal=orthogonal, random_state=random_state,
                    device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        phi = self.features(x.reshape(-1, self.in_features))
        psi = self.features.weight_features(self.weight, self.bias)
        return (phi @ psi.T).reshape(*lead, self.out_features)

    def exact(self, x: Tensor) -> Tensor:
        """The dense layer's ``f(x W^T + b)``, ``(..., out_features)``: what ``forward``
        estimates."""
        return self.features.exact(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"activation={self.features.function!r}, "
                f"n_components={self.features.n_components}")
