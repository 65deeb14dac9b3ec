"""Accurate log-sum-exp and the functions built on it, for every array library.

lsekit computes ``logsumexp``, ``softmax``, ``log_softmax``,
``cross_entropy`` and ``logmatmulexp`` once, against
the Python Array API standard, and runs that one implementation on NumPy,
PyTorch, JAX, CuPy, Dask and array-api-strict arrays alike. The input's
library, device and dtype decide the output's.
"""

from ._linalg import logmatmulexp
from ._losses import cross_entropy
from ._reductions import log_softmax, logsumexp, softmax

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "cross_entropy",
    "log_softmax",
    "logmatmulexp",
    "logsumexp",
    "softmax",
]
