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
- the clamping adds at most ``2 K exp(L)`` to ``P``, so a cell with
  ``P >= 2 K exp(L) / eps`` is within an ulp of the unclamped sum (and the
  terms lost to underflow, each below ``exp(L)``, cannot matter): it is
  *certified*;
- the other cells, and those of rows or columns whose maximum is not
  finite, are recomputed exactly: ``logsumexp_k(a_ik + b_kj)``.

On typical inputs (log-probabilities, transition matrices, banded ones with
``-inf`` off the band) every cell is certified and the cost is that of the
matrix product and a few passes over the operands.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any, NamedTuple

from .reductions import logsumexp as _logsumexp

__all__ = [
    "cell_gradients",
    "exact",
    "exact_cells",
    "exact_gradients",
    "gradients",
    "shifted_product",
]

_INF = math.inf


class Shifted(NamedTuple):
    out: Any  # r + c + log(P), -inf where P == 0
    certified: Any  # cells whose ``out`` is final
    row_max: Any  # r, (..., M, 1)
    col_max: Any  # c, (..., 1, N)
    product: Any  # P


def _exp_shifted(xp: ModuleType, x: Any, m: Any, floor: float) -> Any:
    """``exp(x - m)`` clamped below at ``exp(floor)``; 0 where ``x`` is -inf.

    Slices whose maximum ``m`` is not finite are 0: their cells are not
    certified, and no ``inf - inf`` is evaluated for them.
    """
    finite = xp.isfinite(m)
    shifted = xp.maximum(x - xp.where(finite, m, 0.0), floor)
    return xp.where((x == -_INF) | ~finite, 0.0, xp.exp(shifted))


# A certified cell's value r + c + log(P) carries the rounding of its three
# terms and the matrix product's relative error (a few ulps per halving of
# K in a blocked product): at most about (|r| + |c| + |log P| + 2 log2 K)
# ulps in absolute terms. A cell is only certified where that is at most
# _CANCELLATION ulps of its own magnitude; the others, where r + c and
# log(P) cancel (results near 0, such as log(1 + exp(-40))), are computed
# exactly like the uncertified ones.
_CANCELLATION = 16.0


def shifted_product(xp: ModuleType, a: Any, b: Any) -> Shifted:
    """The fast path: one matrix product of the shifted exponentials."""
    info = xp.finfo(a.dtype)
    k = a.shape[-1]
    # exp(floor)**2 is e**2 times the smallest normal: a product of two
    # clamped terms stays normal after rounding, also where the matrix
    # product flushes subnormals to zero (XLA on the CPU).
    floor = math.log(float(info.smallest_normal)) / 2 + 1.0
    threshold = 2.0 * k * math.exp(floor) / float(info.eps)
    r = xp.max(a, axis=-1, keepdims=True)
    c = xp.max(b, axis=-2, keepdims=True)
    p = xp.matmul(_exp_shifted(xp, a, r, floor), _exp_shifted(xp, b, c, floor))
    zero = p == 0
    log_p = xp.log(xp.where(zero, 1.0, p))
    out = xp.where(zero, -_INF, (r + c) + log_p)
    finite = xp.isfinite(r) & xp.isfinite(c)
    spread = (xp.abs(r) + xp.abs(c)) + xp.abs(log_p) + 2.0 * math.log2(k)
    precise = spread <= _CANCELLATION * xp.abs(out)
    certified = finite & (zero | ((p >= threshold) & precise))
    return Shifted(out, certified, r, c, p)


def exact_cells(xp: ModuleType, rows: Any, cols: Any, compensated: bool) -> Any:
    """``logsumexp(rows + cols, axis=-1)`` for (cells, K) operands."""
    out, _ = _logsumexp(
        xp, rows + cols, (rows.ndim - 1,), None, False, False, compensated
    )
    return out


def exact(xp: ModuleType, a: Any, b: Any, block: int, compensated: bool) -> Any:
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
            compensated,
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

    For lazy arrays and traces; ``g`` is zero at the cells already handled.
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
