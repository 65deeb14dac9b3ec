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
from types import ModuleType
from typing import Any, NamedTuple

__all__ = ["log_softmax", "logsumexp", "softmax"]

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


def _sum(xp: ModuleType, x: Any, axis: tuple[int, ...], compensated: bool) -> Any:
    """``sum(x, axis, keepdims=True)``, correctly rounded when compensated.

    A float64 sum of thousands of small terms otherwise carries up to an
    ulp of rounding into ``log1p(s)``, whose result is then that sum
    itself. The compensated sum folds the reduced axes in halves with
    TwoSum: about log2(n) elementwise passes over shrinking arrays.
    """
    shape = tuple(x.shape)
    if not compensated or not all(isinstance(n, int) for n in shape):
        return xp.sum(x, axis=axis, keepdims=True)
    kept = [i for i in range(len(shape)) if i not in axis]
    n = math.prod([shape[i] for i in axis])
    keep_shape = tuple(1 if i in axis else m for i, m in enumerate(shape))
    # TwoSum turns an infinite term into inf - inf; infinities and NaN
    # skip the fold and are added back, once, to its result.
    finite = xp.isfinite(x)
    rest = xp.sum(xp.where(finite, 0.0, x), axis=axis, keepdims=True)
    x = xp.where(finite, x, 0.0)
    hi = xp.reshape(xp.permute_dims(x, (*kept, *axis)), (*(shape[i] for i in kept), n))
    lo = xp.zeros_like(hi)
    while hi.shape[-1] > 1:
        hi, lo = _two_sum_fold(xp, hi, lo)
    return xp.reshape(hi[..., 0] + lo[..., 0], keep_shape) + rest


def _unround_shift(xp: ModuleType, a: Any, m: Any, d: Any, e: Any) -> Any:
    """``exp(a - m)`` from ``e = exp(d)``, ``d`` the rounded ``a - m``.

    The subtraction rounds by up to half an ulp of ``|a - m|``: as many ulps
    of ``exp(a - m)`` as ``|a - m|`` is large (29 at ``a - m = -29``), which
    ``log1p`` passes on whole to the log-softmax of a dominant class. TwoSum
    recovers the rounding ``r`` exactly, and ``exp(d + r) = exp(d) (1 + r)``
    up to ``r**2``. Where ``d`` is not finite (``a`` infinite or NaN, or
    the shift overflowing), ``e`` is 0 and the correction with it: TwoSum
    runs on zeros there, which keeps ``inf - inf`` out of it, and with it
    the floating-point warnings of libraries that compute it later (Dask).
    """
    finite = xp.isfinite(d)
    a = xp.where(finite, a, 0.0)
    d = xp.where(finite, d, 0.0)
    back = d - a
    r = (a - (d - back)) + (-m - back)
    return e + e * r


def _split(
    xp: ModuleType, a: Any, axis: tuple[int, ...], b: Any, compensated: bool
) -> _Split:
    m = xp.max(a, axis=axis, keepdims=True)
    finite = xp.isfinite(m)
    # A zero shift where m is +-inf or NaN keeps inf - inf out of the
    # subtraction; those slices take their value from `m` further down.
    m0 = xp.where(finite, m, 0.0)
    shifted = a - m0
    is_max = a == m
    e = xp.exp(xp.where(finite, shifted, -_INF))
    if compensated:
        e = _unround_shift(xp, a, m0, shifted, e)
    present = is_max & (m > -_INF)
    # W sums e (or b * e) over the maxima: the count (or weight) of the
    # maxima in value, e being exactly 1 there, but a function of each
    # maximum for autodiff. m then drops out of every derivative (it cancels
    # as it does in exact arithmetic), instead of carrying the maxima's
    # share: PyTorch and JAX split a max's gradient equally among ties, right
    # neither for unequal weights nor for the second derivative of a tie.
    at_max = xp.where(finite, e, 1.0)
    if b is None:
        w = xp.sum(xp.where(present, at_max, 0.0), axis=axis, keepdims=True)
        terms = e
    else:
        w = xp.sum(xp.where(present, b * at_max, 0.0), axis=axis, keepdims=True)
        # An infinite weight on a vanishing term is NaN, as in SciPy;
        # writing it as NaN * 0 rather than inf * 0 raises no warning.
        terms = xp.where((e == 0) & xp.isinf(b), _NAN, b) * e
    s = _sum(xp, xp.where(present, 0.0, terms), axis, compensated)
    return _Split(m, finite, is_max, shifted, e, w, s)


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
) -> tuple[Any, Any]:
    """Return ``(log|sum b exp(a)|, sign)`` over ``axis`` of a real array.

    Entries to be ignored (masked, or with ``b == 0``) must already be
    ``-inf`` in ``a``.
    """
    p = _split(xp, a, axis, b, compensated)
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


def log_softmax(
    xp: ModuleType, x: Any, axis: tuple[int, ...], compensated: bool
) -> Any:
    """``x - logsumexp(x)`` over ``axis`` of a real array, masked as -inf."""
    p = _split(xp, x, axis, None, compensated)
    # The maxima have shifted == 0, so their entries are -log1p(s), exact
    # down to the smallest s.
    out = p.shifted - xp.where(p.finite, _log_total(xp, p), 0.0)
    return _nonfinite_fill(xp, p, out, -_INF)


def softmax(xp: ModuleType, x: Any, axis: tuple[int, ...], compensated: bool) -> Any:
    """``exp(x - logsumexp(x))`` over ``axis`` of a real array."""
    p = _split(xp, x, axis, None, compensated)
    total = xp.where(p.finite, p.w + p.s, 1.0)
    return _nonfinite_fill(xp, p, p.e / total, 0.0)


def _complex_split(
    xp: ModuleType, a: Any, axis: tuple[int, ...], b: Any
) -> tuple[Any, Any, Any]:
    m = xp.max(xp.real(a), axis=axis, keepdims=True)
    finite = xp.isfinite(m)
    m0 = xp.where(finite, m, 0.0)
    e = xp.exp(a - xp.astype(m0, a.dtype))
    if b is not None:
        e = b * e
    total = xp.sum(e, axis=axis, keepdims=True)
    return m, e, total


def logsumexp_complex(
    xp: ModuleType,
    a: Any,
    axis: tuple[int, ...],
    b: Any,
    keepdims: bool,
    return_sign: bool,
) -> tuple[Any, Any]:
    """Principal-branch ``log(sum b exp(a))`` of a complex array."""
    m, _, total = _complex_split(xp, a, axis, b)
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


def log_softmax_complex(xp: ModuleType, x: Any, axis: tuple[int, ...]) -> Any:
    """``x - logsumexp(x)`` of a complex array."""
    lse, _ = logsumexp_complex(xp, x, axis, None, True, False)
    return x - lse


def softmax_complex(xp: ModuleType, x: Any, axis: tuple[int, ...]) -> Any:
    """``exp(x - logsumexp(x))`` of a complex array."""
    _, e, total = _complex_split(xp, x, axis, None)
    return e / total
