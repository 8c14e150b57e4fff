"""Kernel diagnostics: spectra, alignment and CKA, kernel movement during training, and the
learning-curve theory (eigenlearning, random-feature ridge risk) that predicts test error from a
kernel's spectrum.

Every function takes plain tensors (a kernel matrix, eigenvalues, features) or a
:class:`~ntkit.Kernel`'s fields and returns tensors or small records; nothing here holds
module-level state.
"""

from ._plots import plot_spectrum as plot_spectrum
from ._plots import power_law_exponent as power_law_exponent
from ._similarity import centered_alignment as centered_alignment
from ._similarity import centered_target_alignment as centered_target_alignment
from ._similarity import cka as cka
from ._similarity import cka_from_kernels as cka_from_kernels
from ._similarity import hsic as hsic
from ._similarity import kernel_alignment as kernel_alignment
from ._similarity import kernel_distance as kernel_distance
from ._similarity import target_alignment as target_alignment
from ._spectrum import Spectrum as Spectrum
from ._spectrum import condition_number as condition_number
from ._spectrum import effective_rank as effective_rank
from ._spectrum import spectrum as spectrum
from ._spectrum import trace_norm as trace_norm

__all__: list[str] = [
    "Spectrum", "spectrum", "condition_number", "effective_rank", "trace_norm",
    "kernel_alignment", "kernel_distance", "target_alignment", "centered_alignment",
    "centered_target_alignment", "hsic", "cka", "cka_from_kernels",
    "power_law_exponent", "plot_spectrum",
]
