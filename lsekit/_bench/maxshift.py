"""The max-shift formulas, written once for every NumPy-like namespace.

NumPy, CuPy, ``dask.array`` and ``jax.numpy`` spell these operations alike,
so each backend passes its own module as ``xp`` and gets the formula written
in its library: subtract the maximum, exponentiate, sum, take the log. This
is what most code does by hand, and what lsekit's extra accuracy is measured
against. PyTorch spells them differently: see `torch_cases`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

__all__ = ["cross_entropy", "log_softmax", "logmatmulexp", "logsumexp", "softmax"]


def logsumexp(xp: ModuleType, x: Any) -> Any:
    """``max + log(sum(exp(x - max)))`` over the last axis.

    Examples
    --------
    >>> import numpy as np
    >>> float(logsumexp(np, np.array([1000.0, 1000.0])))
    1000.6931471805599
    """
    m = xp.max(x, axis=-1, keepdims=True)
    return xp.log(xp.sum(xp.exp(x - m), axis=-1)) + m[..., 0]


def softmax(xp: ModuleType, x: Any) -> Any:
    """``exp(x - max) / sum(exp(x - max))`` over the last axis."""
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def log_softmax(xp: ModuleType, x: Any) -> Any:
    """``(x - max) - log(sum(exp(x - max)))`` over the last axis."""
    s = x - xp.max(x, axis=-1, keepdims=True)
    return s - xp.log(xp.sum(xp.exp(s), axis=-1, keepdims=True))


def cross_entropy(xp: ModuleType, x: Any, y: Any) -> Any:
    """Mean of ``logsumexp(x) - x[y]`` over the rows, classes on the last axis.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.log(np.array([[0.25, 0.75], [0.5, 0.5]]))
    >>> round(float(cross_entropy(np, x, np.array([1, 0]))), 6)
    0.490415
    """
    picked: Any
    if hasattr(xp, "take_along_axis"):
        picked = xp.take_along_axis(x, y[:, None], axis=-1)[:, 0]
    else:
        # dask.array has no take_along_axis: pick the target with a mask.
        hit = xp.arange(x.shape[-1])[None, :] == y[:, None]
        picked = xp.sum(xp.where(hit, x, 0), axis=-1)
    return xp.mean(logsumexp(xp, x) - picked)


def logmatmulexp(xp: ModuleType, a: Any, b: Any) -> Any:
    """``ma + mb + log(exp(a - ma) @ exp(b - mb))``, one matrix product.

    ``ma`` holds the row maxima of ``a`` and ``mb`` the column maxima of
    ``b``. Where a row's and a column's maxima fall at different ``k`` and
    far apart, the product underflows and this returns ``-inf``; lsekit
    repairs those cells, and on the benchmark's inputs there are none.
    """
    ma = xp.max(a, axis=-1, keepdims=True)
    mb = xp.max(b, axis=-2, keepdims=True)
    return xp.log(xp.matmul(xp.exp(a - ma), xp.exp(b - mb))) + ma + mb
