"""The row kernels for small float32 arrays: in float64, at once.

On an array of a few thousand entries (a hidden Markov model's step over
its states, the logits of one short sequence) the arithmetic takes a few
microseconds and the blocked kernels' steps cost far more: each is an
operation of its own, a microsecond in NumPy and several in PyTorch, and
the rows that one pass cannot certify (``_bounds``) take a second path or
a third. Here the float32 entries are converted to float64, where the
max-shift loses nothing that float32 can show, and every row takes one
path in NumPy's operations (on a tensor's own memory for PyTorch).

The shift ``x - m`` of float32 entries rounds in float64 by at most
``2**-53 |x - m|`` (it is exact where the two are within ``2**29`` of each
other), which moves a term ``exp(x - m)`` above float64's underflow
(``|x - m| < 745``) by under ``2**-43``, relative; float64's ``exp`` adds
an ulp, the sum ``n`` of them. Each row's maximum is taken out of the
sum, so that ``t``, the sum of the other terms (ties at the maximum adding
1 each, exactly), keeps the terms far below it (``logsumexp([0, -40])`` is
``4.2e-18``). Its terms are positive: ``t`` is within about ``2**-42`` of
itself, relative, and so are ``log1p(t)`` and every result, ``m +
log1p(t)``, ``(x - m) - log1p(t)``, ``exp(x - m) / (1 + t)`` and ``(m -
x[target]) + log1p(t)`` (no term of which cancels another), relative to
the larger of their terms: far below float32's half ulp (``2**-24``), so
that the final rounding to float32 alone shows.

Rows whose maximum is not finite (``inf``, ``-inf`` everywhere, NaN), and
losses that are not, go back to the caller to recompute.

``ops`` is the library's module (``numpy.py``, ``torch.py``), as in
``_blocked``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from . import _fused

__all__ = ["cross_entropy", "fits", "logsumexp", "normalised"]


def fits(ops: ModuleType, x2: Any) -> bool:
    """Whether ``x2`` is float32 rows small enough for these kernels
    (``ops.SMALL`` entries at most), where ``_fused``'s kernel does not
    take them."""
    return bool(
        ops.bits(x2) == 32
        and x2.shape[0] * x2.shape[1] <= ops.SMALL
        and not _fused.fits(ops, x2)
    )


def _split(ops: ModuleType, x2: Any) -> tuple[Any, Any, Any, Any, Any]:
    """``(d, e, m, t, ok)``: the shifted rows ``d = x - m`` and their
    ``exp(d)`` in float64, the maxima ``m``, ``t`` and the rows whose
    maximum is finite. Called inside ``ops.quiet()``."""
    lib = ops.lib()
    d = ops.host(x2).astype(lib.float64)
    m = d.max(axis=1)
    d -= m[:, None]
    e = lib.exp(d)
    top = d == 0.0
    t = lib.where(top, 0.0, e).sum(axis=1) + (top.sum(axis=1) - 1.0)
    return d, e, m, t, lib.isfinite(m)


def _redo(ok: Any) -> Any:
    return None if bool(ok.all()) else ~ok


def logsumexp(ops: ModuleType, x2: Any) -> tuple[Any, Any, Any, Any]:
    """``(out, redo, m, low)``, as ``_blocked.logsumexp``: each row's
    log-sum-exp ``m + low`` in float64, and the rows to recompute."""
    lib = ops.lib()
    with ops.quiet():
        _, _, m, t, ok = _split(ops, x2)
        low = lib.log1p(t)
        return m + low, _redo(ok), m, low


def normalised(ops: ModuleType, x2: Any, kind: str) -> tuple[Any, Any]:
    """``(out, redo)``, as ``_blocked.normalised``: the rows'
    ``log_softmax`` or ``softmax`` (``kind``) in their dtype, and the rows
    to recompute."""
    lib = ops.lib()
    with ops.quiet():
        d, e, _, t, ok = _split(ops, x2)
        # exp(x - m) / (1 + t), or (x - m) - log1p(t).
        out = e / (1.0 + t)[:, None] if kind == "softmax" else d - lib.log1p(t)[:, None]
        return ops.from_host(out.astype(ops.host(x2).dtype)), _redo(ok)


def cross_entropy(
    ops: ModuleType, x2: Any, target: Any, ignore: int | None, smoothing: float
) -> tuple[Any, Any, Any, Any, Any]:
    """``(loss, counted, redo, m, low)``, as ``_blocked.cross_entropy``:
    each row's ``(m - x[target]) + log1p(t)`` in float64, smoothed by
    ``smoothing`` (``(1 - eps) (m - x[target]) + log1p(t) + eps / n
    sum(m - x)``, three terms >= 0), 0 where the target is ``ignore``."""
    lib = ops.lib()
    counted = None if ignore is None else target != ignore
    safe = target if counted is None else lib.where(counted, target, 0)
    with ops.quiet():
        d, _, m, t, ok = _split(ops, x2)
        low = lib.log1p(t)
        gap = -d[lib.arange(d.shape[0]), safe]
        if smoothing:
            spread = -d.sum(axis=1)
            n = d.shape[1]
            loss = (1.0 - smoothing) * gap + low + (smoothing / n) * spread
        else:
            loss = gap + low
        ok &= lib.isfinite(loss)
    if counted is not None:
        loss = lib.where(counted, loss, 0.0)
    return loss, counted, _redo(ok), m, low
