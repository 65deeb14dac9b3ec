"""When the kernels' unshifted exponentials can be trusted, row by row.

The kernels sum ``exp(x)`` in the input's dtype, without the usual shift by
the maximum, and divide by ``exp(m)`` in float64 afterwards. That is exact
in the argument, but it has a range: ``exp(x)`` overflows above about 88
(float32) or 709 (float64), and below the smallest normal number each term
loses up to that number in absolute value, or gains as much where its
entry is raised to ``FLOOR``. A row is certified when its maximum lies
between ``LOW`` and ``HIGH`` (so no term, nor their float64 sum,
overflows, and ``exp(m)`` is a normal float64) and the sum of its other
terms is large enough that the terms off below the smallest normal number,
``n - 1`` of them at most, stay under a quarter of an ulp of it.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["FLOOR", "LARGEST", "certified", "direct", "direct_low", "rounding_factor"]

# Below 80 a float32 exp(x) is finite; below 690 a float64 sum of up to
# 2**30 terms exp(x) is.
_HIGH = {32: 80.0, 64: 690.0}
# exp(m), which divides the sum in float64, stays a normal float64 above.
_LOW = -700.0
# Entries below FLOOR may be raised to it before exp: an exp whose result
# is subnormal or 0 costs NumPy's and PyTorch's CPU loops 5 to 100 times a
# normal one (x86's microcode assists), and exp(FLOOR) is normal.
FLOOR = {32: -87.0, 64: -708.0}
# A bound on what each term below the smallest normal number loses, raised
# to exp(FLOOR) or not (2**-125.5 and 2**-1021.4), and the factor that
# makes (n - 1) of them a quarter of an ulp (2**-25 and 2**-54 relative) of
# the sum.
_TINY = {32: 2.0**-125, 64: 2.0**-1021}
_GUARD = {32: 2.0**25, 64: 2.0**54}
# A power of two under each dtype's largest finite number: a softmax's
# divisor ``exp(m) (1 + t)``, rounded to the dtype, stays finite below it.
LARGEST = {32: 2.0**127, 64: 2.0**1023}
# An eighth of an ulp of each dtype, relative: the rounding of a sum that
# holds the maximum's term is certified where it stays within this of t.
_EIGHTH = {32: 2.0**-27, 64: 2.0**-56}


def certified(m: Any, t: Any, s: Any, n: int, bits: int, depth: int | None) -> Any:
    """Rows (a boolean array) whose kernel results hold: ``m`` the float64
    maxima, ``s`` the float64 sums of the other terms' ``exp(x)``, ``t`` the
    same divided by ``exp(m)``.

    ``depth``: None where the kernel left the maximum's term out of the
    sum; otherwise it summed every term and subtracted the largest, and
    the float64 sum's rounding is at most ``depth`` ulps of ``1 + t``,
    within an eighth of an ulp of ``t`` only where ``t >= depth 2**-53 (1 +
    t) / 2**-27`` (float32); below, one term dominates, and the row is
    recomputed.
    """
    floor = (n - 1) * _TINY[bits] * _GUARD[bits]
    ok = (m <= _HIGH[bits]) & (m >= _LOW) & (s >= floor) & (s < math.inf)
    if depth is not None:
        ok &= t * _EIGHTH[bits] >= depth * 2.0**-53 * (1.0 + t)
    return ok


def rounding_factor(exp_ulps: float, bits: int) -> float:
    """``k``: the rounding of ``t`` stays under half an ulp of
    ``m + log1p(t)`` where ``|m + log1p(t)| >= k t / (1 + t)``.

    ``log1p(t)`` carries the relative error of ``t`` times ``t / ((1 + t)
    log1p(t)) <= 1``: an absolute error of that relative error times ``t /
    (1 + t)``. ``t``'s relative error is that of the terms ``exp(x)``,
    ``exp_ulps``; in float64 also that of the divisor ``exp(m)`` and about
    an ulp for the sum and the quotient (float32's terms are summed, and
    divided by ``exp(m)``, in float64, where their rounding vanishes).
    """
    return 2.0 * (exp_ulps if bits == 32 else 2.0 * exp_ulps + 1.0)


def direct_low(exp_ulps: float) -> float:
    """The least magnitude of a float32 log-sum-exp ``log(s)``, ``s`` the
    float64 sum of the unshifted ``exp(x)``, each within ``exp_ulps`` of
    its own, at which it is within half an ulp: ``2**k + 1/2``, where the
    half ulp of ``[2**k, 2**(k + 1))``, ``2**(k - 24)``, holds ``exp_ulps
    2**-23`` and 5% for the rest (see ``direct``); the half keeps ``log(s)``
    off by that much on the right side of ``2**k``."""
    k = 1
    while 2.0 ** (k - 1) < 1.05 * exp_ulps:
        k += 1
    return 2.0**k + 0.5


def direct(out: Any, s: Any, n: int, exp_ulps: float) -> Any:
    """Rows (a boolean array) whose float32 log-sum-exp ``out = log(s)``
    holds, ``s`` the float64 sum of the unshifted ``exp(x)`` of ``n``
    entries.

    Each term is off by up to ``exp_ulps`` ulps, relative, and so is ``s``,
    which puts ``out`` off by ``exp_ulps 2**-23`` at most, absolutely;
    add the sum's rounding (``n 2**-53``, under ``2**-29`` for ``n <
    2**24``) and the terms below float32's smallest normal number
    (flushed, or raised to ``FLOOR``: ``n 2**-125`` at most, under
    ``2**-35`` of ``s >= n 2**-90``): within half an ulp of an ``out`` of
    ``direct_low`` or more in magnitude. A term that overflows (an ``inf``
    among them) or a NaN leaves ``s`` not finite, an empty sum 0: those
    rows are not certified.
    """
    low = direct_low(exp_ulps)
    # n meets a tensor first: torch.cond takes no float from a shape.
    return (abs(out) >= low) & (s * 2.0**90 >= n) & (s < math.inf)
