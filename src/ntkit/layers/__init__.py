"""Network specs: every layer gives its infinite-width kernel map and its finite torch twin.

>>> import torch
>>> from ntkit import layers as L
>>> net = L.serial(L.Dense(512, W_std=1.5, b_std=0.05), L.ReLU(), L.Dense(1))
>>> x = torch.randn(4, 10, dtype=torch.float64)
>>> net.kernel(x).ntk.shape
torch.Size([4, 4])
>>> net.module((10,), dtype=torch.float64)(x).shape
torch.Size([4, 1])
"""

from ._activation import Activation as Activation
from ._activation import Identity as Identity
from ._attention import SelfAttention as SelfAttention
from ._attention import SelfAttentionModule as SelfAttentionModule
from ._base import Layer as Layer
from ._closed_form import GELU as GELU
from ._closed_form import ABReLU as ABReLU
from ._closed_form import Abs as Abs
from ._closed_form import Cos as Cos
from ._closed_form import Erf as Erf
from ._closed_form import Gaussian as Gaussian
from ._closed_form import LeakyReLU as LeakyReLU
from ._closed_form import ReLU as ReLU
from ._closed_form import Sin as Sin
from ._combinators import FanInConcat as FanInConcat
from ._combinators import FanInSum as FanInSum
from ._combinators import FanOut as FanOut
from ._combinators import Parallel as Parallel
from ._combinators import Serial as Serial
from ._combinators import parallel as parallel
from ._combinators import serial as serial
from ._compute import kernel_matrix as kernel_matrix
from ._conv import Conv as Conv
from ._conv import ConvModule as ConvModule
from ._dense import Dense as Dense
from ._dense import DenseModule as DenseModule
from ._elementwise import Elementwise as Elementwise
from ._elementwise import compose as compose
from ._mask import input_mask as input_mask
from ._mask import masked_forward as masked_forward
from ._myrtle import myrtle as myrtle
from ._named import ACTIVATIONS as ACTIVATIONS
from ._named import activation as activation
from ._named import register_activation as register_activation
from ._norm import Dropout as Dropout
from ._norm import LayerNorm as LayerNorm
from ._pool import AvgPool as AvgPool
from ._pool import GlobalAvgPool as GlobalAvgPool
from ._pool import GlobalSumPool as GlobalSumPool
from ._pool import SumPool as SumPool
from ._serialize import FIELD_KINDS as FIELD_KINDS
from ._serialize import SPEC_LIMITS as SPEC_LIMITS
from ._serialize import SPEC_VERSION as SPEC_VERSION
from ._serialize import from_dict as from_dict
from ._serialize import from_json as from_json
from ._serialize import load_spec as load_spec
from ._serialize import register_layer as register_layer
from ._serialize import save_spec as save_spec
from ._serialize import spec_hash as spec_hash
from ._shape import Flatten as Flatten
from ._siren import SirenInput as SirenInput
from ._siren import SirenInputModule as SirenInputModule
from ._siren import UniformDense as UniformDense
from ._siren import siren as siren
from ._winner import spectral_centroid as spectral_centroid
from ._winner import winner_init_ as winner_init_
from ._winner import winner_noise_scales as winner_noise_scales

__all__ = [
    "Layer", "Activation",
    "Dense", "DenseModule", "Conv", "ConvModule",
    "SelfAttention", "SelfAttentionModule", "input_mask", "masked_forward",
    "AvgPool", "SumPool", "GlobalAvgPool", "GlobalSumPool", "Flatten",
    "LayerNorm", "Dropout", "myrtle",
    "ReLU", "LeakyReLU", "ABReLU", "Abs", "Erf", "GELU", "Sin", "Cos", "Gaussian", "Identity",
    "Elementwise", "compose",
    "serial", "parallel", "Serial", "Parallel", "FanOut", "FanInSum", "FanInConcat",
    "from_dict", "from_json", "load_spec", "save_spec", "spec_hash", "SPEC_VERSION", "SPEC_LIMITS",
    "ACTIVATIONS", "activation", "register_activation",
    "register_layer", "FIELD_KINDS",
    "siren", "SirenInput", "SirenInputModule", "UniformDense",
    "spectral_centroid", "winner_noise_scales", "winner_init_",
    "kernel_matrix",
]
