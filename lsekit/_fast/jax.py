"""JAX (float32): the kernels as one traced expression, for XLA to fuse.

XLA on the CPU fuses an elementwise expression into one reduction, but not
two reductions over one input, nor a masked one, at speed: what is cheap is
the maximum, then a single float64 sum. So the terms are shifted, ``d = x -
m`` in float32, and the rounding of the shift, ``r = (x - m) - d`` (exact by
TwoSum), is undone to first order: ``exp(d) + exp(d) r``, its error ``r**2 /
2`` far below a float32 ulp. That is exact in the argument, like the eager
kernels' unshifted exponentials (see ``_blocked``). The maximum's term is
exactly 1 and is subtracted from the float64 sum, which leaves ``t`` with a
relative error of ``2**-53 (1 + t) / t`` times the depth of the sum: rows
where one term dominates (``t < 2**-20``) are not certified, nor those whose
maximum is not finite. Where any row is not, ``lax.cond`` runs the standard-
only path instead, on every row; derivatives always come from that path (a
``custom_jvp``), so that they are those the tests check.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

from . import _bounds

__all__ = [
    "accepts",
    "as_rows",
    "cast",
    "cross_entropy",
    "eligible",
    "logsumexp",
    "normalised",
    "sign",
    "transpose",
]

# XLA's float32 exp on the CPU is within 0.99 ulps over [-87, 88]
# (measured), and e + e r rounds once more.
EXP_ULPS = {32: 1.5}


def _jnp() -> Any:
    return importlib.import_module("jax.numpy")


def accepts(x: Any) -> bool:
    """Whether ``x`` is an array these kernels run on."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.Array)


def eligible(x: Any) -> bool:
    """float32, not empty, with float64 at hand to sum in (float64 input,
    which has nothing wider to undo its shift's rounding in, keeps the
    standard-only path)."""
    jnp = _jnp()
    jax = sys.modules["jax"]
    return x.dtype == jnp.float32 and x.size > 0 and bool(jax.config.jax_enable_x64)


def transpose(x: Any, perm: tuple[int, ...]) -> Any:
    """``x`` with its axes in the order ``perm``."""
    return _jnp().transpose(x, perm)


def as_rows(x: Any, n: int) -> Any:
    """``x`` as rows of ``n`` entries."""
    return x.reshape(-1, n)


def sign(out: Any) -> Any:
    """The sign of a sum of exponentials from its log: 1, 0 for an empty
    sum (``-inf``), NaN where the log is NaN."""
    jnp = _jnp()
    return jnp.where(jnp.isnan(out), out, (out > -jnp.inf).astype(out.dtype))


def cast(x: Any, dtype: Any) -> Any:
    """``x`` in ``dtype``."""
    return x.astype(dtype)


# t below this: one term dominates, see the module's docstring.
_DOMINANT = 2.0**-20


def _split(x2: Any) -> tuple[Any, Any, Any, Any, Any]:
    """``(m, d, e, t, ok)`` of each row: the maximum, ``d = x - m`` as
    rounded, ``e = exp(x - m)`` with that rounding undone, ``t`` in float64,
    and the certified rows."""
    jnp = _jnp()
    m = jnp.max(x2, axis=1)[:, None]
    d = x2 - m
    # Knuth's TwoSum: r is exactly (x - m) - d, in float32.
    back = d - x2
    r = (x2 - (d - back)) + (-m - back)
    e = jnp.exp(d)
    e = e + e * r
    t = jnp.sum(e.astype(jnp.float64), axis=1) - 1.0
    ok = jnp.isfinite(m[:, 0]) & (t >= _DOMINANT)
    return m[:, 0], d, e, t, ok


# XLA's CPU fusion of a float64 sum of float32 terms slows down by an order
# of magnitude per entry once the array is far larger than the caches
# (2048x32000 float32: 0.8 s, against 3.5 ms for 512x8192): arrays of more
# than LARGE entries are mapped over blocks of whole rows of about BLOCK
# entries, which keeps it at speed.
LARGE = 1 << 24
BLOCK = 1 << 15


def _block_rows(nrows: int, n: int) -> int | None:
    """Rows per block (a divisor of ``nrows``), or None for one block."""
    if nrows * n <= LARGE:
        return None
    target = max(1, min(nrows, BLOCK // n))
    return next(r for r in range(target, 0, -1) if nrows % r == 0)


def _by_blocks(fast: Callable[..., tuple[Any, Any]], *rows: Any) -> tuple[Any, Any]:
    """``fast(*rows)``, computed block by block when the rows are many:
    ``rows`` are the 2-D rows and any per-row arrays that go with them."""
    nrows, n = rows[0].shape
    per = _block_rows(nrows, n)
    if per is None:
        return fast(*rows)
    lax = importlib.import_module("jax.lax")
    blocks = tuple(r.reshape(nrows // per, per, *r.shape[1:]) for r in rows)
    out, ok = lax.map(lambda block: fast(*block), blocks)
    return out.reshape(nrows, *out.shape[2:]), ok.reshape(nrows)


def _guarded(
    fast: Callable[..., tuple[Any, Any]], exact: Callable[..., Any]
) -> Callable[..., Any]:
    """``fast`` where it certifies every row, ``exact`` otherwise; the
    derivatives are always ``exact``'s. Both take the rows and any per-row
    arrays (class indices) after them."""
    jax = importlib.import_module("jax")

    @jax.custom_jvp  # type: ignore[untyped-decorator]
    def run(*rows: Any) -> Any:
        out, ok = _by_blocks(fast, *rows)
        return jax.lax.cond(ok.all(), lambda: out, lambda: exact(*rows))

    @run.defjvp  # type: ignore[untyped-decorator]
    def jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
        return jax.jvp(exact, primals, tangents)  # type: ignore[no-any-return]

    return run  # type: ignore[no-any-return]


@functools.cache
def _logsumexp(exact: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def fast(x2: Any) -> tuple[Any, Any]:
        jnp = _jnp()
        m, _, _, t, ok = _split(x2)
        out = m.astype(jnp.float64) + jnp.log1p(t)
        k = _bounds.rounding_factor(EXP_ULPS[32], 32)
        return out, ok & (jnp.abs(out) * (1.0 + t) >= k * t)

    return _guarded(fast, exact)


def logsumexp(x2: Any, exact: Callable[[Any], Any]) -> tuple[Any, None]:
    """Each row's log-sum-exp in float64; ``exact(rows)`` is the
    standard-only path, in float64."""
    return _logsumexp(exact)(x2), None


@functools.cache
def _normalised(kind: str, exact: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def fast(x2: Any) -> tuple[Any, Any]:
        jnp = _jnp()
        _, d, e, t, ok = _split(x2)
        if kind == "softmax":
            return e / (1.0 + t).astype(x2.dtype)[:, None], ok
        # (x - m) - log1p(t): both terms are <= 0; d rounds once, and so
        # do log1p(t) and the difference.
        return d - jnp.log1p(t).astype(x2.dtype)[:, None], ok

    return _guarded(fast, exact)


def normalised(x2: Any, kind: str, exact: Callable[[Any], Any]) -> tuple[Any, None]:
    """The rows' ``log_softmax`` or ``softmax`` (``kind``) in their dtype;
    ``exact(rows)`` is the standard-only path."""
    return _normalised(kind, exact)(x2), None


@functools.cache
def _cross_entropy(
    ignore: int | None, exact: Callable[[Any, Any], Any]
) -> Callable[[Any, Any], Any]:
    def fast(x2: Any, target: Any) -> tuple[Any, Any]:
        jnp = _jnp()
        m, _, _, t, ok = _split(x2)
        valid = (target >= 0) & (target < x2.shape[1])
        at = jnp.where(valid, target, 0)[:, None]
        picked = jnp.take_along_axis(x2, at, axis=1)[:, 0]
        # (m - x[target]) + log1p(t): two non-negative terms, so that a
        # confident prediction's tiny loss keeps its digits. m - x[target]
        # of two float32 numbers is exact in float64 unless their exponents
        # lie 29 apart, and then within a float64 ulp.
        loss = (m.astype(jnp.float64) - picked.astype(jnp.float64)) + jnp.log1p(t)
        # Out-of-range indices go to the exact path, which gives them NaN.
        ok = ok & valid
        if ignore is not None:
            counted = target != ignore
            loss = jnp.where(counted, loss, 0.0)
            ok = ok | ~counted
        return loss, ok

    return _guarded(fast, exact)


def cross_entropy(
    x2: Any, target: Any, ignore: int | None, exact: Callable[[Any, Any], Any]
) -> tuple[Any, Any]:
    """Each row's ``logsumexp - x[target]`` in float64, 0 where the target
    is ``ignore``, and the mask of the counted rows (None: all).
    ``exact(rows, target)`` is the standard-only path, in float64."""
    loss = _cross_entropy(ignore, exact)(x2, target)
    return loss, None if ignore is None else target != ignore
