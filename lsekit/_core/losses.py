"""Cross-entropy from logits, on the split of ``reductions``.

With the split ``sum_c exp(x_c) = exp(m) * (W + s)`` and ``L = log(W + s)``,
the negative log-probability of class ``c`` is ``(m - x_c) + L``: a sum of
two non-negative terms, so it keeps full relative accuracy even when it is
tiny (a confident, correct prediction), where ``logsumexp(x) - x_c`` would
cancel. For class-index targets only the target's logit is gathered: no
array of log-probabilities is formed.

Every loss here has the form::

    loss = c_y * nll_y + sum_c q_c * nll_c

with ``c_y = (1 - smoothing) * weight[y]`` for class indices, and ``q_c``
the smoothing mass (class indices) or the weighted target probabilities.
A zero coefficient contributes 0 even where ``nll`` is infinite (``0 * log
0 == 0``), so a class with zero probability and a ``-inf`` logit costs
nothing.

The terms are formed at half their size and the loss doubled at the end:
scaling by 2 is exact, and ``m - x_c`` of logits spanning the whole range
(bfloat16 computed in float32, whose ranges coincide) would otherwise
overflow even where the loss, a small share of it, does not.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from .reductions import EAGER, Passes, _log_total, _Split, _split, _sum

__all__ = ["per_example", "reduce"]

_INF = math.inf
_NAN = math.nan


def _expand(xp: ModuleType, v: Any, axis: int) -> Any:
    return xp.expand_dims(v, axis=axis)


def _half_nll_at(xp: ModuleType, p: _Split, half_total: Any, x_y: Any) -> Any:
    """Half of ``-log_softmax`` at the gathered logits ``x_y`` (keepdims).

    Non-finite slices follow ``log_softmax``: an all ``-inf`` slice gives
    ``inf``, a ``+inf`` maximum gives NaN at the infinite entries and
    ``inf`` elsewhere, a NaN slice NaN.
    """
    # Where the maximum is not finite both operands are replaced by zeros,
    # so that no inf - inf is evaluated, even on the discarded side.
    m = xp.where(p.finite, p.m, 0.0)
    gap = 0.5 * m - 0.5 * xp.where(p.finite, x_y, 0.0)
    nll = xp.where(p.finite, gap + half_total, _INF)
    return xp.where(xp.isnan(p.m) | (x_y == _INF), _NAN, nll)


def _half_nll_all(xp: ModuleType, p: _Split, x: Any, half_total: Any) -> Any:
    """Half of ``-log_softmax`` of every entry, with the same rules."""
    m = xp.where(p.finite, p.m, 0.0)
    nll = xp.where(p.finite, (0.5 * m - 0.5 * x) + half_total, _INF)
    return xp.where(xp.isnan(p.m) | (p.is_max & (p.m == _INF)), _NAN, nll)


def _weighted_nll_terms(xp: ModuleType, p: _Split, x: Any, *q_and_half: Any) -> Any:
    """``q_c * nll_c`` of each class: ``q_and_half`` is ``(q, half)``, or
    ``(half,)`` for unit weights."""
    *q, half = q_and_half
    nll = _half_nll_all(xp, p, x, half)
    if not q:
        return nll
    # 0 * inf is 0 here: a class without mass costs nothing, whatever its
    # logit.
    return q[0] * xp.where(q[0] == 0, 0.0, nll)


def _weighted_nll(
    xp: ModuleType,
    p: _Split,
    x: Any,
    half: Any,
    q: Any,
    axis: int,
    compensated: bool,
    passes: Passes,
) -> Any:
    """``sum_c q_c * nll_c`` over the class ``axis`` of the logits ``x``
    split as ``p``; unit weights where ``q`` is None. ``q`` of the logits'
    shape (target probabilities) is read with them."""
    full: tuple[Any, ...]
    small: tuple[Any, ...]
    if q is None:
        full, small = (), (half,)
    elif q.shape == x.shape:
        full, small = (q,), (half,)
    else:
        full, small = (), (q, half)
    return passes.chunkwise(
        xp, _weighted_nll_terms, p, x, full, small, (axis,), compensated, True
    )


def per_example(
    xp: ModuleType,
    x: Any,
    target: Any,
    axis: int,
    *,
    probabilities: bool,
    weight: Any,
    ignore_index: int | None,
    where: Any,
    smoothing: float,
    compensated: bool,
    passes: Passes = EAGER,
) -> tuple[Any, Any, Any]:
    """Each example's cross-entropy, with what the mean divides by.

    ``x`` holds real logits with classes along ``axis``. ``target`` holds
    class indices (the shape of ``x`` without ``axis``) or, with
    ``probabilities``, floats of the shape of ``x``. ``weight`` is None or
    one weight per class; ``where`` is None or a boolean mask of the
    examples' shape. Indices outside ``[0, C)`` that are counted give NaN
    (the public layer rejects them where it can look).

    Returns ``(loss, counted, weights)`` of the examples' shape: the loss
    (0 where not counted), the mask of counted examples (None: all) and
    each example's weight in the mean (None: 1 each).
    """
    n_classes = x.shape[axis]
    index: Any = None
    valid: Any = None
    safe: Any = None
    if not probabilities:
        index = _expand(xp, target, axis)
        valid = (index >= 0) & (index < n_classes)
        safe = xp.where(valid, index, xp.zeros_like(index))
    p = _split(xp, x, (axis,), None, compensated, passes, at=safe)
    half = 0.5 * xp.where(p.finite, _log_total(xp, p), 0.0)
    per_class = None
    if weight is not None:
        shape = [1] * x.ndim
        shape[axis] = n_classes
        per_class = xp.reshape(weight, tuple(shape))

    counted = None if where is None else _expand(xp, where, axis)
    weights = None
    if probabilities:
        q = target
        if smoothing:
            q = q * (1.0 - smoothing) + smoothing / n_classes
        if per_class is not None:
            q = q * per_class
        loss = _weighted_nll(xp, p, x, half, q, axis, compensated, passes)
    else:
        if ignore_index is not None:
            keep = index != ignore_index
            counted = keep if counted is None else counted & keep
        loss = _half_nll_at(xp, p, half, p.at)
        if weight is not None:
            weights = xp.reshape(
                xp.take(weight, xp.reshape(safe, (-1,)), axis=0), tuple(safe.shape)
            )
            loss = weights * xp.where(weights == 0, 0.0, loss)
        if smoothing:
            smooth = _weighted_nll(xp, p, x, half, per_class, axis, compensated, passes)
            loss = (1.0 - smoothing) * loss + (smoothing / n_classes) * smooth
        bad = ~valid if counted is None else counted & ~valid
        loss = xp.where(bad, _NAN, loss)
    loss = 2.0 * loss

    if counted is not None:
        loss = xp.where(counted, loss, 0.0)
        if weights is not None:
            weights = xp.where(counted, weights, 0.0)
        counted = xp.squeeze(counted, axis=axis)
    if weights is not None:
        weights = xp.squeeze(weights, axis=axis)
    return xp.squeeze(loss, axis=axis), counted, weights


def reduce(
    xp: ModuleType,
    loss: Any,
    counted: Any,
    weights: Any,
    reduction: str,
    compensated: bool,
    passes: Passes = EAGER,
) -> Any:
    """Apply ``reduction`` to the output of :func:`per_example`."""
    if reduction == "none":
        return loss
    axes = tuple(range(loss.ndim))
    summed = _sum(xp, loss, axes, compensated, passes) if loss.ndim else loss
    summed = xp.reshape(summed, ())
    if reduction == "sum":
        return summed
    if counted is None and weights is None and all(type(d) is int for d in loss.shape):
        # Every example counts, and the shape says how many (at least one:
        # the callers return early on no examples).
        return summed / math.prod(loss.shape)
    if counted is None:
        n = xp.sum(xp.ones_like(loss))
    else:
        n = xp.sum(xp.astype(counted, loss.dtype))
    denominator = n if weights is None else xp.sum(weights)
    # Nothing counted: the mean is 0 (and so is its gradient), not 0 / 0.
    none = n == 0
    return xp.where(none, 0.0, summed / xp.where(none, 1.0, denominator))
