"""The C kernel of float32 rows on the CPU (``_kernel.c``), where it was built.

One call does what the blocked kernels (``_blocked``) do in a dozen of the
library's operations and a pass over memory each: every row's maximum
``m``, ``t``, the float64 sum of its terms ``exp(x - m)`` but one
maximum's, and the normalised rows, three passes over a row in cache. Its
terms are exact in their argument (the shift is formed in float64) and
within ``2**-32`` of the exponential, relative; its sum is float64's, as
is the ``(x - m) - log1p(t)`` of ``log_softmax``, rounded once. Rows whose
maximum is not finite are left to the caller; the others are certified
(``_blocked`` still checks the rounding of a ``logsumexp`` near 0).

The rows are split among threads: PyTorch's own OpenMP team, whose
threads wait for work between its operations (threads of our own would
compete with them for the cores), and one thread for NumPy, whose own
functions take one.

``ops`` is the library's module (``numpy.py``, ``torch.py``), as in
``_blocked``. JAX calls the same kernel from XLA, as a custom call whose
handlers the compiled module gives (see ``jax.py``).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

from . import _bounds

__all__ = [
    "cross_entropy",
    "fits",
    "logsumexp_now",
    "rows",
    "run",
    "slope",
    "status",
    "ulps",
]

# False sends float32 rows to the other kernels (``_widened``,
# ``_blocked``), which the tests exercise with it.
ENABLED = True

# Entries below which a call stays on one thread: a team's start costs
# microseconds.
PARALLEL = 1 << 15

_KINDS = {"logsumexp": 0, "log_softmax": 1, "softmax": 2, "slope": 3}

_kernel: ModuleType | None = None
_loaded = False
# The libraries whose OpenMP team the kernel was given.
_pooled: set[str] = set()


def _load() -> ModuleType | None:
    """The compiled module, or None where it was not built."""
    global _kernel, _loaded
    if not _loaded:
        try:
            _kernel = importlib.import_module(f"{__package__}._kernel")
        except ImportError:
            _kernel = None
        _loaded = True
    return _kernel


def status() -> str:
    """``"C kernel built"`` or ``"no C kernel"``, for reports."""
    return "no C kernel" if _load() is None else "C kernel built"


def fits(ops: ModuleType, x2: Any) -> bool:
    """Whether the kernel computes the rows ``x2``: float32, and built."""
    return bool(ENABLED and ops.bits(x2) == 32 and _load() is not None)


def ulps(n: int) -> float:
    """The relative error of the kernel's ``t`` over rows of ``n`` entries,
    in float32 ulps (``2**-23``): its terms' ``2**-33`` and their float64
    sum's ``n 2**-53``, which ``_bounds.rounding_factor`` takes for the
    terms' error. The blocked kernels' float32 exponentials are off by an
    ulp or more: the kernel's results near 0 are recomputed far less
    often."""
    return 2.0**-10 + n * 2.0**-30


def _threads(ops: ModuleType, entries: int) -> tuple[int, bool]:
    """The threads to split ``entries`` entries' rows among, and whether
    they are the library's OpenMP team."""
    if entries < PARALLEL:
        return 1, False
    threads, team = ops.threads()
    if team is not None and ops.__name__ not in _pooled:
        kernel = _load()
        assert kernel is not None
        kernel.pool(*team)
        _pooled.add(ops.__name__)
    return threads, team is not None


def run(ops: ModuleType, x2: Any, kind: str, sums: bool = False) -> tuple[Any, ...]:
    """``(out, m, t, left, total)`` of the C-contiguous float32 rows ``x2``:
    those of ``rows``, with ``left`` the number of rows not done in place
    of their mask, which costs a small batch's call a microsecond more."""
    np = sys.modules["numpy"]
    kernel = _load()
    assert kernel is not None
    nrows, n = x2.shape
    out = None if kind == "logsumexp" else ops.empty_like(x2)
    m, t = np.empty(nrows), np.empty(nrows)
    total = np.empty(nrows) if sums else None
    threads, shared = _threads(ops, nrows * n)
    left = kernel.rows(
        ops.memory(x2),
        None if out is None else ops.memory(out),
        m,
        t,
        total,
        n,
        _KINDS[kind],
        threads,
        shared,
    )
    return out, m, t, left, total


def logsumexp_now(ops: ModuleType, x2: Any) -> tuple[Any, Any, Any] | None:
    """``(out, m, low)`` of ``_blocked.logsumexp`` for the C-contiguous
    float32 rows ``x2``, the same values, where it recomputes no row; None
    where it would. Without its checks of rows whose maximum is not
    finite, which cost a small batch's call more than a tenth of it."""
    np = sys.modules["numpy"]
    _, m, t, left, _ = run(ops, x2, "logsumexp")
    if left:
        return None
    low = np.log1p(t)
    out = low + m
    # A row with one dominant term, its result near 0: see _blocked.
    k = _bounds.rounding_factor(ulps(x2.shape[1]), 32)
    if not (np.abs(out) * (1.0 + t) >= k * t).all():
        return None
    return out, m, low


def rows(
    ops: ModuleType, x2: Any, kind: str, sums: bool
) -> tuple[Any, Any, Any, Any, Any]:
    """``(out, m, t, ok, total)`` of the C-contiguous float32 rows ``x2``, as
    ``_blocked._rows`` gives them: ``out`` the normalised rows (None for
    ``"logsumexp"``), ``m`` and ``t`` in float64, ``ok`` the rows done,
    ``total`` with ``sums`` each row's sum of entries in float64."""
    out, m, t, _, total = run(ops, x2, kind, sums)
    return out, m, t, sys.modules["numpy"].isfinite(m), total


def cross_entropy(
    ops: ModuleType, x2: Any, target: Any, ignore: int | None, smoothing: float
) -> tuple[Any, Any, Any, Any, Any]:
    """``_blocked.cross_entropy``'s ``(loss, counted, redo, m, low)`` of the
    C-contiguous float32 rows ``x2`` and their class indices ``target`` (a
    NumPy array), each row's loss finished in C: the indexing, the sums
    and the certification of a loss cost a call of their own each in the
    library, more than the kernel's pass over a small batch."""
    np = sys.modules["numpy"]
    kernel = _load()
    assert kernel is not None
    nrows, n = x2.shape
    c = np.ascontiguousarray(target, dtype=np.int64)
    loss, m, low = np.empty(nrows), np.empty(nrows), np.empty(nrows)
    ok = np.empty(nrows, dtype=bool)
    total = np.empty(nrows) if smoothing else None
    threads, shared = _threads(ops, nrows * n)
    left = kernel.loss(
        ops.memory(x2),
        c,
        loss,
        m,
        low,
        ok,
        total,
        n,
        ignore,
        smoothing,
        threads,
        shared,
    )
    counted = None if ignore is None else c != ignore
    return loss, counted, (~ok if left else None), m, low


def slope(ops: ModuleType, x2: Any, m: Any, scale: Any) -> Any:
    """``exp(x - m) scale`` of the C-contiguous float32 rows ``x2``, in
    float32, ``m`` each row's maximum and ``scale`` a float64 factor per
    row (NumPy vectors): the closed-form gradients' rows of ``logsumexp``
    and the loss (``_autograd``), in one pass where the library's
    operations take three, the shift exact and ``exp`` the sums' own."""
    np = sys.modules["numpy"]
    kernel = _load()
    assert kernel is not None
    out = ops.empty_like(x2)
    threads, shared = _threads(ops, x2.shape[0] * x2.shape[1])
    kernel.rows(
        ops.memory(x2),
        ops.memory(out),
        np.ascontiguousarray(m, dtype=np.float64),
        np.ascontiguousarray(scale, dtype=np.float64),
        None,
        x2.shape[1],
        _KINDS["slope"],
        threads,
        shared,
    )
    return out
