"""Dask: the steps of ``_core`` chunk by chunk, and the blocked product.

Written with the namespace's own functions, the steps of ``_core`` would
be graphs of elementwise operations over whole arrays, and on Dask two
things would then hold far more than a chunk in memory:

- The maxima of a slice come before the sums of its exponentials shifted
  by them: a second read of chunks that Dask keeps, every one of them,
  until the maxima, which depend on all of them, are known. Here the split
  of a slice is one reduction instead. Each chunk, in one task, is split
  around its own maxima, into the maxima, the weight at them and the pair
  ``(hi, lo)`` of the sum of the others: for NumPy float64 from the
  exponentials of the chunk itself summed in long double, within the range
  where NumPy's fast path trusts them, else by ``_core`` itself, with its
  compensated sum;
  Dask's reduction tree merges these, rescaling the sums of the chunks
  whose maxima lie below the others' by ``exp`` of the difference, in
  NumPy's long double where it is wider than float64, so that they keep
  their last bit. The input is read once.
- A chain of elementwise steps that Dask fuses into one task keeps every
  intermediate array of the chain until the task ends: tens of chunks.
  Here every step runs the ``_core`` functions themselves on the NumPy (or
  CuPy) chunks, in pieces that stay in cache, one task per chunk.

What comes after the split, the normalisations and the losses of every
class, reads the chunks again: along axes of a single chunk each task
does so at once, but where a reduced axis spans several chunks Dask keeps
them until the slice's sum is known.

``logmatmulexp`` multiplies block by block, each block product by the
eager implementation (NumPy's fast path), and combines the products along
the inner dimension by ``logsumexp``, as Dask's own matrix product sums
them: memory per task is that of a few blocks, whatever the shapes.

This module is imported only once a Dask array is seen.
"""

from __future__ import annotations

import functools
import itertools
import math
import sys
from collections.abc import Callable
from typing import Any

from . import _compat
from ._core import reductions as _impl
from ._fast import _bounds
from ._linalg import logmatmulexp as _logmatmulexp
from ._reductions import logsumexp as _logsumexp

__all__ = ["PASSES", "logmatmulexp"]


def _dask_array() -> Any:
    # Typed as Any: dask's annotations vary between versions.
    return sys.modules["dask.array"]


def _meta(x: Any, ndim: int | None = None, dtype: Any = None) -> Any:
    return _dask_array().utils.meta_from_array(x, ndim=ndim, dtype=dtype)


def _same_chunks(mine: tuple[Any, ...], theirs: tuple[Any, ...]) -> bool:
    # Unknown lengths (NaN, after boolean indexing) match each other.
    return len(mine) == len(theirs) and all(
        i == j or (i != i and j != j) for i, j in zip(mine, theirs, strict=True)
    )


def _aligned(x: Any, arrays: tuple[Any, ...]) -> tuple[Any, ...]:
    """``arrays`` (of the dimensions of ``x``, each of its length or 1) in
    the chunks of ``x``: Dask's map_blocks hands a dimension of a single
    chunk whole to every task, whatever its length."""
    out = []
    for y in arrays:
        chunks = tuple(
            mine if n == 1 or _same_chunks(mine, theirs) else theirs
            for n, mine, theirs in zip(y.shape, y.chunks, x.chunks, strict=True)
        )
        out.append(y if chunks == y.chunks else y.rechunk(chunks))
    return tuple(out)


def _pair_parts(
    xp: Any,
    terms: tuple[Any, ...],
    axis: tuple[int, ...],
    compensated: tuple[bool, ...],
) -> tuple[Any, ...]:
    """Each of ``terms`` summed over ``axis`` as ``(hi, lo)``
    (``sums_at_once``'s signature); a plain sum where not compensated."""
    out = []
    for t, compensate in zip(terms, compensated, strict=True):
        if compensate:
            out.append(_impl.compensated_parts(xp, t, axis))
        else:
            hi = xp.sum(t, axis=axis, keepdims=True)
            out.append((hi, xp.zeros_like(hi)))
    return tuple(out)


def _stacked(xp: Any, parts: tuple[Any, ...], axis: tuple[int, ...]) -> tuple[Any, ...]:
    """Each ``(hi, lo)`` of ``_pair_parts`` as one array, the two along the
    last of ``axis``."""
    return tuple(xp.concat([hi, lo], axis=max(axis)) for hi, lo in parts)


def _pairs(
    compensated: tuple[bool, ...], block: Any, axis: tuple[int, ...], keepdims: bool
) -> Any:
    """The pairs of several chunks (the columns of ``block``, its last axis)
    folded into one pair per column."""
    xp = _compat.namespace(block)
    columns = tuple(block[..., i] for i in range(block.shape[-1]))
    parts = _pair_parts(xp, columns, axis, compensated)
    return xp.stack(_stacked(xp, parts, axis), axis=-1)


def _totals(
    compensated: tuple[bool, ...], block: Any, axis: tuple[int, ...], keepdims: bool
) -> Any:
    """The last step of the tree: each column's pair, summed."""
    pairs = _pairs(compensated, block, axis, keepdims)
    last = max(axis)
    hi, lo = (
        tuple(slice(i, i + 1) if d == last else slice(None) for d in range(pairs.ndim))
        for i in (0, 1)
    )
    return pairs[hi] + pairs[lo]


def _keep(block: Any, axis: tuple[int, ...], keepdims: bool) -> Any:
    return block


def _fold(
    pieces: Any, axis: tuple[int, ...], compensated: tuple[bool, ...]
) -> tuple[Any, ...]:
    """The sums of the columns of ``pieces``, the pairs of the chunks."""
    da = _dask_array()
    totals = da.reduction(
        pieces,
        _keep,
        functools.partial(_totals, compensated),
        combine=functools.partial(_pairs, compensated),
        axis=axis,
        keepdims=True,
        dtype=pieces.dtype,
        meta=_meta(pieces),
    )
    return tuple(totals[..., i] for i in range(len(compensated)))


def _pair_chunks(x: Any, axis: tuple[int, ...], columns: int) -> tuple[Any, ...]:
    """The chunks of the pairs of the chunks of ``x``, ``columns`` of them."""
    last = max(axis)
    return (
        *(
            ((2 if i == last else 1),) * len(c) if i in axis else c
            for i, c in enumerate(x.chunks)
        ),
        (columns,),
    )


# A chunk is computed in pieces of about this many elements, whose
# temporaries stay in cache and come and go piece by piece: a task holds its
# chunk, its result and a few pieces, whatever the chunk's size.
_PIECE = 1 << 14

_Fold = Callable[[Any, tuple[int, ...], bool], Any]


def _in_pieces(
    fn: Callable[..., Any],
    x: Any,
    others: tuple[Any, ...],
    axis: tuple[int, ...],
    fold: _Fold | None,
) -> Any:
    """``fn(offsets, x, *others)`` over pieces of a chunk ``x`` cut along
    one axis (``others`` with it, where they have its length there),
    ``offsets`` where each piece begins along each axis.

    The cut runs along the outermost axis (not reduced, for a reduction)
    whose slices fit in a piece: the pieces of a C-ordered chunk are then
    contiguous, and reduce on their own. Failing that, along the longest
    axis.

    ``fold`` None: ``fn`` is elementwise, and its pieces are put together.
    Otherwise ``fn`` gives partial results of a reduction over ``axis``,
    which ``fold`` (Dask's ``combine`` signature) merges where the pieces
    were cut along ``axis``.
    """
    size = math.prod(x.shape)
    if x.ndim == 0 or size <= _PIECE:
        return fn((0,) * x.ndim, x, *others)
    along = next(
        (
            i
            for i, n in enumerate(x.shape)
            if n > 1 and size // n <= _PIECE and (fold is None or i not in axis)
        ),
        max(range(x.ndim), key=lambda i: x.shape[i]),
    )
    n = x.shape[along]
    step = max(1, n * _PIECE // size)
    parts = []
    for start in range(0, n, step):
        cut = (slice(None),) * along + (slice(start, start + step),)
        offsets = tuple(start if i == along else 0 for i in range(x.ndim))
        pieces = (y[cut] if y.shape[along] == n else y for y in others)
        parts.append(fn(offsets, x[cut], *pieces))
    xp = _compat.namespace(parts[0])
    out = xp.concat(parts, axis=along)
    if fold is not None and along in axis:
        out = fold(out, axis, True)
    return out


# The columns of a split's partial results, along a last axis of their own.
_M, _W, _HI, _LO, _AT = range(5)


def _split_piece(
    axis: tuple[int, ...],
    compensated: bool,
    weighted: bool,
    start: int | None,
    offsets: tuple[int, ...],
    a: Any,
    *rest: Any,
) -> Any:
    """A piece of a chunk split around its own maxima: the columns ``_M``
    to ``_LO`` (and ``_AT``, the logits at the indices into the classes
    from ``start`` on, 0 for the indices elsewhere). ``rest`` holds the
    piece of ``b`` (``weighted``), and the indices."""
    xp = _compat.namespace(a)
    if any(a.shape[i] == 0 for i in axis):
        # A chunk with no terms (boolean indexing leaves some): no maximum.
        shape = tuple(1 if i in axis else n for i, n in enumerate(a.shape))
        empty = xp.zeros(shape, dtype=a.dtype)
        columns = [xp.full(shape, -math.inf, dtype=a.dtype)]
        columns += [empty] * (_AT - 1 if start is None else _AT)
        return xp.stack(columns, axis=-1)
    b, rest = (rest[0], rest[1:]) if weighted else (None, rest)
    local = inside = None
    if start is not None:
        shifted = rest[0] - (start + offsets[axis[0]])
        inside = (shifted >= 0) & (shifted < a.shape[axis[0]])
        local = xp.where(inside, shifted, xp.zeros_like(shifted))
    m = xp.max(a, axis=axis, keepdims=True)
    found = None if b is not None else _unshifted(a, m, axis, compensated)
    picked = None
    if found is not None:
        columns = found
        if local is not None:
            picked = xp.take_along_axis(a, local, axis=axis[0])
    else:
        p = _impl.split_given(xp, a, b, m, axis, compensated, local, _pair_parts)
        columns, picked = [m, p.w[0], *p.s], p.at
    if inside is not None:
        columns.append(xp.where(inside, picked, 0.0))
    return xp.stack(columns, axis=-1)


def _unshifted(
    a: Any, m: Any, axis: tuple[int, ...], compensated: bool
) -> list[Any] | None:
    """The columns ``_M`` to ``_LO`` of a NumPy piece ``a`` of maxima ``m``,
    from the exponentials of ``a`` itself, as NumPy's fast path takes them
    (``_fast._bounds``); None where that path does not hold (a row out of
    its range, not NumPy float64, or compensated without a wider long
    double).

    ``exp(x)`` is exact in its argument, where ``exp(x - m)`` needs the
    rounding of the shift undone, and the sum of the terms below the
    maximum, in long double, carries 11 bits more than float64 without
    the compensated sum's passes: the piece reads ``a`` about four times
    instead of some twenty.
    """
    numpy = sys.modules.get("numpy")
    if numpy is None or type(a) is not numpy.ndarray or a.dtype != numpy.float64:
        return None
    wide = _wide(a) if compensated else numpy.float64
    if wide is None:
        return None
    # The maxima stay out of the sum, as in the split: 1 + t would round
    # away the terms below an ulp of 1.
    top = a == m
    terms = numpy.where(top, 0.0, numpy.exp(a))
    s = numpy.sum(terms, axis=axis, keepdims=True, dtype=wide)
    t = s / numpy.exp(m.astype(wide))
    hi = t.astype(a.dtype)
    n = math.prod(a.shape[i] for i in axis)
    if not bool(_bounds.certified(m, hi, s.astype(a.dtype), n, 64, False).all()):
        return None
    w = numpy.sum(top, axis=axis, keepdims=True, dtype=a.dtype)
    return [m, w, hi, (t - hi).astype(a.dtype)]


def _wide(block: Any) -> Any:
    """The dtype to rescale and add a block's partial sums in: NumPy's long
    double where it is wider than float64 (x86), else None."""
    numpy = sys.modules.get("numpy")
    if numpy is None or type(block) is not numpy.ndarray:
        return None
    if numpy.finfo(numpy.longdouble).nmant <= numpy.finfo(block.dtype).nmant:
        return None
    return numpy.longdouble


def _merge(block: Any, axis: tuple[int, ...], keepdims: bool) -> Any:
    """Splits of the parts of slices (along ``axis``) merged into the
    splits of the slices: the largest maximum, the weight at it, and the
    sums of all the other terms, those of parts with a smaller maximum
    rescaled by ``exp`` of the difference."""
    xp = _compat.namespace(block)
    m, w, hi, lo = (block[..., i] for i in (_M, _W, _HI, _LO))
    top = xp.max(m, axis=axis, keepdims=True)
    at_top = m == top
    # Parts below a finite maximum; the others keep their sum as it is, or
    # hold no term (an all -inf part), or fall under an infinite or NaN
    # maximum, which settles the slice without them.
    below = ~at_top & (m > -math.inf) & xp.isfinite(top)
    wide = _wide(block)
    if wide is None:
        # exp of the difference rounds once, by up to half an ulp of the
        # rescaled sum.
        scale = xp.where(below, xp.exp(xp.where(below, m - top, 0.0)), 0.0)
        terms = (
            xp.where(at_top, hi, (w + hi) * scale),
            xp.where(at_top, lo, lo * scale),
        )
        s_hi, s_lo = _impl.compensated_parts(xp, xp.concat(terms, axis=max(axis)), axis)
    else:
        # The difference of the maxima, and exp of it, round in long double
        # far below an ulp of float64.
        hi_w, lo_w = xp.astype(hi, wide), xp.astype(lo, wide)
        gap = xp.where(below, xp.astype(m, wide) - xp.astype(top, wide), 0.0)
        scale = xp.where(below, xp.exp(gap), 0.0)
        total = (xp.astype(w, wide) + hi_w) + lo_w
        s = xp.sum(
            xp.where(at_top, hi_w + lo_w, total * scale), axis=axis, keepdims=True
        )
        s_hi = xp.astype(s, block.dtype)
        s_lo = xp.astype(s - xp.astype(s_hi, wide), block.dtype)
    columns = [top, xp.sum(xp.where(at_top, w, 0.0), axis=axis, keepdims=True)]
    columns += [s_hi, s_lo]
    if block.shape[-1] > _AT:
        columns.append(xp.sum(block[..., _AT], axis=axis, keepdims=True))
    return xp.stack(columns, axis=-1)


def _merged(block: Any, axis: tuple[int, ...], keepdims: bool) -> Any:
    """``_merge`` in the floating-point error state of eager calls."""
    with _compat.errstate(_compat.namespace(block)):
        return _merge(block, axis, keepdims)


def _split_chunk(
    axis: tuple[int, ...],
    compensated: bool,
    weighted: bool,
    starts: tuple[int, ...] | None,
    a: Any,
    *rest: Any,
    block_id: Any = None,
) -> Any:
    """A chunk's split (``_split_piece``'s columns), ``starts`` where the
    chunks begin along the axis of the indices (if any)."""
    start = None if starts is None else starts[block_id[axis[0]]]
    piece = functools.partial(_split_piece, axis, compensated, weighted, start)
    # In the floating-point error state of eager calls, which silences the
    # exotic cases (infinite weights on vanishing terms) as they do.
    with _compat.errstate(_compat.namespace(a)):
        return _in_pieces(piece, a, rest, axis, _merge)


def _piece(
    f: Callable[..., Any],
    split: bool,
    n_full: int,
    axis: tuple[int, ...],
    compensated: bool,
    summed: bool,
    offsets: tuple[int, ...],
    x: Any,
    *rest: Any,
) -> Any:
    """``f`` on a piece of a chunk of ``x``, the pieces of the ``n_full``
    arrays read with it and the small results after them; with ``split``,
    the first of those is the maxima, and ``f`` gets the piece's split."""
    xp = _compat.namespace(x)
    full, rest = rest[:n_full], rest[n_full:]
    p = None
    if split:
        m, rest = rest[0], rest[1:]
        p = _impl._Split(m, *_impl.fields(xp, x, m, compensated), None, None)
    out = f(xp, p, x, *full, *rest)
    if not summed:
        return out
    parts = _pair_parts(xp, (out,), axis, (compensated,))
    return xp.stack(_stacked(xp, parts, axis), axis=-1)


def _chunk(
    f: Callable[..., Any],
    split: bool,
    n_full: int,
    axis: tuple[int, ...],
    compensated: bool,
    summed: bool,
    x: Any,
    *rest: Any,
) -> Any:
    """``_piece`` over the pieces of a chunk."""
    piece = functools.partial(_piece, f, split, n_full, axis, compensated, summed)
    fold = functools.partial(_pairs, (compensated,)) if summed else None
    with _compat.errstate(_compat.namespace(x)):
        return _in_pieces(piece, x, rest, axis, fold)


class _Chunked(_impl.Passes):
    """The passes of ``_core`` over Dask arrays."""

    def split(
        self,
        xp: Any,
        a: Any,
        b: Any,
        axis: tuple[int, ...],
        compensated: bool,
        at: Any,
    ) -> _impl._Split:
        da = _dask_array()
        read = (a,) if b is None else (a, *_aligned(a, (b,)))
        starts = None
        if at is not None:
            lengths = a.chunks[axis[0]]
            if any(n != n for n in lengths):
                # Picking a class needs where each chunk of classes begins.
                raise ValueError(
                    "cross_entropy() needs the lengths of the chunks along the "
                    f"class axis, got {lengths}; call compute_chunk_sizes() first"
                )
            read += _aligned(a, (at,))
            starts = (0, *itertools.accumulate(lengths))
        columns = _AT if at is None else _AT + 1
        chunks = tuple(
            (1,) * len(c) if i in axis else c for i, c in enumerate(a.chunks)
        )
        pieces = da.map_blocks(
            functools.partial(_split_chunk, axis, compensated, b is not None, starts),
            *read,
            chunks=(*chunks, (columns,)),
            new_axis=a.ndim,
            dtype=a.dtype,
            meta=_meta(a, a.ndim + 1),
        )
        stats = da.reduction(
            pieces,
            _keep,
            _merged,
            axis=axis,
            keepdims=True,
            dtype=a.dtype,
            meta=_meta(pieces),
        )
        m, w, hi, lo = (stats[..., i] for i in (_M, _W, _HI, _LO))
        picked = None if at is None else stats[..., _AT]
        return _impl._Split(m, xp.isfinite(m), None, None, None, w, hi + lo, picked)

    def sum(self, xp: Any, x: Any, axis: tuple[int, ...], compensated: bool) -> Any:
        if not compensated:
            return xp.sum(x, axis=axis, keepdims=True)
        return self.chunkwise(xp, _itself, None, x, (), (), axis, True, True)

    def chunkwise(
        self,
        xp: Any,
        f: Callable[..., Any],
        p: _impl._Split | None,
        x: Any,
        full: tuple[Any, ...],
        small: tuple[Any, ...],
        axis: tuple[int, ...],
        compensated: bool,
        summed: bool = False,
    ) -> Any:
        da = _dask_array()
        read = (x, *_aligned(x, full))
        given = _aligned(x, small if p is None else (p.m, *small))
        func = functools.partial(
            _chunk, f, p is not None, len(full), axis, compensated, summed
        )
        if not summed:
            return da.map_blocks(func, *read, *given, dtype=x.dtype, meta=_meta(x))
        pieces = da.map_blocks(
            func,
            *read,
            *given,
            chunks=_pair_chunks(x, axis, 1),
            new_axis=x.ndim,
            dtype=x.dtype,
            meta=_meta(x, x.ndim + 1),
        )
        return _fold(pieces, axis, (compensated,))[0]


def _itself(xp: Any, p: None, x: Any) -> Any:
    return x


PASSES: _impl.Passes = _Chunked()


def _block_product(a: Any, b: Any) -> Any:
    """One block's share of the product, on a new axis before the last."""
    out = _logmatmulexp(a, b)
    return out[..., :, None, :]


def _combine(block: Any, axis: tuple[int, ...], keepdims: bool) -> Any:
    return _logsumexp(block, axis=axis, keepdims=keepdims)


def logmatmulexp(a: Any, b: Any) -> Any:
    """``log(exp(a) @ exp(b))`` of Dask arrays of shapes ``(..., M, K)``
    and ``(..., K, N)`` with the same batch dimensions, block by block."""
    da = _dask_array()
    batch = tuple(range(a.ndim - 2))
    i, k, j = len(batch), len(batch) + 1, len(batch) + 2
    shares = da.blockwise(
        _block_product,
        (*batch, i, k, j),
        a,
        (*batch, i, k),
        b,
        (*batch, k, j),
        adjust_chunks={k: 1},
        dtype=a.dtype,
        meta=_meta(a, a.ndim + 1),
    )
    return da.reduction(
        shares,
        _keep,
        _combine,
        axis=k,
        keepdims=False,
        dtype=a.dtype,
        meta=_meta(a),
    )
