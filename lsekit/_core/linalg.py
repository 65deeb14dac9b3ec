"""The log-space matrix product ``log(exp(a) @ exp(b))``.

The fast path shifts each row of ``a`` by its maximum ``r`` and each column
of ``b`` by its maximum ``c`` and calls one ordinary matrix product::

    P = A @ B,  A = exp(a - r),  B = exp(b - c),  out = r + c + log(P).

It fails where the maxima of a row and a column sit at different ``k``:
every term of the cell is then far below ``r + c`` and ``P`` underflows
(``-inf``, or a number made of the few terms that survived). So the
exponentials are clamped below at ``exp(L)``, ``L = log(tiny) / 2 + 1``,
which keeps every product of two finite terms above ``tiny``, and:

- a cell with ``P == 0`` has no pair of finite terms: it is exactly
  ``-inf`` (log 0), whatever the magnitudes;
- the clamping adds at most ``2 K exp(L)`` to ``P``, so where
  ``P >= 2 K exp(L) / eps`` the cell is within an ulp of the unclamped sum
  (and the terms lost to underflow, each below ``exp(L)``, cannot matter):
  ``P`` is *enough*;
- the cell's value ``(r + c) + log(P)`` is kept where it is also
  *precise*: where ``r + c`` and ``log(P)`` do not cancel far below their
  own size (``precise``);
- the other cells, and those of rows or columns whose maximum is not
  finite, are recomputed exactly: ``logsumexp_k(a_ik + b_kj)``.

Near 0 the value is only good to a few ulps of 1: ``P`` near 1 is rounded
to an ulp of 1. So on eager arrays the term of each cell at its row's
maximum ``ka``, ``exp(a[i, ka] - r) * exp(b[ka, j] - c) = exp(b[ka, j] -
c)``, is kept out of the matrix product (the row's entry at ``ka`` is
zeroed) and added afterwards; where it dominates, the cell near 0 takes
``logsumexp``'s log1p split over the rest (``refine``).

On typical inputs (log-probabilities, transition matrices, banded ones with
``-inf`` off the band) nearly every cell keeps its value and the cost is
that of the matrix product and a few passes over the operands and the
result.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any, NamedTuple

from .reductions import logsumexp as _logsumexp

__all__ = [
    "Product",
    "Shifted",
    "cell_gradients",
    "certified",
    "exact",
    "exact_cells",
    "exact_gradients",
    "gradients",
    "precise",
    "precise_beyond",
    "refine",
    "shifted_product",
]

_INF = math.inf


class Product(NamedTuple):
    out: Any  # (r + c) + log(P); -inf where P == 0
    enough: Any  # P large enough that nothing clamped or lost matters,
    # and out neither NaN nor -inf
    row_max: Any  # r, (..., M, 1); NaN where not finite
    col_max: Any  # c, (..., 1, N); NaN where not finite
    rest: Any  # Q: P without each cell's term at its row's maximum, or P
    product: Any  # P, where the gradient needs it; else None


class Shifted(NamedTuple):
    """What the gradient needs of the forward pass."""

    certified: Any  # the cells whose fast value was kept
    row_max: Any
    col_max: Any
    product: Any


def _exp_shifted(ops: Any, x: Any, m: Any, floor: float) -> Any:
    """``exp(x - m)`` clamped below at ``exp(floor)``; 0 where ``x`` is -inf.

    A slice whose maximum ``m`` is NaN gives NaN (no cell of it keeps its
    fast value).
    """
    return ops.exp_floor(x - m, x, floor)


def _rows_at(xp: ModuleType, x: Any, index: Any, device: Any) -> Any:
    """``x[..., index[..., i, 0], :]`` for ``x`` (..., K, N): an (..., M, N)
    array of whole rows, gathered with one ``take`` over the flattened batch.
    """
    k, n = x.shape[-2], x.shape[-1]
    batch = tuple(x.shape[:-2])
    count = math.prod(batch)
    flat = xp.reshape(index, (count, -1))
    if count > 1:
        offsets = xp.arange(count, dtype=flat.dtype, device=device)
        flat = flat + offsets[:, None] * k
    rows = xp.take(xp.reshape(x, (count * k, n)), xp.reshape(flat, (-1,)), axis=0)
    return xp.reshape(rows, (*batch, index.shape[-2], n))


# A cell's value (r + c) + log(P) carries the rounding of both terms and the
# relative error of P (the exponentials' roundings, which grow with |a - r|
# and |b - c|, and the matrix product's, a few ulps per halving of K): at
# most about (|r + c| + |log P| + log2 K) / 2 ulps of 1. It is kept
# ("precise") where that is at most _PRECISION / 2 ulps of max(|out|, 1): a
# relative error for results above 1 in magnitude, an absolute one near 0.
# The others, where r + c and log(P) cancel far below their own size
# (crossed maxima), are computed exactly like the cells whose P is too small.
_PRECISION = 48.0


def precise(xp: ModuleType, out: Any, s: Any, k: int) -> Any:
    """Whether ``out = s + log(P)``, ``s = r + c``, is within the bound."""
    spread = xp.abs(s) + xp.abs(out - s) + math.log2(k)
    return spread <= _PRECISION * xp.maximum(xp.abs(out), 1.0)


def precise_beyond(xp: ModuleType, r: Any, c: Any, k: int) -> Any:
    """A size T (0-d array) such that every cell with ``|out| >= T`` is
    ``precise``: with ``|r + c| <= S``, the largest ``|r| + |c|``,
    ``|r + c| + |log P| <= 2 S + |out|``, within the bound once
    ``31 |out| >= 2 S + log2 K``."""
    largest = xp.max(xp.where(xp.isnan(r), 0.0, xp.abs(r)))
    largest = largest + xp.max(xp.where(xp.isnan(c), 0.0, xp.abs(c)))
    return xp.maximum((2.0 * largest + math.log2(k)) / (_PRECISION - 1.0), 1.0)


def shifted_product(
    xp: ModuleType,
    a: Any,
    b: Any,
    ops: Any,
    device: Any,
    *,
    split: bool,
    keep_product: bool,
) -> tuple[Product, Any]:
    """The fast path: one matrix product of the shifted exponentials.

    ``ops`` holds the elementwise steps, which may overwrite the temporaries
    they are given (``_compat.reusing``). With ``split``, the term of each
    cell at its row's maximum ``ka`` (which is ``G = exp(b[ka, j] - c)``, as
    ``exp(a[i, ka] - r) = 1``) is kept out of the matrix product, whose
    ``Q = P - G`` then keeps its relative precision where ``G`` dominates
    (see ``refine``); ``ka`` is returned, or None. ``P`` itself is kept
    only with ``keep_product`` (for the gradient) or without ``split``.
    """
    info = xp.finfo(a.dtype)
    k = a.shape[-1]
    # exp(floor)**2 is e**2 times the smallest normal: a product of two
    # clamped terms stays normal after rounding, also where the matrix
    # product flushes subnormals to zero (XLA on the CPU).
    floor = math.log(float(info.smallest_normal)) / 2 + 1.0
    threshold = math.log(2.0 * k / float(info.eps)) + floor
    ka = None
    if split:
        # argmax finds NaN and +inf as max does, in every library.
        ka = xp.argmax(a, axis=-1, keepdims=True)
        r = xp.take_along_axis(a, ka, axis=-1)
    else:
        r = xp.max(a, axis=-1, keepdims=True)
    c = xp.max(b, axis=-2, keepdims=True)
    # A row or column whose maximum is not finite gets NaN: none of its
    # cells is kept, and no inf - inf is evaluated for them.
    r = xp.where(xp.isfinite(r), r, xp.nan)
    c = xp.where(xp.isfinite(c), c, xp.nan)
    big_a = _exp_shifted(ops, a, r, floor)
    big_b = _exp_shifted(ops, b, c, floor)
    if ka is None:
        q = xp.matmul(big_a, big_b)
        p = q
        out = xp.log(q)
    else:
        g = _rows_at(xp, big_b, ka, device)
        q = xp.matmul(ops.zero_at(big_a, ka), big_b)
        g += q
        p = xp.asarray(g, copy=True) if keep_product else None
        out = ops.log(g)
    del big_a, big_b
    # A NaN shift (a row or column whose maximum is not finite) makes its
    # cells never enough: through log(P) for columns, through the
    # threshold for rows, cheaper than a second comparison. Nor is -inf
    # (P == 0), which is final where it stands.
    out += c * 0.0
    enough = out >= threshold + r * 0.0
    out += r
    out += c
    return Product(out, enough, r, c, q, p), ka


def certified(xp: ModuleType, fast: Product, k: int) -> Any:
    """The cells whose fast value is final, elementwise: ``P`` large enough
    and the value precise, or ``-inf`` (with ``r`` and ``c`` finite, ``P``
    is 0: no pair of finite terms)."""
    s = fast.row_max + fast.col_max
    return (fast.enough & precise(xp, fast.out, s, k)) | (fast.out == -_INF)


def refine(xp: ModuleType, r: Any, c: Any, b_at: Any, q: Any, out: Any) -> Any:
    """Cells near 0 again, from the term at the row's maximum ``ka``.

    Where that term, ``G = exp(b[ka, j] - c)``, dominates (``G >= Q``), the
    cell is ``(r + b[ka, j]) + log1p(Q / G)``: the log1p split of
    ``logsumexp``, which keeps the relative precision of results near 0
    (``log(1 + e**-40)``) that ``(r + c) + log(P)`` loses to the rounding of
    ``P`` near 1. Elsewhere ``out`` stays. All arguments are 1-D, per cell.
    """
    g = xp.exp(b_at - c)
    dominant = g >= q
    return xp.where(
        dominant, (r + b_at) + xp.log1p(q / xp.where(dominant, g, 1.0)), out
    )


# The exact paths sum with logsumexp's log1p split but without its
# compensated float64 sum: within the broadcast reference's own error (an ulp
# or two), at a third of the cost.


def exact_cells(xp: ModuleType, rows: Any, cols: Any) -> Any:
    """``logsumexp(rows + cols, axis=-1)`` for (cells, K) operands."""
    out, _ = _logsumexp(xp, rows + cols, (rows.ndim - 1,), None, False, False, False)
    return out


def exact(xp: ModuleType, a: Any, b: Any, block: int) -> Any:
    """Every cell by broadcasting, ``block`` rows of ``a`` at a time.

    ``O(block * K * N)`` memory: the path of lazy arrays and traces, where
    the uncertified cells cannot be picked out before the graph runs.
    """
    m = a.shape[-2]
    parts = []
    for start in range(0, m, block):
        rows = a[..., start : start + block, :, None]
        out, _ = _logsumexp(
            xp,
            rows + b[..., None, :, :],
            (rows.ndim - 2,),
            None,
            False,
            False,
            False,
        )
        parts.append(out)
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=-2)


# Gradients ------------------------------------------------------------------
#
# d out_ij / d a_ik = d out_ij / d b_kj = exp(a_ik + b_kj - out_ij): the
# share of term k in cell (i, j). Summed against the incoming gradient G,
#
#     grad_a = A * ((G / P) @ B^T),   grad_b = B * (A^T @ (G / P)),
#
# with the unclamped shifted exponentials A and B: two matrix products. On
# a certified cell P is at least 2 K exp(L) / eps, so G / P cannot
# overflow, and no term is lost. The other cells take their shares one by
# one. A -inf cell has no terms and gets no gradient.


def _exp_unclamped(xp: ModuleType, x: Any, m: Any) -> Any:
    finite = xp.isfinite(m)
    return xp.where(finite, xp.exp(x - xp.where(finite, m, 0.0)), 0.0)


def gradients(xp: ModuleType, a: Any, b: Any, fast: Shifted, g: Any) -> tuple[Any, Any]:
    """The gradients through the certified cells (two matrix products)."""
    use = fast.certified & (fast.product > 0)
    s = xp.where(use, g / xp.where(use, fast.product, 1.0), 0.0)
    big_a = _exp_unclamped(xp, a, fast.row_max)
    big_b = _exp_unclamped(xp, b, fast.col_max)
    grad_a = big_a * xp.matmul(s, xp.matrix_transpose(big_b))
    grad_b = big_b * xp.matmul(xp.matrix_transpose(big_a), s)
    return grad_a, grad_b


def cell_gradients(xp: ModuleType, rows: Any, cols: Any, out: Any, g: Any) -> Any:
    """``g * exp(rows + cols - out)`` for (cells, K) operands, 0 at -inf cells."""
    out = out[:, None]
    empty = out == -_INF
    return xp.where(
        empty, 0.0, g[:, None] * xp.exp((rows + cols) - xp.where(empty, 0.0, out))
    )


def exact_gradients(
    xp: ModuleType, a: Any, b: Any, out: Any, g: Any, block: int
) -> tuple[Any, Any]:
    """Every cell's shares by broadcasting, ``block`` rows at a time.

    Elementwise operations and sums only, through ``out`` too: a gradient
    that autodiff can differentiate again (second derivatives).
    """
    grads_a = []
    grad_b = xp.zeros_like(b)
    for start in range(0, a.shape[-2], block):
        stop = start + block
        o = out[..., start:stop, None, :]
        empty = o == -_INF
        t = a[..., start:stop, :, None] + b[..., None, :, :]
        share = xp.where(
            empty,
            0.0,
            g[..., start:stop, None, :] * xp.exp(t - xp.where(empty, 0.0, o)),
        )
        grads_a.append(xp.sum(share, axis=-1))
        grad_b = grad_b + xp.sum(share, axis=-3)
    grad_a = grads_a[0] if len(grads_a) == 1 else xp.concat(grads_a, axis=-2)
    return grad_a, grad_b


# Tangents (forward mode) --------------------------------------------------------
#
# The same shares, summed against the operands' tangents instead:
#
#     d out = ((A * da) @ B + A @ (B * db)) / P
#
# on the certified cells, and share by share on the others. Linear in
# (da, db), so JAX transposes it into the gradient for reverse mode.


def tangent(xp: ModuleType, a: Any, b: Any, fast: Shifted, da: Any, db: Any) -> Any:
    """The tangent of the certified cells (two matrix products), 0 elsewhere."""
    use = fast.certified & (fast.product > 0)
    big_a = _exp_unclamped(xp, a, fast.row_max)
    big_b = _exp_unclamped(xp, b, fast.col_max)
    total = xp.matmul(big_a * da, big_b) + xp.matmul(big_a, big_b * db)
    return xp.where(use, total / xp.where(use, fast.product, 1.0), 0.0)


def _shares(xp: ModuleType, t: Any, out: Any) -> Any:
    """``exp(t - out)``, the terms' shares of their cells; 0 at -inf cells."""
    empty = out == -_INF
    return xp.where(empty, 0.0, xp.exp(t - xp.where(empty, 0.0, out)))


def cell_tangents(
    xp: ModuleType, rows: Any, cols: Any, out: Any, drows: Any, dcols: Any
) -> Any:
    """The tangents of single cells, from (cells, K) operands and tangents."""
    shares = _shares(xp, rows + cols, out[:, None])
    return xp.sum(shares * (drows + dcols), axis=-1)


def exact_tangent(
    xp: ModuleType, a: Any, b: Any, out: Any, da: Any, db: Any, block: int
) -> Any:
    """Every cell's tangent by broadcasting, ``block`` rows at a time."""
    parts = []
    for start in range(0, a.shape[-2], block):
        stop = start + block
        shares = _shares(
            xp,
            a[..., start:stop, :, None] + b[..., None, :, :],
            out[..., start:stop, None, :],
        )
        d = da[..., start:stop, :, None] + db[..., None, :, :]
        parts.append(xp.sum(shares * d, axis=-2))
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=-2)
