"""Theory built on the infinite-width kernels: criticality and the leading finite-width
correction (Roberts, Yaida & Hanin 2022), and the infinite-depth classifiers (Radhakrishnan,
Belkin & Uhler 2023). Functions take an ntkit activation layer or its name and return
frozen records of floats and tensors.

>>> from ntkit import theory
>>> theory.criticality("relu").C_W
2.0
"""

from ._criticality import Criticality as Criticality
from ._criticality import criticality as criticality
from ._criticality import susceptibilities as susceptibilities
from ._deep_limit import DeepLimit as DeepLimit
from ._deep_limit import HermiteSeries as HermiteSeries
from ._deep_limit import deep_limit_class as deep_limit_class
from ._deep_limit import deep_limit_kernel as deep_limit_kernel
from ._deep_limit import optimal_activation as optimal_activation
from ._recursion import KernelRecursion as KernelRecursion
from ._recursion import kernel_recursion as kernel_recursion

__all__ = ["Criticality", "criticality", "susceptibilities", "KernelRecursion",
           "kernel_recursion", "DeepLimit", "deep_limit_class", "deep_limit_kernel",
           "optimal_activation",
           "HermiteSeries"]
