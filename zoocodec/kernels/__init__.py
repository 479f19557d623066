"""Array math over a backend namespace `xp` (NumPy on CPU, CuPy on GPU).

Every kernel takes arrays of one namespace and returns arrays of the same one, so
the CPU and GPU paths share a single implementation. Importing this package never
imports CuPy.
"""
from zoocodec.kernels.backend import array_namespace, get_xp, to_numpy

__all__ = ["array_namespace", "get_xp", "to_numpy"]
