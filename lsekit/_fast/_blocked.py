"""The row kernels, written once over each library's few primitives.

A block of rows (or a slice of one long row) is exponentiated and summed in
a small reused buffer: one pass over memory per step, with every temporary
in cache, and no array of the input's size beyond the output. The
exponentials are those of ``x`` itself, unshifted (see ``_bounds``):
``x - m`` would round, by up to ``|x - m|`` ulps of a term far below a
maximum of another binade, where ``exp(x)`` is exact in its argument. The
maximum's exponential divides the float64 sum afterwards.

``ops`` is a library's module (``numpy.py``, ``torch.py``), with the same
primitives in each; ``ops.lib()`` the library itself.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from . import _bounds, _fused

__all__ = ["cross_entropy", "direct", "logsumexp", "normalised"]

# A sixteenth of an ulp of each dtype, relative.
_SIXTEENTH = {32: 2.0**-28, 64: 2.0**-57}


def _block(a: Any, r0: int, r1: int, c0: int = 0, c1: int | None = None) -> Any:
    """``a[r0:r1, c0:c1]``, or ``a`` itself when that is all of it: a view
    costs PyTorch microseconds, and a small array is a single block."""
    rows, cols = a.shape
    if r0 == 0 and r1 == rows and c0 == 0 and c1 in (None, cols):
        return a
    return a[r0:r1, c0:c1]


def _geometry(ops: ModuleType, x2: Any, kind: str) -> tuple[int, int, Any, Any]:
    """``(step_r, step_c, e_buf, floor)``: the rows and columns of a block,
    its reused buffer, and the floor that ``ops.exp_into`` raises entries
    to (None: none).

    Entries whose exp is not a normal number (a mask's -inf, the
    log-probabilities far below a row's maximum) can cost exp many times a
    normal one: where the first block's smallest entry says so
    (ops.floored), every block's entries are raised to FLOOR first, for a
    pass of its own. softmax writes those exponentials out, and keeps
    them.
    """
    nrows, n = x2.shape
    width = max(1, ops.BLOCK_BYTES // ops.itemsize(x2))
    step_r = max(1, width // n)
    step_c = min(n, width)
    e_buf = ops.empty((min(step_r, nrows), step_c), x2)
    floor = None
    if kind != "softmax":
        below = ops.minimum(_block(x2, 0, min(nrows, step_r), 0, step_c))
        if ops.floored(below, ops.bits(x2)):
            floor = _bounds.FLOOR[ops.bits(x2)]
    return step_r, step_c, e_buf, floor


def _rows(
    ops: ModuleType, x2: Any, kind: str, sums: bool = False
) -> tuple[Any, Any, Any, Any, Any]:
    """``(out, m, t, ok, total)`` for each row of a C-contiguous 2-D float
    array.

    ``m`` (float64) holds the row maxima; ``t`` (float64) the sum of ``exp(x
    - m)`` over every entry but one maximum, which is ``S - 1`` without its
    cancellation; ``out`` the normalised rows, or None for ``"logsumexp"``;
    ``ok`` the rows that ``_bounds`` certifies (the others hold meaningless
    values); ``total``, with ``sums``, the sum of each row's entries in
    float64, taken while its blocks are in cache (None otherwise).
    """
    if _fused.fits(ops, x2):
        return _fused.rows(ops, x2, kind, sums)
    lib = ops.lib()
    nrows, n = x2.shape
    out = None if kind == "logsumexp" else ops.empty_like(x2)
    m = ops.zeros64(nrows)
    s = ops.zeros64(nrows)
    total = ops.zeros64(nrows) if sums else None
    top = None
    subtracted = whole_sum = False
    step_r, step_c, e_buf, floor = _geometry(ops, x2, kind)
    whole = step_c == n
    for r0 in range(0, nrows, step_r):
        r1 = min(nrows, r0 + step_r)
        # The maxima of a block of whole rows are taken while it is in
        # cache, on its way to the exponentials: one pass over memory.
        at, m_b = ops.maxima(_block(x2, r0, r1))
        m[r0:r1] = m_b
        subtracted = at is None
        whole_sum = subtracted and kind == "softmax"
        scale = lib.exp(m_b)
        for c0 in range(0, n, step_c):
            c1 = min(n, c0 + step_c)
            if total is not None:
                total[r0:r1] += ops.sum64(_block(x2, r0, r1, c0, c1))
            e = ops.exp_into(
                _block(x2, r0, r1, c0, c1),
                _block(e_buf, 0, r1 - r0, 0, c1 - c0),
                floor,
            )
            # One maximum per row leaves the sum: its share is exactly 1
            # after the division, and adding it would round away the terms
            # below eps. ops.exclude takes it out of e, or gives what to
            # subtract from the sum. softmax divides by the whole sum,
            # whose relative rounding its quotients carry as it is: with
            # no index to zero, the sum keeps every term.
            largest = None if whole_sum else ops.exclude(e, at, c0, whole)
            if largest is not None:
                if top is None:
                    top = ops.zeros64(nrows)
                top[r0:r1] = lib.maximum(top[r0:r1], largest)
            if whole:
                s[r0:r1] = ops.sum64(e)
            else:
                s[r0:r1] += ops.sum64(e)
            if out is not None and whole:
                t = _others(s[r0:r1], top, r0, r1, scale, whole_sum)
                _finish(
                    ops, _block(out, r0, r1), _block(x2, r0, r1), e, m_b, scale, t, kind
                )
                if kind == "softmax" and at is not None:
                    # The maximum taken out of e above.
                    ops.put(_block(out, r0, r1), at, 1.0 / (1.0 + t))
        if out is not None and not whole:
            # A row longer than a block: normalised slice by slice, once its
            # sum is complete.
            t = _others(s[r0:r1], top, r0, r1, scale, whole_sum)
            for c0 in range(0, n, step_c):
                c1 = min(n, c0 + step_c)
                x = x2[r0:r1, c0:c1]
                e = None
                if kind == "softmax":
                    e = ops.exp_into(x, e_buf[:, : c1 - c0], None)
                _finish(ops, out[r0:r1, c0:c1], x, e, m_b, scale, t, kind)
    if top is not None:
        s -= top
    t = s / lib.exp(m)
    # A sum that holds the maximum's term: each block's, then the blocks'
    # sums added one by one. Where softmax keeps it (whole_sum), t is not
    # read, and the sum's rounding, of 2**-46 at most relative, is its
    # quotients'.
    depth = ops.SUM_DEPTH + -(-n // step_c) if subtracted and not whole_sum else None
    ok = _bounds.certified(m, t, s, n, ops.bits(x2), depth)
    if kind == "softmax":
        # A numerator exp(x) below the smallest normal number has lost
        # digits, which the quotient keeps where the maximum is negative;
        # and the divisor exp(m) (1 + t) = exp(m) + s, rounded to the
        # dtype, overflows near the top of exp's range on a long row.
        divisor = s if whole_sum else lib.exp(m) + s
        ok &= (m >= 0.0) & (divisor < _bounds.LARGEST[ops.bits(x2)])
    return out, m, t, ok, total


def _others(s: Any, top: Any, r0: int, r1: int, scale: Any, whole_sum: bool) -> Any:
    """``t`` of the rows ``r0:r1`` from their sums ``s``: with ``whole_sum``
    every term's (softmax's divisor ``scale (1 + t)`` is then ``s``), or
    those of all but the maximum, less the largest ``top`` where that is
    not None."""
    if whole_sum:
        return s / scale - 1.0
    return (s if top is None else s - top[r0:r1]) / scale


def _finish(
    ops: ModuleType,
    out: Any,
    x: Any,
    e: Any,
    m: Any,
    scale: Any,
    t: Any,
    kind: str,
) -> None:
    """Write the normalised entries of a block into ``out``."""
    if kind == "softmax":
        # exp(x) / (exp(m) (1 + t)).
        ops.divide_into(e, (scale * (1.0 + t))[:, None], out)
    else:
        # (x - m) - log1p(t): both terms are <= 0, and nothing cancels.
        ops.shifted_into(x, m[:, None], ops.lib().log1p(t)[:, None], out)


def _split(ops: ModuleType, x2: Any, sums: bool) -> tuple[Any, Any, Any, Any, Any]:
    """``(m, t, low, ok, total)``: each row's maximum, ``t`` and ``low =
    log1p(t)`` in float64, so that the row's log-sum-exp is ``m + low``, the
    rows that ``_bounds`` certifies, and with ``sums`` each row's sum of
    entries (see ``_rows``). Called inside ``ops.quiet()``."""
    _, m, t, ok, total = _rows(ops, x2, "logsumexp", sums)
    return m, t, ops.lib().log1p(t), ok, total


def direct(ops: ModuleType, x2: Any) -> tuple[Any, Any]:
    """``(out, redo)``: each row's log-sum-exp in float64, and a mask of the
    rows to recompute exactly (None when there are none), for float32
    rows: ``log(s)``, ``s`` the float64 sum of the unshifted ``exp(x)``,
    in one pass over the rows, where that holds (see
    ``_bounds.direct_low``), and ``logsumexp``'s elsewhere, on those rows
    alone. Where ``_fused`` applies, its maxima cost no pass of their own,
    and ``logsumexp`` takes every row."""
    if _fused.fits(ops, x2):
        return logsumexp(ops, x2)[:2]
    lib = ops.lib()
    nrows, n = x2.shape
    s = ops.zeros64(nrows)
    step_r, step_c, e_buf, floor = _geometry(ops, x2, "logsumexp")
    with ops.quiet():
        for r0 in range(0, nrows, step_r):
            r1 = min(nrows, r0 + step_r)
            for c0 in range(0, n, step_c):
                c1 = min(n, c0 + step_c)
                e = ops.exp_into(
                    _block(x2, r0, r1, c0, c1),
                    _block(e_buf, 0, r1 - r0, 0, c1 - c0),
                    floor,
                )
                s[r0:r1] += ops.sum64(e)
        out = lib.log(s)
        held = _bounds.direct(out, s, n, ops.EXP_ULPS[32])
    if bool(held.all()):
        return out, None
    at = lib.flatnonzero(~held)
    rest, redo_rest = logsumexp(ops, ops.rows(x2, at))[:2]
    out[at] = rest
    redo = None
    if redo_rest is not None:
        redo = lib.zeros(nrows, dtype=bool)
        redo[at] = redo_rest
    return out, redo


def logsumexp(ops: ModuleType, x2: Any) -> tuple[Any, Any, Any, Any]:
    """``(out, redo, m, low)``: each row's log-sum-exp in float64, a mask of
    the rows to recompute exactly (None when there are none), and the two
    terms of ``out = m + low`` (see ``_split``), for the gradient. The rows
    to recompute are those that ``_bounds`` does not certify, and those
    where the kernel's rounding could reach half an ulp of the result (one
    dominant term, ``out`` near 0).
    """
    bits = ops.bits(x2)
    with ops.quiet():
        m, t, low, ok, _ = _split(ops, x2, False)
        out = low + m
        fused = _fused.fits(ops, x2)
        ulps = _fused.ulps(x2.shape[1]) if fused else ops.EXP_ULPS[bits]
        k = _bounds.rounding_factor(ulps, bits)
        size = ops.lib().abs(out)
        # t / (1 + t) < 1: rows with |out| >= k need no closer look.
        if bool(ok.all()) and bool(size.min() >= k):
            return out, None, m, low
        ok &= size * (1.0 + t) >= k * t
    return out, (None if bool(ok.all()) else ~ok), m, low


def cross_entropy(
    ops: ModuleType, x2: Any, target: Any, ignore: int | None, smoothing: float
) -> tuple[Any, Any, Any, Any, Any]:
    """``(loss, counted, redo, m, low)``: each row's ``logsumexp -
    x[target]`` in float64, with the target smoothed by ``smoothing``, 0
    where the target is ``ignore``; the mask of the counted rows (None:
    all); a mask of the rows to recompute exactly, those that ``_bounds``
    does not certify (None when there are none); and the two terms of each
    row's log-sum-exp ``m + low`` (see ``_split``), for the gradient.

    Written ``(m - x[target]) + log1p(t)``: two non-negative terms, so that
    nothing cancels, and a confident prediction's tiny loss keeps its
    digits. Smoothed, ``(1 - eps) (m - x[target]) + log1p(t) + eps / n
    sum(m - x)``, three.
    """
    if _fused.fits(ops, x2):
        return _fused.cross_entropy(ops, x2, target, ignore, smoothing)
    lib = ops.lib()
    counted = None if ignore is None else target != ignore
    safe = target if counted is None else lib.where(counted, target, 0)
    with ops.quiet():
        m, _, low, ok, total = _split(ops, x2, bool(smoothing))
        gap = m - ops.pick(x2, safe)
        if smoothing:
            n = x2.shape[1]
            # sum(m - x) = n m - sum(x): n m is exact for float32 m, and
            # sum(x) rounds by (n - 1) ulps of sum |x| <= n |m| + spread at
            # most, in any order, which the loss carries as eps 2**-53 (n |m|
            # + spread). The rows where that could reach a sixteenth of an
            # ulp of the loss are recomputed (those of logits far from 0
            # and close together, and a -inf entry's infinite loss).
            spread = n * m - total
            loss = (1.0 - smoothing) * gap + low + (smoothing / n) * spread
            bound = smoothing * 2.0**-52 * (n * lib.abs(m) + spread)
            ok &= (bound <= _SIXTEENTH[ops.bits(x2)] * loss) & (spread < lib.inf)
        else:
            loss = gap + low
    if counted is not None:
        loss = lib.where(counted, loss, 0.0)
    return loss, counted, (None if bool(ok.all()) else ~ok), m, low


def normalised(ops: ModuleType, x2: Any, kind: str) -> tuple[Any, Any]:
    """``(out, redo)``: the rows' ``log_softmax`` or ``softmax`` (``kind``),
    and a mask of the rows that ``_bounds`` does not certify (None if none).
    """
    with ops.quiet():
        out, _, _, ok, _ = _rows(ops, x2, kind)
    return out, (None if bool(ok.all()) else ~ok)
