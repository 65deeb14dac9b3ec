"""NumPy: the primitives of the blocked row kernels (``_blocked``), whose
float32 rows the C kernel of ``_fused`` takes where it was built.

Written in place through the ufuncs' ``out=`` arguments: a fresh array's
first touch costs as much as the arithmetic on it.
"""

from __future__ import annotations

import contextlib
import sys
from types import ModuleType
from typing import Any

from . import _blocked, _bounds, _widened

__all__ = [
    "accepts",
    "as_rows",
    "cast",
    "cross_entropy",
    "eligible",
    "logsumexp",
    "normalised",
    "now",
    "sign",
    "transpose",
]

# The largest error of NumPy's exp, in ulps, by the dtype's bits: the
# vectorised float32 exp reaches 2.4 (measured over [-104, 0] and [-87,
# 88]); float64's stays within one.
EXP_ULPS = {32: 2.5, 64: 1.0}

# Bytes of one block's buffer: within a core's L2 cache.
BLOCK_BYTES = 1 << 19

# Entries of the largest float32 array computed in float64 at once
# (``_widened``).
SMALL = 1 << 12


def accepts(x: Any) -> bool:
    """Whether ``x`` is an array these kernels run on."""
    np = sys.modules.get("numpy")
    return np is not None and type(x) is np.ndarray


def eligible(x: Any, func: str) -> bool:
    """Whether the kernels compute ``func`` of ``x``: float32 or float64,
    not empty."""
    return bool(x.dtype.kind == "f" and x.itemsize >= 4 and x.size > 0)


def now(x: Any) -> bool:
    """Whether the kernels can compute ``x``'s rows in this call: always."""
    return True


def transpose(x: Any, perm: tuple[int, ...]) -> Any:
    """``x`` with its axes in the order ``perm`` (a view)."""
    return x.transpose(perm)


def as_rows(x: Any, n: int) -> Any:
    """``x`` as C-contiguous rows of ``n`` entries, copied only if needed."""
    if not x.flags.c_contiguous:
        x = sys.modules["numpy"].ascontiguousarray(x)
    return x.reshape(-1, n)


def logsumexp(x2: Any, exact: Any = None) -> tuple[Any, Any]:
    """``logsumexp`` of the rows by ``_widened`` where they fit, by
    ``_blocked.direct`` for other float32 rows, ``_blocked.logsumexp``
    otherwise; the caller recomputes the rows."""
    ops = sys.modules[__name__]
    if _widened.fits(ops, x2):
        return _widened.logsumexp(ops, x2)[:2]
    if x2.dtype.itemsize == 4:
        return _blocked.direct(ops, x2)
    return _blocked.logsumexp(ops, x2)[:2]


def normalised(x2: Any, kind: str, exact: Any = None) -> tuple[Any, Any]:
    """``normalised`` of ``_widened`` or ``_blocked``; the caller
    recomputes the rows."""
    ops = sys.modules[__name__]
    if _widened.fits(ops, x2):
        return _widened.normalised(ops, x2, kind)
    return _blocked.normalised(ops, x2, kind)


def sign(out: Any) -> Any:
    """The sign of a sum of exponentials from its log: 1, 0 for an empty
    sum (``-inf``), NaN where the log is NaN."""
    np = sys.modules["numpy"]
    return np.where(np.isnan(out), out, out > -np.inf).astype(out.dtype)


def cast(x: Any, dtype: Any) -> Any:
    """``x`` in ``dtype``, not copied if it already is."""
    return x.astype(dtype, copy=False)


# The primitives of ``_blocked``.


def lib() -> ModuleType:
    """The library, whose ``exp``, ``log1p`` and ``abs`` serve as they are."""
    return sys.modules["numpy"]


def quiet() -> contextlib.AbstractContextManager[Any]:
    """Floating-point warnings off: rows that overflow are recomputed."""
    state: contextlib.AbstractContextManager[Any]
    state = sys.modules["numpy"].errstate(all="ignore")
    return state


def bits(x: Any) -> int:
    return int(x.itemsize * 8)


def itemsize(x: Any) -> int:
    return int(x.itemsize)


def maxima(x2: Any) -> tuple[Any, Any]:
    """Each row's first maximum (NaN counting as one): index, float64 value.
    NumPy's argmax costs no more than its max."""
    np = sys.modules["numpy"]
    idx = np.argmax(x2, axis=1)
    return idx, x2[np.arange(x2.shape[0]), idx].astype(np.float64)


def exclude(e: Any, at: Any, c0: int, whole: bool) -> None:
    """Zero, in the block ``e`` (columns from ``c0``; the rows ``whole``),
    each row's maximum, at the column ``at``; nothing is left to
    subtract."""
    rows, cols = e.shape
    if whole:
        e[sys.modules["numpy"].arange(rows), at] = 0.0
        return None
    hit = (at >= c0) & (at < c0 + cols)
    if hit.all():
        e[sys.modules["numpy"].arange(rows), at - c0] = 0.0
    elif hit.any():
        e[hit.nonzero()[0], at[hit] - c0] = 0.0
    return None


def threads() -> tuple[int, Any]:
    """The threads of ``_fused``'s kernel, and no OpenMP team to run them
    on: one, as NumPy's own functions take."""
    return 1, None


def host(x: Any) -> Any:
    """``x`` as a NumPy array: itself."""
    return x


def memory(x: Any) -> Any:
    """What ``_fused``'s kernel takes for the memory of the C-contiguous
    ``x``: the array itself, a buffer."""
    return x


def from_host(a: Any) -> Any:
    """A NumPy array as this library's: itself."""
    return a


def graded(x2: Any, target: Any, how: Any, box: list[Any]) -> Any:
    """``box[0]``, the kernels' result for the rows ``x2``, as it is:
    nothing records a gradient."""
    return box[0]


def as_float32(v: Any) -> Any:
    """A float64 result (an array or a scalar) in float32."""
    np = sys.modules["numpy"]
    return np.asarray(v, dtype=np.float32)


def indices(target: Any, n: int) -> Any:
    """``target`` as a vector of ``n`` int64 class indices, as it is, or
    None where it is not one."""
    np = sys.modules["numpy"]
    if type(target) is np.ndarray and target.dtype == np.int64 and target.shape == (n,):
        return target
    return None


def empty_like(x: Any) -> Any:
    return sys.modules["numpy"].empty_like(x)


def empty(shape: tuple[int, int], like: Any) -> Any:
    return sys.modules["numpy"].empty(shape, dtype=like.dtype)


def zeros64(n: int) -> Any:
    np = sys.modules["numpy"]
    return np.zeros(n, dtype=np.float64)


def floored(low: float, bits: int) -> bool:
    """Whether ``exp_into`` should raise a block's entries to ``FLOOR``,
    from the first block's smallest entry ``low``: where exp would be
    subnormal, which costs NumPy's loops 5 to 80 times a normal one. Its
    float32 exp of -inf, and of entries whose exp is 0, costs no more than
    a normal one, so that a mask's -inf would pay for the pass in vain."""
    floor = _bounds.FLOOR[bits]
    return bool(-104.0 < low < floor) if bits == 32 else bool(low < floor)


def minimum(x: Any) -> float:
    """The smallest entry of ``x`` (NaN if it holds one)."""
    return float(x.min())


def exp_into(x: Any, out: Any, floor: float | None) -> Any:
    """``exp(x)`` into ``out``, of ``x`` raised to ``floor`` first unless
    that is None."""
    np = sys.modules["numpy"]
    if floor is None:
        return np.exp(x, out=out)
    np.maximum(x, floor, out=out)
    return np.exp(out, out=out)


def put(x: Any, idx: Any, value: Any) -> None:
    """``x[i, idx[i]] = value`` (or ``value[i]``) in every row ``i``."""
    x[sys.modules["numpy"].arange(x.shape[0]), idx] = value


def sum64(e: Any) -> Any:
    """Row sums, accumulated in float64."""
    np = sys.modules["numpy"]
    if e.dtype == np.float64:
        # Pairwise: einsum's running sum would add an ulp per thousand
        # terms, which float32's terms, summed in float64, never reach.
        return e.sum(axis=1)
    return np.einsum("ij->i", e, dtype=np.float64)


def shifted_into(x: Any, m: Any, low: Any, out: Any) -> None:
    """``(x - m) - low`` into ``out``, in ``out``'s dtype: a float64 operand
    would send NumPy through its slower mixed-dtype loops. For float32,
    ``x - m``, the cast ``low`` and the difference each round: within 1.5
    ulps of the result (both terms are <= 0), plus ``low``'s own error."""
    np = sys.modules["numpy"]
    np.subtract(x, m.astype(out.dtype), out=out)
    np.subtract(out, low.astype(out.dtype), out=out)


def divide_into(a: Any, b: Any, out: Any) -> None:
    """``a / b`` into ``out``, in ``out``'s dtype (``b`` rounded to it)."""
    sys.modules["numpy"].divide(a, b.astype(out.dtype), out=out)


def rows(x2: Any, at: Any) -> Any:
    """The rows ``at`` (NumPy indices) of ``x2``, as a C-contiguous copy."""
    return x2[at]


def pick(x2: Any, idx: Any) -> Any:
    """``x2[i, idx[i]]`` of every row ``i``, in float64."""
    np = sys.modules["numpy"]
    return x2[np.arange(x2.shape[0]), idx].astype(np.float64)


def cross_entropy(
    x2: Any, target: Any, ignore: int | None, smoothing: float, exact: Any = None
) -> Any:
    """``cross_entropy`` of ``_widened`` or ``_blocked``; the caller
    recomputes the rows."""
    ops = sys.modules[__name__]
    if _widened.fits(ops, x2):
        return _widened.cross_entropy(ops, x2, target, ignore, smoothing)[:3]
    return _blocked.cross_entropy(ops, x2, target, ignore, smoothing)[:3]
