"""Kernel diagnostics: spectra, alignment and CKA, kernel movement during training, and the
learning-curve theory (eigenlearning, random-feature ridge risk) that predicts test error from a
kernel's spectrum.

Every function takes plain tensors (a kernel matrix, eigenvalues, features) or a
:class:`~ntkit.Kernel`'s fields and returns tensors or small records; nothing here holds
module-level state.
"""

__all__: list[str] = []
