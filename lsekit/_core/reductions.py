"""log-sum-exp and the normalisations built on it.

Every function here splits a slice into its maximum ``m`` and the rest::

    sum_i b_i exp(a_i) = exp(m) * (W + s),

where ``W`` sums the weights of the entries equal to ``m`` and ``s`` the
weighted ``exp(a_i - m)`` of all the others. Keeping ``W`` out of ``s`` is
what preserves the small terms: ``log(W + s)`` is evaluated as
``log1p(s + (W - 1))`` (unweighted) or ``log|W| + log1p(s / W)``, so that
``logsumexp([0, -40])`` is ``4.248e-18`` rather than ``log(1.0) == 0``, and
``log_softmax([0, -40])[0]`` is ``-4.248e-18`` rather than ``0``.

Non-finite maxima are resolved with ``where`` rather than arithmetic, so
that no ``inf - inf`` or ``log(0)`` is ever evaluated: the code raises no
floating-point warning and has no branch on array values, which keeps it
valid under ``jax.jit``, ``torch.compile`` and on Dask graphs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

__all__ = [
    "EAGER",
    "Passes",
    "compensated_parts",
    "fields",
    "log_softmax",
    "logsumexp",
    "softmax",
    "split_given",
    "sums_at_once",
]

_INF = math.inf
_NAN = math.nan


class _Split(NamedTuple):
    """A slice split into its maximum and the rest (all keepdims-shaped)."""

    m: Any  # maximum; -inf for an empty or fully masked slice
    finite: Any  # isfinite(m)
    is_max: Any  # entries equal to m (full shape)
    shifted: Any  # a - m where m is finite (full shape)
    e: Any  # exp(a - m): 1 at the maxima, 0 where m is not finite
    w: Any  # summed weight at the maxima (0 when m is -inf)
    s: Any  # summed weighted exp(a - m) over everything else
    at: Any = None  # a at the indices asked for, or None


def _two_sum_fold(xp: ModuleType, hi: Any, lo: Any) -> tuple[Any, Any]:
    """Add the two halves of the last axis with Knuth's TwoSum.

    ``hi + lo`` is preserved exactly up to the rounding of ``lo``: the
    error of each addition in ``hi`` is recovered and carried in ``lo``.
    """
    n = hi.shape[-1]
    h = n // 2
    x, y = hi[..., :h], hi[..., h : 2 * h]
    total = x + y
    y_virtual = total - x
    err = (x - (total - y_virtual)) + (y - y_virtual)
    new_lo = lo[..., :h] + lo[..., h : 2 * h] + err
    if n % 2:
        total = xp.concat([total, hi[..., 2 * h :]], axis=-1)
        new_lo = xp.concat([new_lo, lo[..., 2 * h :]], axis=-1)
    return total, new_lo


def compensated_parts(xp: ModuleType, x: Any, axis: tuple[int, ...]) -> tuple[Any, Any]:
    """``(hi, lo)``, keepdims-shaped: the sum of ``x`` over ``axis`` is
    ``hi + lo``, with the rounding of every addition in ``hi`` carried in
    ``lo``.

    A float64 sum of thousands of small terms otherwise carries up to an
    ulp of rounding into ``log1p(s)``, whose result is then that sum
    itself. The reduced axes are folded in halves with TwoSum: about
    log2(n) elementwise passes over shrinking arrays. Partial sums in this
    form add up exactly as the terms do: folding the ``hi`` and ``lo`` of
    several parts together gives the compensated sum of all their terms.
    """
    shape = tuple(x.shape)
    kept = [i for i in range(len(shape)) if i not in axis]
    n = math.prod([shape[i] for i in axis])
    keep_shape = tuple(1 if i in axis else m for i, m in enumerate(shape))
    # TwoSum turns an infinite term into inf - inf; infinities and NaN
    # skip the fold and are added back, once, to its result.
    finite = xp.isfinite(x)
    rest = xp.sum(xp.where(finite, 0.0, x), axis=axis, keepdims=True)
    if n == 0:
        return rest, xp.zeros_like(rest)
    x = xp.where(finite, x, 0.0)
    hi = xp.reshape(xp.permute_dims(x, (*kept, *axis)), (*(shape[i] for i in kept), n))
    lo = xp.zeros_like(hi)
    while hi.shape[-1] > 1:
        hi, lo = _two_sum_fold(xp, hi, lo)
    return xp.reshape(hi[..., 0], keep_shape) + rest, xp.reshape(lo[..., 0], keep_shape)


Sums = Callable[[ModuleType, tuple[Any, ...], tuple[int, ...], tuple[bool, ...]], Any]


def sums_at_once(
    xp: ModuleType,
    terms: tuple[Any, ...],
    axis: tuple[int, ...],
    compensated: tuple[bool, ...],
) -> tuple[Any, ...]:
    """``sum(t, axis, keepdims=True)`` of each of ``terms``, with
    compensation where ``compensated`` says."""
    pairs = zip(terms, compensated, strict=True)
    return tuple(_sum_at_once(xp, t, axis, c) for t, c in pairs)


def _sum_at_once(
    xp: ModuleType, x: Any, axis: tuple[int, ...], compensated: bool
) -> Any:
    if not compensated or not all(isinstance(n, int) for n in x.shape):
        return xp.sum(x, axis=axis, keepdims=True)
    hi, lo = compensated_parts(xp, x, axis)
    return hi + lo


class Passes:
    """How the functions here go over their input: at once, by default.

    The split of a slice takes its maximum, then the sums of exponentials
    shifted by it; the normalisations and the losses of every class then
    read the input once more, for their results. For an array in memory
    each step runs on the whole of it: these defaults. Dask overrides them
    (``_compat.passes``) to run each step chunk by chunk.
    """

    def split(
        self,
        xp: ModuleType,
        a: Any,
        b: Any,
        axis: tuple[int, ...],
        compensated: bool,
        at: Any,
    ) -> _Split:
        """The split of ``a`` (weights ``b``) over ``axis``; with ``at``
        (indices along the one axis reduced, keepdims-shaped), also ``a``
        there."""
        m = xp.max(a, axis=axis, keepdims=True)
        return split_given(xp, a, b, m, axis, compensated, at, sums_at_once, self.take)

    def take(self, xp: ModuleType, a: Any, at: Any, axis: int) -> Any:
        """``a`` at the indices ``at`` (in range, keepdims-shaped) along
        ``axis``, or None where ``xp`` has no ``take_along_axis``: the
        split then sums a one-hot selection with its terms."""
        if hasattr(xp, "take_along_axis"):
            return xp.take_along_axis(a, at, axis=axis)
        return None

    def sum(
        self, xp: ModuleType, x: Any, axis: tuple[int, ...], compensated: bool
    ) -> Any:
        """``sum(x, axis, keepdims=True)``, correctly rounded when
        compensated."""
        return _sum_at_once(xp, x, axis, compensated)

    def chunkwise(
        self,
        xp: ModuleType,
        f: Callable[..., Any],
        p: _Split | None,
        x: Any,
        full: tuple[Any, ...],
        small: tuple[Any, ...],
        axis: tuple[int, ...],
        compensated: bool,
        summed: bool = False,
    ) -> Any:
        """``f(xp, p, x, *full, *small)``, or its sum over ``axis`` (with
        compensation where ``compensated``) where ``summed``.

        ``full`` are arrays of the shape of ``x``, read with it; ``small``
        the results of earlier passes (keepdims-shaped). ``p`` is the split
        of ``x``, whose elementwise fields ``f`` may read, or None.
        """
        out = f(xp, p, x, *full, *small)
        return self.sum(xp, out, axis, compensated) if summed else out


EAGER = Passes()


def _sum(
    xp: ModuleType,
    x: Any,
    axis: tuple[int, ...],
    compensated: bool,
    passes: Passes = EAGER,
) -> Any:
    """``sum(x, axis, keepdims=True)``, correctly rounded when compensated."""
    return passes.sum(xp, x, axis, compensated)


def _one_hot(xp: ModuleType, x: Any, index: Any, axis: int) -> Any:
    """``x`` where its position along ``axis`` is ``index`` (keepdims-shaped),
    0 elsewhere: summed along ``axis``, the gather ``x[..., index, ...]``,
    exact because every other term of the sum is zero."""
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    classes = xp.reshape(xp.arange(x.shape[axis], dtype=index.dtype), tuple(shape))
    return xp.where(classes == index, x, 0.0)


def _unround_shift(xp: ModuleType, a: Any, m: Any, d: Any, e: Any) -> Any:
    """``exp(a - m)`` from ``e = exp(d)``, ``d`` the rounded ``a - m``.

    The subtraction rounds by up to half an ulp of ``|a - m|``: as many ulps
    of ``exp(a - m)`` as ``|a - m|`` is large (29 at ``a - m = -29``), which
    ``log1p`` passes on whole to the log-softmax of a dominant class. TwoSum
    recovers the rounding ``r`` exactly, and ``exp(d + r) = exp(d) (1 + r)``
    up to ``r**2``. An infinite ``a`` makes ``r`` NaN; its term is 0 or
    settled by the callers' masks, and gets no correction.
    """
    back = d - a
    r = (a - (d - back)) + (-m - back)
    return e + e * xp.where(xp.isfinite(r), r, 0.0)


def fields(
    xp: ModuleType, a: Any, m: Any, compensated: bool
) -> tuple[Any, Any, Any, Any]:
    """The elementwise part of the split: ``isfinite(m)``, the maxima,
    ``a - m`` and its exponential."""
    finite = xp.isfinite(m)
    # A zero shift where m is +-inf or NaN keeps inf - inf out of the
    # subtraction; those slices take their value from `m` further down.
    m0 = xp.where(finite, m, 0.0)
    shifted = a - m0
    e = xp.exp(xp.where(finite, shifted, -_INF))
    if compensated:
        e = _unround_shift(xp, a, m0, shifted, e)
    return finite, a == m, shifted, e


def split_given(
    xp: ModuleType,
    a: Any,
    b: Any,
    m: Any,
    axis: tuple[int, ...],
    compensated: bool,
    at: Any,
    sums: Sums,
    take: Callable[[ModuleType, Any, Any, int], Any] | None = None,
) -> _Split:
    """The split of ``a`` whose maxima ``m`` are known, with ``sums``
    (``sums_at_once``'s signature) to add up the terms: its results are the
    split's ``w``, ``s`` and ``at``; ``take`` (``Passes.take``'s
    signature) picks ``a`` at ``at``."""
    finite, is_max, shifted, e = fields(xp, a, m, compensated)
    present = is_max & (m > -_INF)
    # W sums e (or b * e) over the maxima: the count (or weight) of the
    # maxima in value, e being exactly 1 there, but a function of each
    # maximum for autodiff. m then drops out of every derivative (it cancels
    # as it does in exact arithmetic), instead of carrying the maxima's
    # share: PyTorch and JAX split a max's gradient equally among ties, right
    # neither for unequal weights nor for the second derivative of a tie.
    at_max = xp.where(finite, e, 1.0)
    if b is None:
        w_terms = xp.where(present, at_max, 0.0)
        terms = e
    else:
        w_terms = xp.where(present, b * at_max, 0.0)
        # An infinite weight on a vanishing term is NaN, as in SciPy;
        # writing it as NaN * 0 rather than inf * 0 raises no warning.
        terms = xp.where((e == 0) & xp.isinf(b), _NAN, b) * e
    found = [w_terms, xp.where(present, 0.0, terms)]
    picked = None
    if at is not None:
        picked = (take or EAGER.take)(xp, a, at, axis[0])
        if picked is None:
            found.append(_one_hot(xp, a, at, axis[0]))
    flags = (False, compensated, False)[: len(found)]
    w, s, *rest = sums(xp, tuple(found), axis, flags)
    if rest:
        picked = rest[0]
    return _Split(m, finite, is_max, shifted, e, w, s, picked)


def _split(
    xp: ModuleType,
    a: Any,
    axis: tuple[int, ...],
    b: Any,
    compensated: bool,
    passes: Passes = EAGER,
    at: Any = None,
) -> _Split:
    """The split of ``a`` (weights ``b``) over ``axis``; with ``at``, indices
    along the one axis reduced (keepdims-shaped), also ``a`` there."""
    return passes.split(xp, a, b, axis, compensated, at)


def _log_total(xp: ModuleType, p: _Split) -> Any:
    """``log(W + s)`` for non-negative terms; -inf where ``W + s == 0``."""
    empty = p.w == 0
    # W - 1 is exact, so the small terms in s reach log1p unrounded.
    t = xp.where(empty, 0.0, p.s + (p.w - 1.0))
    return xp.where(empty, -_INF, xp.log1p(t))


def _log_abs_signed(xp: ModuleType, p: _Split) -> tuple[Any, Any, Any]:
    """``log|W + s|``, its sign and where it is zero, for signed weights.

    The larger of ``W`` and ``s`` in magnitude is factored out, so that the
    ratio in ``log1p`` lies in [-1, 1]: it neither overflows (a tiny weight
    on the maximum) nor loses the smaller part (a dominant maximum).
    """
    w_big = xp.abs(p.w) >= xp.abs(p.s)
    big = xp.where(w_big, p.w, p.s)
    small = xp.where(w_big, p.s, p.w)
    big_zero = big == 0
    # inf / inf: the total is infinite when the signs agree and NaN
    # (inf - inf) when they do not. The NaN is a constant, not small * NaN,
    # whose derivative would turn the zero cotangent of the discarded branch
    # into a NaN gradient.
    both_inf = xp.isinf(big) & xp.isinf(small)
    q = xp.where(
        both_inf,
        xp.where((big > 0) == (small > 0), xp.zeros_like(big), _NAN),
        small / xp.where(both_inf | big_zero, 1.0, big),
    )
    zero = big_zero | (q == -1.0)
    big_abs = xp.abs(xp.where(zero, 1.0, big))
    logabs = xp.log(big_abs) + xp.log1p(xp.where(zero, 0.0, q))
    # Comparisons rather than xp.sign, which array-api-compat writes for
    # PyTorch with a boolean-mask assignment that torch.func.vmap rejects;
    # the zero and NaN cases are settled by the callers' masks.
    sign = xp.where(xp.isnan(logabs), _NAN, 1.0 - 2.0 * xp.astype(big < 0, big.dtype))
    return logabs, sign, zero


def logsumexp(
    xp: ModuleType,
    a: Any,
    axis: tuple[int, ...],
    b: Any,
    keepdims: bool,
    return_sign: bool,
    compensated: bool,
    passes: Passes = EAGER,
) -> tuple[Any, Any]:
    """Return ``(log|sum b exp(a)|, sign)`` over ``axis`` of a real array.

    Entries to be ignored (masked, or with ``b == 0``) must already be
    ``-inf`` in ``a``.
    """
    p = _split(xp, a, axis, b, compensated, passes)
    m_nan = xp.isnan(p.m)
    pos_inf = p.m == _INF
    if b is None:
        logabs = _log_total(xp, p)
        zero = (p.w == 0) & ~m_nan
        sign = xp.astype(~zero, p.m.dtype)
    else:
        logabs, sign, zero = _log_abs_signed(xp, p)
        zero = zero & ~m_nan
    # An exact cancellation under +inf (inf - inf) is NaN, as in SciPy.
    out = xp.where(zero, -_INF, p.m + xp.where(zero, 0.0, logabs))
    out = xp.where(zero & pos_inf, _NAN, out)
    sign = xp.where(m_nan | (zero & pos_inf), _NAN, xp.where(zero, 0.0, sign))
    if not return_sign:
        out = xp.where(sign < 0, _NAN, out)
    if not keepdims:
        out = xp.squeeze(out, axis=axis)
        sign = xp.squeeze(sign, axis=axis)
    return out, sign


def _nonfinite_fill(xp: ModuleType, p: _Split, values: Any, fill: float) -> Any:
    """``values`` where the slice maximum is finite, the limits elsewhere.

    A NaN slice is NaN; under a +inf maximum the infinite entries are
    ``inf / inf`` (NaN) and the others ``fill``; an all ``-inf`` (or fully
    masked) slice is ``fill`` everywhere.
    """
    nan_at = xp.isnan(p.m) | (p.is_max & (p.m == _INF))
    return xp.where(nan_at, _NAN, xp.where(p.finite, values, fill))


def _log_softmax_out(xp: ModuleType, p: _Split, x: Any, total: Any) -> Any:
    # The maxima have shifted == 0, so their entries are -log1p(s), exact
    # down to the smallest s.
    return _nonfinite_fill(xp, p, p.shifted - total, -_INF)


def _softmax_out(xp: ModuleType, p: _Split, x: Any, total: Any) -> Any:
    return _nonfinite_fill(xp, p, p.e / total, 0.0)


def _normalised(
    xp: ModuleType,
    x: Any,
    axis: tuple[int, ...],
    compensated: bool,
    passes: Passes,
    total: Callable[[ModuleType, _Split], Any],
    out: Callable[..., Any],
) -> Any:
    """``out(xp, p, x, total(xp, p))`` of the split ``p`` of ``x``."""
    p = _split(xp, x, axis, None, compensated, passes)
    return passes.chunkwise(xp, out, p, x, (), (total(xp, p),), axis, compensated)


def _log_softmax_total(xp: ModuleType, p: _Split) -> Any:
    return xp.where(p.finite, _log_total(xp, p), 0.0)


def _softmax_total(xp: ModuleType, p: _Split) -> Any:
    return xp.where(p.finite, p.w + p.s, 1.0)


def log_softmax(
    xp: ModuleType,
    x: Any,
    axis: tuple[int, ...],
    compensated: bool,
    passes: Passes = EAGER,
) -> Any:
    """``x - logsumexp(x)`` over ``axis`` of a real array, masked as -inf."""
    total, out = _log_softmax_total, _log_softmax_out
    return _normalised(xp, x, axis, compensated, passes, total, out)


def softmax(
    xp: ModuleType,
    x: Any,
    axis: tuple[int, ...],
    compensated: bool,
    passes: Passes = EAGER,
) -> Any:
    """``exp(x - logsumexp(x))`` over ``axis`` of a real array."""
    total, out = _softmax_total, _softmax_out
    return _normalised(xp, x, axis, compensated, passes, total, out)


def _complex_exp(xp: ModuleType, a: Any, m: Any, b: Any) -> Any:
    """``b * exp(a - m)``, with a zero shift where ``m`` is not finite."""
    finite = xp.isfinite(m)
    m0 = xp.where(finite, m, 0.0)
    e = xp.exp(a - xp.astype(m0, a.dtype))
    return e if b is None else b * e


def _complex_terms(xp: ModuleType, p: None, a: Any, *b_and_m: Any) -> Any:
    """``b * exp(a - m)``: ``b_and_m`` is ``(b, m)`` or ``(m,)``."""
    *b, m = b_and_m
    return _complex_exp(xp, a, m, b[0] if b else None)


def _complex_split(
    xp: ModuleType, a: Any, axis: tuple[int, ...], b: Any, passes: Passes
) -> tuple[Any, Any]:
    """The maxima of the real parts, and the sum of ``b * exp(a - m)``."""
    m = xp.max(xp.real(a), axis=axis, keepdims=True)
    full = () if b is None else (b,)
    total = passes.chunkwise(
        xp, _complex_terms, None, a, full, (m,), axis, False, summed=True
    )
    return m, total


def logsumexp_complex(
    xp: ModuleType,
    a: Any,
    axis: tuple[int, ...],
    b: Any,
    keepdims: bool,
    return_sign: bool,
    passes: Passes = EAGER,
) -> tuple[Any, Any]:
    """Principal-branch ``log(sum b exp(a))`` of a complex array."""
    m, total = _complex_split(xp, a, axis, b, passes)
    zero = total == 0
    total1 = xp.where(zero, 1.0 + 0.0j, total)
    if return_sign:
        mag = xp.abs(total1)
        out = xp.where(zero | (m == -_INF), -_INF, m + xp.log(mag))
        sign = xp.where(zero, 0.0 + 0.0j, total1 / xp.astype(mag, total1.dtype))
    else:
        out = xp.where(
            zero | (m == -_INF),
            complex(-_INF, 0.0),
            xp.astype(m, a.dtype) + xp.log(total1),
        )
        sign = xp.astype(~zero, a.dtype)
    if not keepdims:
        out = xp.squeeze(out, axis=axis)
        sign = xp.squeeze(sign, axis=axis)
    return out, sign


def _complex_log_softmax_out(xp: ModuleType, p: None, x: Any, lse: Any) -> Any:
    return x - lse


def log_softmax_complex(
    xp: ModuleType, x: Any, axis: tuple[int, ...], passes: Passes = EAGER
) -> Any:
    """``x - logsumexp(x)`` of a complex array."""
    lse, _ = logsumexp_complex(xp, x, axis, None, True, False, passes)
    return passes.chunkwise(
        xp, _complex_log_softmax_out, None, x, (), (lse,), axis, False
    )


def softmax_complex(
    xp: ModuleType, x: Any, axis: tuple[int, ...], passes: Passes = EAGER
) -> Any:
    """``exp(x - logsumexp(x))`` of a complex array."""
    m, total = _complex_split(xp, x, axis, None, passes)
    return passes.chunkwise(
        xp, _complex_softmax_out, None, x, (), (m, total), axis, False
    )


def _complex_softmax_out(xp: ModuleType, p: None, x: Any, m: Any, total: Any) -> Any:
    return _complex_exp(xp, x, m, None) / total
