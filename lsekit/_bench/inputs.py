"""The inputs every backend is timed on, made once with NumPy.

Each backend converts the same NumPy arrays into its own, so that every
library is timed on the same numbers.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

__all__ = ["labels", "log_operands", "logits"]

# Logits spread as a trained classifier's are: most classes a few units
# apart, no overflow for the max-shift peers to trip on.
_SCALE = 3.0


@functools.lru_cache(maxsize=2)
def logits(shape: tuple[int, ...], dtype: str) -> Any:
    """``normal(scale=3)`` values of ``shape`` and ``dtype``, seeded.

    Cached, since every backend converts the same array; callers must not
    modify it.

    Examples
    --------
    >>> x = logits((2, 3), "float32")
    >>> x.shape, x.dtype
    ((2, 3), dtype('float32'))
    """
    rng = np.random.default_rng(0)
    kind = np.dtype(dtype)
    x = rng.standard_normal(size=shape, dtype=kind.type)
    x *= kind.type(_SCALE)
    return x


def labels(rows: int, classes: int) -> Any:
    """``rows`` int64 class indices in ``[0, classes)``, seeded.

    Examples
    --------
    >>> y = labels(4, 3)
    >>> y.dtype, bool(((0 <= y) & (y < 3)).all())
    (dtype('int64'), True)
    """
    return np.random.default_rng(1).integers(0, classes, size=rows, dtype=np.int64)


def log_operands(n: int, dtype: str) -> tuple[Any, Any]:
    """Two ``(n, n)`` operands of ``logmatmulexp``: log-values, seeded.

    Examples
    --------
    >>> a, b = log_operands(3, "float32")
    >>> a.shape, b.dtype
    ((3, 3), dtype('float32'))
    """
    rng = np.random.default_rng(2)
    kind = np.dtype(dtype).type
    a = rng.standard_normal(size=(n, n), dtype=kind) * kind(_SCALE)
    b = rng.standard_normal(size=(n, n), dtype=kind) * kind(_SCALE)
    return a, b
