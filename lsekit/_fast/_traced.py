"""The float32 kernels as one traced expression, for a compiler to fuse.

JAX (under ``jax.jit`` and eagerly) and PyTorch under ``torch.compile``
run these; each library's module guards them (``jax.py``, ``torch.py``).
A compiler fuses an elementwise expression into one reduction, but not two
reductions over one input, nor a masked one, at speed: what is cheap is the
maximum, then a single float64 sum. So the terms are shifted, ``d = x - m``
in float32, and the rounding of the shift, ``r = (x - m) - d`` (exact by
TwoSum), is undone to first order: ``exp(d) + exp(d) r``, its error ``r**2
/ 2`` far below a float32 ulp. That is exact in the argument, like the
eager kernels' unshifted exponentials (see ``_blocked``). The maximum's
term is exactly 1 and is subtracted from the float64 sum, which leaves
``t`` with a relative error of ``2**-53 (1 + t) / t`` times the depth of
the sum: rows where one term dominates (``t < 2**-20``) are not certified,
nor those whose maximum is not finite. Where any row is not, the guard runs
the standard-only path instead, on every row.

Every function takes the namespace ``xp`` and 2-D float32 rows.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import _bounds

__all__ = ["cross_entropy", "logsumexp", "normalised", "stats", "sum64"]

# The compiled float32 exp of XLA and of Inductor on the CPU is within 0.99
# ulps over [-104, 88.7] (measured), and e + e r rounds once more.
EXP_ULPS = 1.5

# t below this: one term dominates, see the module's docstring.
_DOMINANT = 2.0**-20


def _terms(xp: ModuleType, x2: Any, m: Any) -> tuple[Any, Any]:
    """``(d, e)``: ``d = x - m`` as rounded, and ``e = exp(x - m)`` with
    that rounding undone; ``m`` the maxima, one per row, as a column."""
    d = x2 - m
    # Knuth's TwoSum: r is exactly (x - m) - d, in float32.
    back = d - x2
    r = (x2 - (d - back)) + (-m - back)
    e = xp.exp(d)
    return d, e + e * r


Total = Callable[[Any], Any]


def sum64(xp: ModuleType) -> Total:
    """Row sums of float32 terms, accumulated in float64: the default
    ``total`` of the functions below."""
    return lambda e: xp.sum(xp.astype(e, xp.float64), axis=1)


def stats(xp: ModuleType, x2: Any, total: Total | None = None) -> tuple[Any, Any, Any]:
    """``(m, t, ok)``: each row's maximum (a float32 column), the sum of
    its other terms ``exp(x - m)`` in float64, and the certified rows.
    ``total(e)``: the row sums of float32 terms in float64 (``sum64``)."""
    m = xp.max(x2, axis=1, keepdims=True)
    _, e = _terms(xp, x2, m)
    t = (total or sum64(xp))(e) - 1.0
    ok = xp.isfinite(m[:, 0]) & (t >= _DOMINANT)
    return m, t, ok


def logsumexp(xp: ModuleType, x2: Any, total: Total | None = None) -> tuple[Any, Any]:
    """Each row's log-sum-exp, in float64, and the certified rows."""
    m, t, ok = stats(xp, x2, total)
    out = xp.astype(m[:, 0], xp.float64) + xp.log1p(t)
    k = _bounds.rounding_factor(EXP_ULPS, 32)
    return out, ok & (xp.abs(out) * (1.0 + t) >= k * t)


def normalised(xp: ModuleType, x2: Any, m: Any, t: Any, kind: str) -> Any:
    """The rows' ``log_softmax`` or ``softmax`` (``kind``) in float32, from
    their ``stats``: a pass of its own, which the guard runs only where
    every row is certified."""
    d, e = _terms(xp, x2, m)
    if kind == "softmax":
        return e / xp.astype(1.0 + t, x2.dtype)[:, None]
    # (x - m) - log1p(t): both terms are <= 0; d rounds once, and so do
    # log1p(t) and the difference.
    return d - xp.astype(xp.log1p(t), x2.dtype)[:, None]


def cross_entropy(
    xp: ModuleType,
    x2: Any,
    target: Any,
    ignore: int | None,
    take: Callable[[Any, Any], Any],
    total: Total | None = None,
) -> tuple[Any, Any]:
    """Each row's ``logsumexp - x[target]`` in float64, 0 where the target
    is ``ignore``; ignored rows count as certified. ``take(x2, at)`` is
    ``take_along_axis(x2, at, axis=1)`` in the library's fastest form (of
    PyTorch's, ``take_along_dim`` specialises a compiled graph to the
    number of classes, ``gather`` does not)."""
    m, t, ok = stats(xp, x2, total)
    valid = (target >= 0) & (target < x2.shape[1])
    at = xp.where(valid, target, xp.zeros_like(target))[:, None]
    picked = take(x2, at)[:, 0]
    # (m - x[target]) + log1p(t): two non-negative terms, so that a
    # confident prediction's tiny loss keeps its digits. m - x[target] of
    # two float32 numbers is exact in float64 unless their exponents lie
    # 29 apart, and then within a float64 ulp.
    loss = (xp.astype(m[:, 0], xp.float64) - xp.astype(picked, xp.float64)) + xp.log1p(
        t
    )
    # Out-of-range indices go to the standard-only path, which gives them
    # NaN.
    ok = ok & valid
    if ignore is not None:
        counted = target != ignore
        loss = xp.where(counted, loss, xp.zeros_like(loss))
        ok = ok | ~counted
    return loss, ok
