"""The float32 kernels as one traced expression, for a compiler to fuse.

JAX (under ``jax.jit`` and eagerly) and PyTorch under ``torch.compile``
run these; each library's module guards them (``jax.py``, ``torch.py``).
A compiler fuses an elementwise expression into one reduction, but not two
reductions over one input, nor a masked one, at speed: what is cheap is the
maximum, then a float64 sum. So the terms are shifted, ``d = x - m`` in
float32, and the rounding of the shift, ``r = (x - m) - d`` (exact by
TwoSum), is undone to first order: ``exp(d) + exp(d) r``, its error ``r**2
/ 2`` far below a float32 ulp. That is exact in the argument, like the
eager kernels' unshifted exponentials (see ``_blocked``).

The maximum's term is exactly 1, and ``t``, the sum of the others, is what
the results need to a float32 ulp of its own. Summed together with the 1,
every term below ``2**-29`` rounds against it, by up to ``2**-53`` each: a
compiler's running sum (Inductor's loop, XLA's matrix-vector product) can
add ``n`` such roundings. ``rest`` bounds the rounding in any order of
summation and certifies the rows where the bound is within ``2**-27 t``;
where one is not, a second pass leaves the maximum's terms out. Rows whose
maximum is not finite, or whose terms fall below float32's normal range,
are not certified; where any row is not, the guard runs the standard-only
path instead, on every row.

``logsumexp`` alone needs no more than an absolute error under half an
ulp of its result: where every row's result is large enough that its ulp
is (4.5 and more in magnitude), it is the log of the float64 sum of the
unshifted ``exp(x)``, nothing to undo and no maximum to take, in one pass
where the max-shift takes two (see ``logsumexp``). ``softmax`` likewise
divides the unshifted ``exp(x)`` by their sum where that holds, in two
passes where it takes three (see ``divisors``). Where its result lies so
near 0 that float32 terms' rounding is too
coarse for some row (small logits, ten classes, a causal mask's short
rows), it takes float64 terms, ``exp(x - c)`` in float64, in one more pass
(see ``_wide``), before the guard gives up.

A row whose other entries are all ``-inf`` has ``t = 0``, exactly: its
sum of other terms tells it apart from a row whose other terms were
flushed below float32's normal range (see ``_others``).

Short rows (ten classes) come many to a batch, and what costs is per
row: ``logsumexp`` takes their float64 terms at once (``SHORT_ROW``), and
``log1p`` is computed by ``log``.

Every function takes the namespace ``xp`` and 2-D float32 rows.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import _bounds

__all__ = [
    "Cond",
    "Rest",
    "Total",
    "cross_entropy",
    "divided",
    "divisors",
    "finite_maxima",
    "infinities",
    "log1p",
    "log_sum",
    "logsumexp",
    "logsumexp_shares",
    "normalised",
    "rest",
    "shares",
    "stats",
    "sum64",
    "terms",
]

# The compiled float32 exp of XLA and of Inductor on the CPU is within 0.99
# ulps over [-104, 88.7] (measured), and e + e r rounds once more.
EXP_ULPS = 1.5

# Sums rounded by at most this many ulps: three times as many, the bound
# on t's relative rounding where t >= 1/2, stay within 2**-27 (an eighth
# of a float32 ulp).
LONGEST = 1 << 24


def terms(xp: ModuleType, x2: Any, m: Any) -> tuple[Any, Any]:
    """``(d, e)``: ``d = x - m`` as rounded, and ``e = exp(x - m)`` with
    that rounding undone; ``m`` the maxima, one per row, as a column."""
    d = x2 - m
    # Knuth's TwoSum: r is exactly (x - m) - d, in float32.
    back = d - x2
    r = (x2 - (d - back)) + (-m - back)
    e = xp.exp(d)
    # A -inf entry makes r NaN (-inf - -inf); its term, 0, needs no
    # correction. (Replacing it in x before the shift costs Inductor's loop
    # twice as much.)
    return d, xp.where(e > 0, e + e * r, e)


Total = Callable[[ModuleType, Any], tuple[Any, int]]
"""``total(xp, e)``: the row sums of float32 terms ``e`` in float64, and
their rounding, in ulps of the sum, at most in any order of summation."""

Cond = Callable[[Any, Callable[[], Any], Callable[[], Any]], Any]
"""``cond(ok, fast, slow)``: ``fast()`` where every row is ``ok``,
``slow()`` otherwise; one runs."""


def sum64(xp: ModuleType, e: Any) -> tuple[Any, int]:
    """``Total`` by the library's reduction: ``n - 1`` ulps."""
    return xp.sum(xp.astype(e, xp.float64), axis=1), e.shape[1] - 1


class Rest:
    """The float64 sums of a library's rows: ``rest(xp, x2, m)`` gives
    ``(t, ok)``, each row's sum of its ``terms`` other than the maximum's
    (``x - m`` rounds to 0 there), and the rows where its rounding is
    within ``2**-27 t``; ``m`` the maxima, as a column. ``whole(xp, x2,
    m)`` sums the unshifted ``exp(x)`` (see ``logsumexp``); ``cond`` is
    the library's.

    ``t`` comes from one float64 sum of every term, the maximum's 1 among
    them, less 1: a compiler fuses it with the terms, where a mask or a
    count in the same pass would cost a pass of its own (XLA: several).
    Its rounding, ``depth`` ulps of ``1 + t`` at most, is within ``2**-27
    t`` (an eighth of a float32 ulp) where ``t >= depth 2**-26 (1 + t)``,
    which holds unless one term dominates. If a row fails it, every row
    takes a second pass, the sum of the terms other than the maximum's:
    all positive, rounded by ``depth`` ulps of ``t`` itself. A row whose
    first sum is below 1/2 holds its maximum once, and that is its ``t``;
    elsewhere ``t >= 1/2``, and the first sum's rounding is within ``3
    depth`` ulps of ``t``.

    With ``parts`` (a row's length gives a divisor of it), each row is
    summed as that many rows of its consecutive entries, whose sums are
    then added (``parts - 1`` roundings more): XLA's CPU float64 reduction
    of a long row runs several times slower than of the same entries in
    shorter rows (see ``jax.py``). ``fence``, where given, takes the
    reshaped rows before anything else does (see ``jax.py``).
    """

    def __init__(
        self,
        total: Total,
        cond: Cond,
        parts: Callable[[int], int] | None = None,
        fence: Callable[[Any], Any] | None = None,
    ) -> None:
        self.total = total
        self.cond = cond
        self.parts = parts
        self.fence = fence

    def _split(
        self, xp: ModuleType, x2: Any, m: Any
    ) -> tuple[Any, Any, Callable[[Any], Any], int]:
        """``x2`` as the rows of its parts, each part's maximum ``m`` (None
        stays None), what adds their sums up per row, and the number of
        parts."""
        rows, n = x2.shape
        parts = 1 if self.parts is None else self.parts(n)
        if parts == 1:
            return x2, m, lambda s: s, 1

        def added(s: Any) -> Any:
            return xp.sum(xp.reshape(s, (rows, parts)), axis=1)

        if m is not None:
            m = xp.reshape(xp.broadcast_to(m[:, None, :], (rows, parts, 1)), (-1, 1))
        x2 = xp.reshape(x2, (rows * parts, n // parts))
        if self.fence is not None:
            x2 = self.fence(x2)
        return x2, m, added, parts

    def whole(self, xp: ModuleType, x2: Any) -> tuple[Any, int]:
        """Each row's float64 sum of ``exp(x)``, and its rounding in ulps
        of the sum, at most, in any order of summation."""
        x2, _, added, parts = self._split(xp, x2, None)
        s, depth = self.total(xp, xp.exp(x2))
        return added(s), depth + parts - 1

    def wide(self, xp: ModuleType, x2: Any, c: Any) -> tuple[Any, int]:
        """Each row's float64 sum of ``exp(x - c)``, in float64 throughout,
        and its rounding in ulps of the sum, at most, in any order of
        summation; ``c`` a float64 column."""
        x2, c, added, parts = self._split(xp, x2, c)
        s, depth = self.total(xp, xp.exp(xp.astype(x2, xp.float64) - c))
        return added(s), depth + parts - 1

    def __call__(self, xp: ModuleType, x2: Any, m: Any) -> tuple[Any, Any]:
        x2, m, added, parts = self._split(xp, x2, m)
        _, e = terms(xp, x2, m)
        s, depth = self.total(xp, e)
        full = added(s) - 1.0
        depth += parts - 1

        def others() -> Any:
            d, e = terms(xp, x2, m)
            # A term far below the maximum, whose exp is flushed to 0 or
            # keeps fewer digits, counts as 2**-120 (see ``_others``), a
            # float32 number: float64 terms would make XLA write them out
            # whole, at a cost paid even where this branch does not run.
            # The constants are literals: under dynamic shapes, Dynamo
            # hands a module's float to a torch.cond branch as a tensor,
            # which Inductor then fails to read.
            far = xp.astype(d > -xp.inf, e.dtype) * 2.0**-120
            e = xp.where(d < -87.3, far, e)
            s, _ = self.total(xp, xp.where(d == 0, xp.zeros_like(e), e))
            return xp.where(full >= 0.5, full, added(s))

        # The shape's numbers meet tensors before floats: torch.cond takes
        # no float from a shape into a branch (this may run in one).
        ok = full * 2.0**26 >= (1.0 + full) * depth
        # A branch's result may not be a value from outside it
        # (torch.cond): the copy is of one value per row.
        t = self.cond(ok, lambda: full * 1.0, others)
        if depth > LONGEST:
            return t, xp.zeros_like(ok)
        return t, xp.isfinite(t)


def rest(
    total: Total,
    cond: Cond,
    parts: Callable[[int], int] | None = None,
    fence: Callable[[Any], Any] | None = None,
) -> Rest:
    """``Rest`` by ``total`` and ``cond``; ``parts(n)``, where given, the
    number of parts to sum a row of ``n`` entries in; ``fence``: what
    takes the rows of the parts first."""
    return Rest(total, cond, parts, fence)


def stats(xp: ModuleType, x2: Any, rest: Rest) -> tuple[Any, Any, Any]:
    """``(m, t, ok)``: each row's maximum (a float32 column), the sum of
    its other terms ``exp(x - m)`` in float64 (by ``rest``), and the
    certified rows."""
    m = xp.max(x2, axis=1, keepdims=True)
    t, ok = _others(xp, x2, m, rest)
    return m, t, ok


def _others(xp: ModuleType, x2: Any, m: Any, rest: Rest) -> tuple[Any, Any]:
    """``stats``' ``(t, ok)`` of rows with the maxima ``m``."""
    t, ok = rest(xp, x2, m)
    # Terms below float32's smallest normal number are flushed to 0 (XLA)
    # or keep fewer digits, 2**-126 each at most; where a row's t is small,
    # its sum counts them as 2**-120 each (see ``Rest``): (n - 1) 2**-120
    # off at most, within 2**-27 t where t >= (n - 1) 2**-93. A t of 0 is
    # exact: the row's other entries are all -inf (a causal mask's first
    # row), and those of a row that holds other terms add up to more.
    ok = ok & ((t == 0) | (t * 2.0**93 >= x2.shape[1] - 1))
    return t, ok & xp.isfinite(m[:, 0])


def log1p(xp: ModuleType, t: Any) -> Any:
    """``log1p(t)`` of float64 ``t >= 0``, by ``log``: XLA's CPU float64
    log1p is a scalar loop (5 ms over 419430 values, against 1.3 for
    log). With ``u = 1 + t`` rounded, ``log(u) t / (u - 1)`` is within 5
    ulps (Goldberg, theorem 4, for ``t < 3/4``; above, ``u - 1`` is exact
    and ``log(u)`` within 3 ulps), and ``t`` itself where ``u`` rounds to
    1."""
    # 1 made from t: XLA's simplifier folds (1 + t) - 1 into t where the
    # 1 is a literal, which would lose log(u)'s rounding of 1 + t.
    one = t * 0.0 + 1.0
    u = one + t
    d = u - one
    exact = d == 0.0
    q = t / xp.where(exact, xp.ones_like(d), d)
    out = xp.where(exact, t, xp.log(u) * q)
    # At t = inf, one is NaN.
    return xp.where(t == xp.inf, t, out)


# logsumexp takes the float64 terms of rows of at most SHORT_ROW entries at
# once.
SHORT_ROW = 16

# logsumexp takes the log of the sum of the unshifted exp(x) where every
# row's result is at least this in magnitude (see ``logsumexp``): 4.5.
UNSHIFTED_LOW = _bounds.direct_low(EXP_ULPS)


def logsumexp(xp: ModuleType, x2: Any, rest: Rest) -> tuple[Any, Any]:
    """Each row's log-sum-exp, in float64, and the certified rows.

    Where every row's result ``log(s)``, ``s`` the float64 sum of the
    unshifted ``exp(x)``, is at least ``UNSHIFTED_LOW`` in magnitude, as a
    classifier's logits' mostly are, that is the result: one pass, where
    the max-shift takes two (``_bounds.direct`` certifies it; the sum's
    rounding is ``depth 2**-53`` here, at most ``2**-29``). Where any row
    is not certified, the sum is of the shifted terms (``stats``), whose
    rounding is relative to ``t``.
    """
    n = x2.shape[1]
    if n <= SHORT_ROW:
        # In a batch of many short rows, some row's result lies too near 0
        # for float32 terms, and the float64 terms' pass costs a short row
        # no more than theirs: they come at once (XLA: 13 ms for 419430
        # rows of 10, against 24 for both passes).
        top = xp.astype(xp.max(x2, axis=1), xp.float64)
        return _wide(xp, x2, top, rest)
    s, depth = rest.whole(xp, x2)
    direct = xp.log(s)
    held = _bounds.direct(direct, s, n, EXP_ULPS)
    if depth > LONGEST:
        held = xp.zeros_like(held)
    # A branch's result may not be a value from outside it (torch.cond).
    out, ok = rest.cond(
        held, lambda: (direct * 1.0, held & held), lambda: _shifted(xp, x2, rest)
    )
    return out, ok


def _shifted(xp: ModuleType, x2: Any, rest: Rest) -> tuple[Any, Any]:
    """``logsumexp`` from the shifted terms, and from float64 terms where
    those are too coarse."""
    m = xp.max(x2, axis=1, keepdims=True)
    top = xp.astype(m[:, 0], xp.float64)
    t, ok = _others(xp, x2, m, rest)
    out = top + log1p(xp, t)
    # _bounds.rounding_factor(EXP_ULPS, 32), as a literal: this runs
    # within a branch (see ``Rest``'s other terms).
    ok = ok & (xp.abs(out) * (1.0 + t) >= 3.0 * t)

    # Float64 terms cannot certify a row whose result is nearer 0 than
    # their rounding (see ``_wide``; its sum's at least 2 sqrt(n) - 2 ulps),
    # |out| < (2 sqrt(n) + |m|) 2**-29: a batch that holds one goes to the
    # guard's standard-only path without their pass. (Only a matter of
    # time: ``out`` may be off.) Squared, without sqrt: within a branch of
    # torch.cond, a float from the shape cannot be used.
    over = xp.abs(out) * 2.0**29 - xp.abs(top)
    near = (over < 0.0) | (over * over < 4 * x2.shape[1])
    hopeless = xp.any(~ok & near)

    def wide() -> tuple[Any, Any]:
        near, good = _wide(xp, x2, top, rest)
        return xp.where(ok, out, near), ok | good

    skip = ok | hopeless
    out, ok = rest.cond(skip, lambda: (out * 1.0, ok & skip), wide)
    return out, ok


def _wide(xp: ModuleType, x2: Any, top: Any, rest: Rest) -> tuple[Any, Any]:
    """``logsumexp``'s rows from float64 terms, and those certified: for
    rows whose float32 terms' rounding is too coarse for their result.

    The terms are ``exp(x - c)``, ``c`` the maximum rounded to an integer,
    and ``c + log(sum)`` the result. In units of ``2**-53``, relative to
    the sum:

    - ``x - c`` is exact in float64 unless ``|c| > 2**28 |x|``, and then
      rounded by ``|c|`` at most;
    - the float64 exp of XLA and of Inductor on the CPU is within 1.69
      and 0.84 ulps (measured), taken as 3 ulps: 6, and 1 for the terms
      below float64's normal range, ``n 2**-1022`` at most against a sum
      of at least ``exp(-1/2)``;
    - the sum rounds by ``depth``, 1% more for the products of these
      errors.

    Then ``log`` adds an ulp of ``|log(sum)|`` (0.52 and 0.75 measured),
    and the last addition half an ulp of the result: ``err`` bounds the
    result's error, absolutely, and is within half a float32 ulp of a
    result ``|out| >= 2**25 err``, about ``(n + |c|) 2**-28``.
    """
    finite = xp.isfinite(top)
    c = xp.round(xp.where(finite, top, xp.zeros_like(top)))
    s, depth = rest.wide(xp, x2, c[:, None])
    log = xp.log(s)
    out = c + log
    # Literal constants (see ``Rest``'s other terms): this runs within a
    # branch.
    relative = (1.01 * xp.abs(c) + 7.0 + depth) * 1.01
    err = (relative + 2.0 * xp.abs(log) + xp.abs(out)) * 2.0**-53
    good = finite & xp.isfinite(out) & (xp.abs(out) * 2.0**-25 >= err)
    return out, good


def normalised(xp: ModuleType, x2: Any, m: Any, t: Any, kind: str) -> Any:
    """The rows' ``log_softmax`` or ``softmax`` (``kind``) in float32, from
    their ``stats``: a pass of its own, which the guard runs only where
    every row is certified."""
    d, e = terms(xp, x2, m)
    if kind == "softmax":
        return e / xp.astype(1.0 + t, x2.dtype)[:, None]
    # (x - m) - log1p(t): both terms are <= 0; d rounds once, and so do
    # log1p(t) and the difference.
    return d - xp.astype(log1p(xp, t), x2.dtype)[:, None]


def divisors(xp: ModuleType, x2: Any, rest: Rest) -> tuple[Any, Any]:
    """``(s, ok)``: each row's float64 sum of the unshifted ``exp(x)``, and
    the rows whose ``softmax`` ``exp(x) / s`` (``divided``) holds: two
    passes, where the max-shift takes three.

    Each ``exp(x)`` is within ``EXP_ULPS`` of its own, and so is ``s``, a
    sum of them, to its rounding (``depth 2**-53`` at most, ``2**-29``)
    and the terms below float32's smallest normal number (flushed or with
    fewer digits, ``n 2**-126`` at most against ``s >= 1``); ``s`` rounded
    to float32 and the quotient add half an ulp each: within 4 ulps. Where
    ``s >= 1`` an entry whose ``exp(x)`` falls below the smallest normal
    number has a ``softmax`` below it too, and ``s < 2**127`` stays finite
    rounded (no term overflowed, an ``inf`` among them included). A NaN
    fails both.
    """
    s, depth = rest.whole(xp, x2)
    ok = (s >= 1.0) & (s < _bounds.LARGEST[32])
    if depth > LONGEST:
        return s, xp.zeros_like(ok)
    return s, ok


def divided(xp: ModuleType, x2: Any, s: Any) -> Any:
    """The rows' ``softmax`` from their ``divisors``."""
    return xp.exp(x2) / xp.astype(s, x2.dtype)[:, None]


def cross_entropy(
    xp: ModuleType,
    x2: Any,
    target: Any,
    ignore: int | None,
    take: Callable[[Any, Any], Any],
    rest: Rest,
    smoothing: float = 0.0,
    found: tuple[Any, Any, Any] | None = None,
) -> tuple[Any, Any, Any]:
    """``(loss, ok, lse)``: each row's ``logsumexp - x[target]`` in
    float64, with the target smoothed by ``smoothing``, 0 where the target
    is ``ignore``, the certified rows (ignored ones count as certified), and
    each row's log-sum-exp in float64, for the gradient. ``take(x2, at)`` is
    ``take_along_axis(x2, at, axis=1)`` in the library's fastest form (of
    PyTorch's, ``take_along_dim`` specialises a compiled graph to the
    number of classes, ``gather`` does not). ``found``: the rows' ``stats``,
    where another kernel took them."""
    m, t, ok = stats(xp, x2, rest) if found is None else found
    valid = (target >= 0) & (target < x2.shape[1])
    at = xp.where(valid, target, xp.zeros_like(target))[:, None]
    picked = take(x2, at)[:, 0]
    # (m - x[target]) + log1p(t): two non-negative terms, so that a
    # confident prediction's tiny loss keeps its digits. m - x[target] of
    # two float32 numbers is exact in float64 unless their exponents lie
    # 29 apart, and then within a float64 ulp.
    top, low = xp.astype(m[:, 0], xp.float64), log1p(xp, t)
    gap = top - xp.astype(picked, xp.float64)
    loss = gap + low
    if smoothing:
        # Smoothed: (1 - eps) (m - x[target]) + log1p(t) + eps / n sum(m -
        # x), three non-negative terms; sum(m - x) of exact float64 terms
        # (as m - x[target]), all positive, rounds by n - 1 float64 ulps
        # at most. A -inf entry makes it infinite, as the loss is: the
        # standard-only path gives that.
        n = x2.shape[1]
        spread = xp.sum(xp.astype(m, xp.float64) - xp.astype(x2, xp.float64), axis=1)
        loss = (1.0 - smoothing) * gap + low + (smoothing / n) * spread
        ok = ok & xp.isfinite(spread)
    # Out-of-range indices go to the standard-only path, which gives them
    # NaN.
    ok = ok & valid
    if ignore is not None:
        counted = target != ignore
        loss = xp.where(counted, loss, xp.zeros_like(loss))
        ok = ok | ~counted
    return loss, ok, top + low


# For the closed-form derivatives: the values per row that the guards'
# two branches hand them, and the softmax of the rows.


def shares(xp: ModuleType, x2: Any, lse: Any) -> Any:
    """``p = exp(x - lse)``, each entry's share of its row's sum, for rows
    ``x2`` with a finite log-sum-exp ``lse`` (float64, or the rows' dtype
    where there is nothing wider): from ``hi``, ``lse`` rounded to the
    rows' dtype, and ``exp(hi - lse)`` in ``lse``'s, which undoes that
    rounding (``|lse|`` ulps of ``exp(x - hi)``); 0 in the other rows."""
    finite = xp.isfinite(lse)
    lse = xp.where(finite, lse, xp.zeros_like(lse))
    hi = xp.astype(lse, x2.dtype)
    undo = xp.exp(xp.astype(hi, lse.dtype) - lse)
    p = xp.exp(x2 - hi[:, None]) * xp.astype(undo, x2.dtype)[:, None]
    return xp.where(finite[:, None], p, xp.zeros_like(p))


def logsumexp_shares(xp: ModuleType, x2: Any, lse: Any, inf: Any) -> Any:
    """The derivative of each row's log-sum-exp ``lse`` (float64) by its
    entries: ``shares``, or in a row that holds ``inf > 0`` entries
    ``+inf`` (float64 counts, ``infinities``), shared equally among them,
    as the standard-only path's; 0 in an all ``-inf`` row."""
    p = shares(xp, x2, lse)
    infinite = inf > 0
    count = xp.astype(xp.where(infinite, inf, xp.ones_like(inf)), x2.dtype)
    share = xp.astype(x2 == xp.inf, x2.dtype) / count[:, None]
    return xp.where(infinite[:, None], share, p)


def _nan_rows(xp: ModuleType, x2: Any, v: Any) -> Any:
    """``v``, a value per row, NaN in the rows that hold a NaN."""
    m = xp.astype(xp.max(x2, axis=1), v.dtype)
    return xp.where(xp.isnan(m), m, v)


def infinities(xp: ModuleType, x2: Any, dtype: Any = None) -> Any:
    """The number of ``+inf`` entries in each row, in ``dtype`` (None:
    float64); NaN in the rows that hold a NaN."""
    dtype = xp.float64 if dtype is None else dtype
    return _nan_rows(xp, x2, xp.sum(xp.astype(x2 == xp.inf, dtype), axis=1))


def finite_maxima(xp: ModuleType, x2: Any) -> Any:
    """1 where a row's maximum is finite, 0 elsewhere, as float64; NaN in
    the rows that hold a NaN."""
    live = xp.astype(xp.isfinite(xp.max(x2, axis=1)), xp.float64)
    return _nan_rows(xp, x2, live)


def log_sum(xp: ModuleType, x2: Any, dtype: Any = None) -> Any:
    """Each row's log-sum-exp in ``dtype`` (None: float64), by the
    max-shift: for the gradient alone, where the standard-only path
    computes the loss."""
    dtype = xp.float64 if dtype is None else dtype
    m = xp.astype(xp.max(x2, axis=1), dtype)
    finite = xp.isfinite(m)
    top = xp.where(finite, m, xp.zeros_like(m))
    total = xp.sum(xp.exp(xp.astype(x2, dtype) - top[:, None]), axis=1)
    return xp.where(finite, top + xp.log(total), m)
