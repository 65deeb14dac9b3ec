"""JAX (float32): the kernels of ``_traced``, for XLA to fuse, guarded.

Where any row is not certified, ``lax.cond`` runs the standard-only path
instead, on every row. Derivatives are closed forms (a ``custom_jvp``) in
a pass or two over the rows, as ``jax.nn``'s, whichever branch ran, with
the standard-only path's values where a row's maximum is not finite.

On the CPU, ``log_softmax`` and ``softmax`` call the C kernel of
``_fused`` instead, where it was built, as an XLA custom call
(``jax.ffi``): one pass over memory where XLA's fusions take three, and
every row done, unguarded. The loss calls it too, guarded as the traced
kernels are (rows it leaves, such as a class out of range, send the call
to the standard-only path), and so does ``logsumexp`` on arrays too large
for the traced kernel's one pass; smaller ones keep it in x64 mode, where
XLA's float32 exponential in one fused pass is faster than the kernel's
float64 one. Without x64 mode, where the traced kernels have no float64
to sum in, every call takes the kernel.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from . import _fused, _traced

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


def _jnp() -> Any:
    return importlib.import_module("jax.numpy")


def accepts(x: Any) -> bool:
    """Whether ``x`` is an array these kernels run on."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.Array)


def eligible(x: Any, func: str) -> bool:
    """Whether the kernels compute ``func`` of ``x``: float32, not empty,
    with float64 at hand to sum in (float64 input, which has nothing wider
    to undo its shift's rounding in, keeps the standard-only path), or
    without it where the C kernel computes them (``_native``), in float64
    of its own."""
    jnp = _jnp()
    if x.dtype != jnp.float32 or x.size == 0:
        return False
    return _wide() or _native(x)


def now(x: Any) -> bool:
    """Whether the kernels hand back values in this call: never, as JAX's
    calls are traced and compiled."""
    return False


def _wide() -> bool:
    """Whether JAX's x64 mode is on: float64 at hand."""
    return bool(sys.modules["jax"].config.jax_enable_x64)


def _widest() -> Any:
    """float64 in x64 mode, float32 without it."""
    jnp = _jnp()
    return jnp.float64 if _wide() else jnp.float32


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


# XLA's float64 reduction of float32 terms slows down by an order of
# magnitude on rows longer than LONG entries (4M entries in rows of 16384:
# 5.2 ms; of 17000: 61 ms) and on arrays far larger than the caches
# (2048x32000: 1.2 s). A long row whose length has a divisor that makes
# rows of SHORT to LONG entries is summed as such rows (``_traced.rest``'s
# parts: at 128x32000, 4.2 ms against 9.1 for whole rows). Other long
# rows, and arrays of more than LARGE entries, are mapped over blocks of
# whole rows of about BLOCK entries (4 MiB), each summed in parts, or by
# ``_split``: 24 ms for 500x32000, against 262 ms unblocked.
LONG = 1 << 14
SHORT = 1 << 10
LARGE = 1 << 24
BLOCK = 1 << 20


def _parts(n: int) -> int:
    """The fewest parts of a row of ``n`` entries whose length lies between
    ``SHORT`` and ``LONG``, or 1 (one part) where none does or is needed."""
    if n <= LONG:
        return 1
    return next(
        (k for k in range(2, n // SHORT + 1) if n % k == 0 and n // k <= LONG), 1
    )


@functools.cache
def _groups(n: int) -> tuple[int, int]:
    """``(k, depth)``: a row of ``n`` is summed in groups of ``k`` terms,
    then the ``n // k`` group sums and the ``n % k`` terms left over; the
    rounding, in any order within each level, is within ``depth`` ulps of
    the sum, ``depth = k + n // k + n % k`` (about ``2 sqrt(n)``, the least
    over ``k``)."""
    return min(
        ((k, k + n // k + n % k) for k in range(1, 2 * math.isqrt(n) + 2)),
        key=lambda kd: kd[1],
    )


def _split(jnp: Any, e: Any) -> tuple[Any, int]:
    """``_traced.Total`` for the blocks of long rows and large arrays, whose
    float64 reductions run slowly: each group of terms (``_groups``) is
    summed as a matrix-vector product that accumulates in float64 (each
    product with 1 exact), at the speed of XLA's float32 sum, then the
    group sums are. One product over whole rows may be a running sum,
    ``n`` ulps (a block of 30 rows of 32000 entries, one at 0 and the others
    equal and 23.5 below it, was 6 ulps off in ``log_softmax``)."""
    rows, n = e.shape
    k, depth = _groups(n)
    g = n // k
    head = e if g * k == n else e[:, : g * k]
    ones = jnp.ones(k, dtype=e.dtype)
    parts = jnp.dot(head.reshape(rows, g, k), ones, preferred_element_type=jnp.float64)
    s = jnp.sum(parts, axis=1)
    if g * k < n:
        s = s + jnp.sum(e[:, g * k :].astype(jnp.float64), axis=1)
    return s, depth


def _cond(ok: Any, fast: Callable[[], Any], slow: Callable[[], Any]) -> Any:
    """``_traced.Cond`` by ``lax.cond``."""
    return importlib.import_module("jax.lax").cond(ok.all(), fast, slow)


def _fence(x2: Any) -> Any:
    """The rows of a row's parts, kept out of the fusions that take them:
    fused, the reshape is indexed entry by entry, and a float64 sum of
    exp over 128x32000 in rows of 8000 took 5.3 ms, against 2.3 fenced
    (what an input of that shape takes)."""
    return importlib.import_module("jax.lax").optimization_barrier(x2)


def _rest(total: _traced.Total) -> _traced.Rest:
    """The kernels' ``_traced.Rest``, summing by ``total``."""
    return _traced.rest(total, _cond, _parts, fence=_fence)


def _block_rows(nrows: int, n: int) -> int | None:
    """Rows per block (a divisor of ``nrows``), or None for one block."""
    if nrows * n <= LARGE and (n <= LONG or _parts(n) > 1):
        return None
    target = max(1, min(nrows, BLOCK // n))
    return next(r for r in range(target, 0, -1) if nrows % r == 0)


def _rowwise(f: Callable[..., Any], *rows: Any) -> Any:
    """``f(*rows, rest)``, a tuple of per-row arrays, computed block by block
    when the rows are many: ``rows`` are the 2-D rows and any per-row arrays
    that go with them, ``rest`` the kernels' ``_traced.Rest``. An output
    of a row's size is written outside, in one pass over the whole array:
    inside the map, each block's is copied out again."""
    nrows, n = rows[0].shape
    per = _block_rows(nrows, n)
    parts = _parts(n)
    if per is None:
        return f(*rows, _rest(_traced.sum64))
    lax = importlib.import_module("jax.lax")
    blocks = tuple(r.reshape(nrows // per, per, *r.shape[1:]) for r in rows)
    rest = _rest(_split if parts == 1 else _traced.sum64)
    out = lax.map(lambda block: f(*block, rest), blocks)
    return tuple(o.reshape(nrows, *o.shape[2:]) for o in out)


# A branch of lax.cond that does not run still costs XLA's CPU runtime time
# in proportion to its temporaries (measured at 512x8192: a guard whose
# other branch held 48 MiB of them took 11.7 ms, against 4.5 for one whose
# other branch held none). The standard-only path, the guards' other
# branch, holds several times the rows' size: it runs over blocks of rows
# of about SLOW_BLOCK entries.
SLOW_BLOCK = 1 << 16


def _blockwise(f: Callable[..., Any], *rows: Any) -> Any:
    """``f(*rows)``, a tuple of arrays with one leading entry per row, for
    ``rows`` (the 2-D rows and any per-row arrays that go with them),
    computed over blocks of about ``SLOW_BLOCK`` entries by ``lax.map``,
    and the rows left over at once."""
    nrows, n = rows[0].shape
    per = max(1, min(nrows, SLOW_BLOCK // n))
    count = nrows // per
    if count <= 1:
        return f(*rows)
    jnp = _jnp()
    lax = importlib.import_module("jax.lax")
    head = tuple(r[: count * per].reshape(count, per, *r.shape[1:]) for r in rows)
    out = lax.map(lambda block: f(*block), head)
    out = tuple(o.reshape(count * per, *o.shape[2:]) for o in out)
    if count * per == nrows:
        return out
    tail = f(*(r[count * per :] for r in rows))
    return tuple(jnp.concatenate([o, t]) for o, t in zip(out, tail, strict=True))


Fast = Callable[..., tuple[Callable[[], Any], Any, Any]]


def _guarded(
    tiers: tuple[Fast, ...],
    exact: Callable[..., Any],
    special: Callable[..., Any],
    slope: Callable[..., Any],
) -> Callable[..., Any]:
    """The first of the fast paths ``tiers`` that certifies every row,
    ``exact`` where none does, with the closed-form derivative ``slope``.

    All take the rows and any per-row arrays (class indices) after them.
    A fast path gives ``(finish, ok, aux)``: what computes its result,
    which runs inside the branch (an array of the input's size passed
    through from outside would be copied), the certified rows, and a
    float64 value per row for ``slope``; ``special(jnp, rows[0])`` gives
    that value in the last branch. Each tier runs only where those before
    it did not certify. ``slope(rows, out, aux, tangents)`` gives the
    tangents of the result and of ``aux``, linear in the rows' tangents:
    JAX transposes them for reverse mode, and differentiates them, through
    this function's own derivative, for higher ones.
    """
    jax = importlib.import_module("jax")

    def attempt(rows: tuple[Any, ...], tiers: tuple[Fast, ...]) -> Any:
        if not tiers:

            def both(*block: Any) -> tuple[Any, Any]:
                return exact(*block), special(_jnp(), block[0])

            return _blockwise(both, *rows)
        finish, ok, aux = tiers[0](*rows)
        return jax.lax.cond(
            ok.all(), lambda: (finish(), aux), lambda: attempt(rows, tiers[1:])
        )

    return _differentiable(lambda *rows: attempt(rows, tiers), slope)


def _differentiable(
    body: Callable[..., tuple[Any, Any]], slope: Callable[..., Any]
) -> Callable[..., Any]:
    """``body``'s result, compiled, with the closed-form derivative
    ``slope``: ``body(*rows)`` gives ``(out, aux)``, as ``_guarded``'s."""
    jax = importlib.import_module("jax")

    @jax.custom_jvp  # type: ignore[untyped-decorator]
    def run(*rows: Any) -> Any:
        return body(*rows)

    @run.defjvp  # type: ignore[untyped-decorator]
    def jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
        out, aux = run(*primals)
        return (out, aux), slope(primals, out, aux, tangents)

    # Compiled once for each shape, in eager calls too: there, the branches
    # of lax.cond close over the input's values, and a cond traced anew
    # for each input would be compiled anew.
    compiled: Callable[..., Any] = jax.jit(lambda *rows: run(*rows)[0])
    return compiled


# Entries below which a custom call stays on one thread: the kernel starts
# threads of its own for each call, which costs more than they save on
# smaller calls (alternated, at 64x600 the loss took 0.14 ms on one thread
# and 0.21 on two, at 128x1024 0.36 and 0.44, at 256x2048 0.83 and 0.76).
XLA_PARALLEL = 1 << 18


@functools.cache
def _registered() -> bool:
    """Whether the C kernel's XLA handlers (``_fused``) are registered, as
    ``lsekit_log_softmax``, ``lsekit_softmax``, ``lsekit_logsumexp`` and
    ``lsekit_cross_entropy`` for the CPU, and answer:
    once, where the kernel was built. Calls of ``XLA_PARALLEL`` entries or
    more take as many threads as XLA's own CPU operations (one per core).

    The handlers speak version 0.3 of XLA's FFI, which XLA keeps for a
    year after a newer one; a JAX that no longer does, or refuses them
    otherwise, gets the traced kernels instead of an error in every call.
    """
    kernel = _fused._load()
    if kernel is None:
        return False
    jax = sys.modules["jax"]
    jnp = _jnp()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    try:
        for kind, handler in kernel.xla(cores, XLA_PARALLEL).items():
            jax.ffi.register_ffi_target(f"lsekit_{kind}", handler, platform="cpu")
        with jax.ensure_compile_time_eval():
            out, _ = _kernel_rows("softmax", jnp.zeros((1, 2), dtype=jnp.float32))
            return bool((out == 0.5).all())
    except Exception:  # any refusal (lowering, version, call): not this path
        return False


def _native(x2: Any) -> bool:
    """Whether the C kernel takes the rows ``x2``: built, on, and on the
    CPU (the default device, where ``x2`` is traced)."""
    jax = sys.modules["jax"]
    if not _fused.ENABLED or jax.default_backend() != "cpu":
        return False
    concrete = not isinstance(x2, jax.core.Tracer)
    if concrete and any(d.platform != "cpu" for d in x2.devices()):
        return False
    return _registered()


def _kernel_rows(kind: str, x2: Any, zeroed: bool = False) -> tuple[Any, Any]:
    """The C kernel's ``log_softmax`` or ``softmax`` (``kind``) of the rows
    ``x2``, and their maxima (NaN where a row holds a NaN): float32, which
    needs no x64 mode. With ``zeroed``, the rows whose maximum is not
    finite are 0."""
    jax = sys.modules["jax"]
    shapes = [
        jax.ShapeDtypeStruct(x2.shape, x2.dtype),
        jax.ShapeDtypeStruct(x2.shape[:-1], x2.dtype),
    ]
    # Under vmap, the batch is more rows.
    call = jax.ffi.ffi_call(f"lsekit_{kind}", shapes, vmap_method="broadcast_all")
    out, m = call(x2, **({"zeroed": 1.0} if zeroed else {}))
    return out, m


def _logsumexp_slope(
    primals: tuple[Any, ...], out: Any, aux: Any, tangents: tuple[Any, ...]
) -> Any:
    """``sum(p dx)``; a row holding ``+inf`` (``aux`` of them) shares the
    derivative among them, an all ``-inf`` one has none."""
    jnp = _jnp()
    (x2,), (dx,) = primals, tangents
    p = _traced.logsumexp_shares(jnp, x2, out, aux)
    return jnp.sum(p * dx, axis=1).astype(out.dtype), jnp.zeros_like(aux)


@functools.cache
def _logsumexp(exact: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def fast(x2: Any) -> tuple[Callable[[], Any], Any, Any]:
        out, ok = _rowwise(functools.partial(_traced.logsumexp, _jnp()), x2)
        return lambda: out, ok, _jnp().zeros(x2.shape[0], dtype="float64")

    return _guarded((fast,), exact, _traced.infinities, _logsumexp_slope)


def _kernel_reduced(name: str, x2: Any, *more: Any, **attributes: Any) -> Any:
    """The C kernel's ``logsumexp`` or ``cross_entropy`` (``name``) of the
    rows ``x2``: per row, the loss (for ``cross_entropy``), the log-sum-exp
    in ``_widest()`` (from the kernel's two float32 parts: its rounding and
    the rest), and whether the row is done (left to the caller where not).
    ``more``: the class indices; ``attributes``: the smoothing."""
    jax = sys.modules["jax"]
    count = 4 if name == "cross_entropy" else 3
    shapes = [jax.ShapeDtypeStruct(x2.shape[:-1], x2.dtype)] * count
    call = jax.ffi.ffi_call(f"lsekit_{name}", shapes, vmap_method="broadcast_all")
    *loss, hi, lo, done = call(x2, *more, **attributes)
    lse = hi.astype(_widest()) + lo.astype(_widest()) if _wide() else hi
    return (*(v.astype(_widest()) for v in loss), lse, done > 0)


@functools.cache
def _kernel_logsumexp(exact: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The C kernel's ``logsumexp`` in float32, guarded: its rows whose
    maximum is not finite, or whose result the kernel does not certify,
    send every row to ``exact``."""

    def fast(x2: Any) -> tuple[Callable[[], Any], Any, Any]:
        out, ok = _kernel_reduced("logsumexp", x2)
        return lambda: out, ok, _jnp().zeros_like(out)

    def special(jnp: Any, x2: Any) -> Any:
        return _traced.infinities(jnp, x2, dtype=_widest())

    return _guarded((fast,), exact, special, _logsumexp_slope)


def logsumexp(x2: Any, exact: Callable[[Any], Any]) -> tuple[Any, None]:
    """Each row's log-sum-exp in float64 (float32 without x64 mode);
    ``exact(rows)`` is the standard-only path, in the same dtype. The C
    kernel takes arrays larger than ``LARGE`` entries, which the traced
    kernels map over blocks (at 2048x32000: 54 ms against 88, and
    ``jax.nn``'s 50), and every array without x64 mode; XLA's fused
    float32 pass is faster below (at 512x8192: 3.3 ms against 4.8)."""
    if not _wide() or (math.prod(x2.shape) > LARGE and _native(x2)):
        return _kernel_logsumexp(exact)(x2), None
    return _logsumexp(exact)(x2), None


def _normalised_slope(kind: str) -> Callable[..., Any]:
    """The tangent of ``softmax`` or ``log_softmax``, from its output: ``p
    (dx - sum(p dx))`` and ``dx - sum(p dx)``; 0 in rows whose maximum is
    not finite (``aux`` 0), as the standard-only path's gradient under
    ``jax.jit``."""

    def slope(
        primals: tuple[Any, ...], out: Any, aux: Any, tangents: tuple[Any, ...]
    ) -> Any:
        jnp = _jnp()
        (dx,) = tangents
        live = (aux > 0)[:, None]
        if kind == "softmax":
            # p is 0 in the rows without a derivative.
            p = jnp.where(live, out, 0.0)
            pdx = p * dx
            return pdx - p * jnp.sum(pdx, axis=1, keepdims=True), jnp.zeros_like(aux)
        p = jnp.where(live, jnp.exp(out), 0.0)
        # Scaled apart, the sum and dx: a scaled dx would be written out
        # whole in reverse mode, a pass of its own.
        scale = jnp.where(live, 1.0, 0.0).astype(dx.dtype)
        moved = dx * scale - jnp.sum(p * dx, axis=1, keepdims=True) * scale
        return moved, jnp.zeros_like(aux)

    return slope


def _divided(x2: Any) -> tuple[Callable[[], Any], Any, Any]:
    """``softmax`` in two passes (``_traced.divisors``)."""
    jnp = _jnp()
    s, ok = _rowwise(functools.partial(_traced.divisors, jnp), x2)
    finish = functools.partial(_traced.divided, jnp, x2, s)
    return finish, ok, jnp.ones(x2.shape[0], dtype="float64")


@functools.cache
def _kernel_softmax() -> Callable[[Any], Any]:
    """The C kernel's ``softmax``, as ``_kernel_normalised``'s, whose
    derivative takes the kernel's shares ``p`` with the rows whose maximum
    is not finite 0 (``zeroed``), where the slope's mask of them would be
    a copy of the rows of its own: in a training step, which needs no
    other output, a pass over memory in four."""
    jax = importlib.import_module("jax")
    jnp = _jnp()

    @jax.custom_jvp  # type: ignore[untyped-decorator]
    def shares(x2: Any) -> tuple[Any, Any]:
        return _kernel_rows("softmax", x2, zeroed=True)

    @shares.defjvp  # type: ignore[untyped-decorator]
    def shares_jvp(
        primals: tuple[Any, ...], tangents: tuple[Any, ...]
    ) -> tuple[Any, Any]:
        (x2,), (dx,) = primals, tangents
        p, m = shares(x2)
        pdx = p * dx
        slope = pdx - p * jnp.sum(pdx, axis=1, keepdims=True)
        return (p, m), (slope, jnp.zeros_like(m))

    @jax.custom_jvp  # type: ignore[untyped-decorator]
    def run(x2: Any) -> Any:
        return _kernel_rows("softmax", x2)[0]

    @run.defjvp  # type: ignore[untyped-decorator]
    def jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
        (p, m), (slope, _) = jax.jvp(shares, primals, tangents)
        (x2,) = primals
        # The rows the zeroed call left 0, as row_special writes them.
        nan = jnp.isnan(m)[:, None] | (x2 == jnp.inf)
        special = jnp.where(nan, jnp.nan, 0.0).astype(p.dtype)
        return jnp.where(jnp.isfinite(m)[:, None], p, special), slope

    compiled: Callable[[Any], Any] = jax.jit(run)
    return compiled


@functools.cache
def _kernel_normalised(kind: str) -> Callable[[Any], Any]:
    """The C kernel's ``log_softmax`` or ``softmax`` (``kind``): every row
    done in one pass over memory, those whose maximum is not finite as the
    standard-only path gives them; no guard."""
    if kind == "softmax":
        return _kernel_softmax()

    def body(x2: Any) -> tuple[Any, Any]:
        out, m = _kernel_rows(kind, x2)
        jnp = _jnp()
        live = jnp.where(jnp.isnan(m), m, jnp.isfinite(m).astype(m.dtype))
        return out, live

    return _differentiable(body, _normalised_slope(kind))


@functools.cache
def _normalised(kind: str, exact: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def fast(x2: Any) -> tuple[Callable[[], Any], Any, Any]:
        m, t, ok = _rowwise(functools.partial(_traced.stats, _jnp()), x2)
        finish = functools.partial(_traced.normalised, _jnp(), x2, m, t, kind)
        return finish, ok, _jnp().ones(x2.shape[0], dtype="float64")

    tiers: tuple[Fast, ...] = (_divided, fast) if kind == "softmax" else (fast,)
    return _guarded(tiers, exact, _traced.finite_maxima, _normalised_slope(kind))


def normalised(x2: Any, kind: str, exact: Callable[[Any], Any]) -> tuple[Any, None]:
    """The rows' ``log_softmax`` or ``softmax`` (``kind``) in their dtype;
    ``exact(rows)`` is the standard-only path."""
    if _native(x2):
        return _kernel_normalised(kind)(x2), None
    return _normalised(kind, exact)(x2), None


def _cross_entropy_slope(ignore: int | None, smoothing: float) -> Callable[..., Any]:
    """The tangent of the loss, ``sum(p dx) - dx[target]`` (with the target
    smoothed, ``sum(p dx) - (1 - eps) dx[target] - eps / n sum(dx)``), and
    of each row's log-sum-exp ``aux``, ``sum(p dx)``; 0 where the target is
    ignored and where the log-sum-exp is not finite, as the standard-only
    path's under ``jax.jit``."""

    def slope(
        primals: tuple[Any, ...], out: Any, aux: Any, tangents: tuple[Any, ...]
    ) -> Any:
        jnp = _jnp()
        (x2, target), (dx, _) = primals, tangents
        keep = jnp.isfinite(aux)
        valid = (target >= 0) & (target < x2.shape[1])
        if ignore is not None:
            keep = keep & (target != ignore)
        at = jnp.where(valid, target, 0)[:, None]
        picked = jnp.take_along_axis(dx, at, axis=1)[:, 0]
        spread = jnp.sum(_traced.shares(jnp, x2, aux) * dx, axis=1)
        own = spread - picked
        if smoothing:
            n = x2.shape[1]
            own = own + smoothing * (picked - jnp.sum(dx, axis=1) / n)
        tangent = own.astype(aux.dtype) * jnp.where(keep, 1.0, 0.0)
        return tangent, spread.astype(aux.dtype)

    return slope


@functools.cache
def _cross_entropy(
    ignore: int | None, smoothing: float, exact: Callable[[Any, Any], Any]
) -> Callable[[Any, Any], Any]:
    def fast(x2: Any, target: Any) -> tuple[Callable[[], Any], Any, Any]:
        jnp = _jnp()
        take = functools.partial(jnp.take_along_axis, axis=1)

        def loss(x2: Any, target: Any, rest: Any) -> tuple[Any, Any, Any]:
            return _traced.cross_entropy(jnp, x2, target, ignore, take, rest, smoothing)

        out, ok, lse = _rowwise(loss, x2, target)
        return lambda: out, ok, lse

    slope = _cross_entropy_slope(ignore, smoothing)
    return _guarded((fast,), exact, _traced.log_sum, slope)


@functools.cache
def _kernel_cross_entropy(
    ignore: int | None, smoothing: float, exact: Callable[[Any, Any], Any]
) -> Callable[[Any, Any], Any]:
    """The C kernel's loss in float32, guarded as ``_kernel_logsumexp``;
    ignored rows count as done."""

    def fast(x2: Any, target: Any) -> tuple[Callable[[], Any], Any, Any]:
        jnp = _jnp()
        attributes = {"smoothing": float(smoothing)} if smoothing else {}
        loss, lse, ok = _kernel_reduced("cross_entropy", x2, target, **attributes)
        if ignore is not None:
            counted = target != ignore
            loss = jnp.where(counted, loss, 0.0)
            ok = ok | ~counted
        return lambda: loss, ok, lse

    def special(jnp: Any, x2: Any) -> Any:
        return _traced.log_sum(jnp, x2, dtype=_widest())

    return _guarded((fast,), exact, special, _cross_entropy_slope(ignore, smoothing))


def cross_entropy(
    x2: Any,
    target: Any,
    ignore: int | None,
    smoothing: float,
    exact: Callable[[Any, Any], Any],
) -> tuple[Any, Any, None]:
    """Each row's ``logsumexp - x[target]`` in float64, with the target
    smoothed by ``smoothing``, 0 where the target is ``ignore``, the mask
    of the counted rows (None: all), and None: no rows for the caller to
    recompute; float32 without x64 mode. ``exact(rows, target)`` is the
    standard-only path, in the same dtype."""
    build = _kernel_cross_entropy if _native(x2) else _cross_entropy
    loss = build(ignore, smoothing, exact)(x2, target)
    return loss, None if ignore is None else target != ignore, None
