"""Public ``cross_entropy``.

This layer validates the arguments, resolves dtypes and the class axis, and
hands the arrays to the standard-only code in ``_core.losses``.
"""

from __future__ import annotations

import fractions
import math
import operator
from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import _args, _compat, _fast
from ._core import losses as _impl
from ._reductions import _compensate, _native_result

__all__ = ["cross_entropy"]

_FUNC = "cross_entropy"
_REDUCTIONS = ("none", "mean", "sum")


def _float_dtype(xp: ModuleType, x: Any) -> Any:
    if _compat.isdtype(xp, x.dtype, ("bool", "integral")):
        return _compat.compute_dtype(xp, x.dtype, _compat.device(x))
    return x.dtype


def _check_real(xp: ModuleType, name: str, x: Any) -> None:
    _args.check_numeric(_FUNC, name, xp, x)
    if _compat.isdtype(xp, x.dtype, "complex floating"):
        raise TypeError(f"{_FUNC}() {name} must be real, got dtype {x.dtype}")


def _check_target_shape(t: Any, kind: str, shape: tuple[Any, ...], of: str) -> None:
    if not _args.same_shape(tuple(t.shape), shape):
        raise ValueError(
            f"{_FUNC}() target of {kind} must have the shape of {of}, {shape}; "
            f"got {tuple(t.shape)}"
        )


def _class_axis(axis: Any, shape: tuple[Any, ...]) -> int:
    try:
        if isinstance(axis, bool):
            raise TypeError
        operator.index(axis)
    except TypeError:
        raise TypeError(
            f"{_FUNC}() axis must be an int (the class axis), not {axis!r}"
        ) from None
    if not shape:
        raise ValueError(f"{_FUNC}() logits must have a class axis; got a 0-d array")
    (i,) = _args.normalize_axis(_FUNC, axis, len(shape))
    if shape[i] == 0:
        raise ValueError(
            f"{_FUNC}() logits of shape {shape} have no classes along axis {axis}"
        )
    return i


def _check_indices(
    xp: ModuleType, target: Any, n_classes: Any, ignore: int | None, where: Any
) -> None:
    """Reject class indices outside ``[0, C)`` that are counted.

    Runs only where the values can be read without computing a lazy graph
    or breaking a trace; there, such indices give a NaN loss instead.
    """
    if not isinstance(n_classes, int) or math.prod(target.shape) == 0:
        return
    if not _compat.readable(target):
        return
    skip = None if ignore is None else target == ignore
    if where is not None:
        skip = ~where if skip is None else skip | ~where
    # Class 0 always exists, so it stands in for the entries not checked.
    probe = target if skip is None else xp.where(skip, xp.zeros_like(target), target)
    low, high = xp.min(probe), xp.max(probe)
    # Inside a trace (jax.jit), even arrays closed over give traced results.
    if not _compat.readable(low):
        return
    low, high = int(low), int(high)
    if low >= 0 and high < n_classes:
        return
    bad = low if low < 0 else high
    also = "" if ignore is None else f" and is not ignore_index={ignore}"
    raise ValueError(
        f"{_FUNC}() target holds class index {bad}, which lies outside "
        f"[0, {n_classes}){also}"
    )


# Eager backends run a large batch in blocks of about this many logits: the
# temporaries of a block stay in cache, and the peak memory is a small
# fraction of the logits' bytes however large the batch.
_BLOCK = 1 << 18


# One function per ignore_index and smoothing, which JAX's kernels key
# their compiled guards on: in a plain dict, since Dynamo warns about
# functools.cache whenever it traces a call. Neither read nor written while
# Dynamo traces (see ``_compat.compiling``), which makes a function of its
# own, in the traced code alone.
_EXACT: dict[tuple[int | None, float], Callable[[Any, Any], Any]] = {}


def _exact(ignore: int | None, smoothing: float) -> Callable[[Any, Any], Any]:
    """The standard-only loss of 2-D rows of logits (classes along the last
    axis) and their class indices, smoothed by ``smoothing``, in the dtype
    it computes in (float64 where the namespace has it): for the rows that
    a fast path does not certify."""
    if _compat.compiling():
        return _exact_loss(ignore, smoothing)
    key = (ignore, smoothing)
    if key not in _EXACT:
        _EXACT[key] = _exact_loss(ignore, smoothing)
    return _EXACT[key]


def _exact_loss(ignore: int | None, smoothing: float) -> Callable[[Any, Any], Any]:
    # The smoothing as a ratio of integers, divided where it is used: under
    # torch.compile a float that the function closes over becomes an input
    # of the torch.cond branch that calls it, which torch.cond refuses; it
    # takes integers.
    ratio = fractions.Fraction(smoothing)
    num, den = ratio.numerator, ratio.denominator

    def exact(rows: Any, target: Any) -> Any:
        xp = _compat.namespace(rows)
        work = _compat.compute_dtype(xp, rows.dtype, _compat.device(rows))
        with _compat.errstate(xp):
            loss = _impl.per_example(
                xp,
                xp.astype(rows, work),
                target,
                1,
                probabilities=False,
                weight=None,
                ignore_index=ignore,
                where=None,
                smoothing=num / den,
                compensated=_compensate(work, rows.dtype),
                passes=_compat.passes(xp),
            )[0]
        return xp.astype(loss, work)

    return exact


def _blocks(x: Any, i: int) -> tuple[int, list[tuple[tuple[Any, ...], ...]]]:
    """How to cut a batch: the examples' axis that is cut, and the blocks.

    Each block is a pair of index tuples, into ``x`` and into the examples.
    The cut runs along the first axis other than ``i`` that is longer than
    one. Lazy arrays and traces are not cut: XLA fuses the computation and
    Dask has its own chunks.
    """
    whole: list[tuple[tuple[Any, ...], ...]] = [((...,), (...,))]
    shape = tuple(x.shape)
    if not all(isinstance(n, int) for n in shape) or math.prod(shape) <= _BLOCK:
        return 0, whole
    axes = [b for b, n in enumerate(shape) if b != i and n > 1]
    if not axes or not _compat.readable(x):
        return 0, whole
    b = axes[0]
    step = max(1, _BLOCK // (math.prod(shape) // shape[b]))
    cut = b - (b > i)
    # Stops stay within the axis: the standard leaves larger ones undefined.
    parts = [slice(i, min(i + step, shape[b])) for i in range(0, shape[b], step)]
    return cut, [
        ((*(slice(None),) * b, part, ...), (*(slice(None),) * cut, part, ...))
        for part in parts
    ]


def _fast_loss(
    xp: ModuleType,
    kern: ModuleType,
    x: Any,
    t: Any,
    axis: int,
    ignore: int | None,
    w: Any,
    mask: Any,
    smoothing: float,
) -> tuple[Any, Any, Any]:
    """``_impl.per_example``'s ``(loss, counted, weights)`` of class-index
    targets ``t``, by the kernels ``kern``: they give each example's
    unweighted loss (smoothed by ``smoothing``; weighted smoothing is not
    theirs), and the weights and the mask apply to it as they do to the
    standard-only path's."""
    if mask is not None:
        # A masked example's index may be anything, even out of range: the
        # kernels see ignore_index there, or class 0 (whose loss is dropped
        # below) when there is none.
        fill = 0 if ignore is None else ignore
        t = xp.where(mask, t, xp.full_like(t, fill))
    exact = _exact(ignore, smoothing)
    loss, counted = _fast.cross_entropy(kern, x, t, axis, ignore, smoothing, exact)
    if mask is not None:
        counted = mask if counted is None else counted & mask
    weights = None
    if w is not None:
        valid = (t >= 0) & (t < x.shape[axis])
        safe = xp.reshape(xp.where(valid, t, xp.zeros_like(t)), (-1,))
        weights = xp.take(xp.astype(w, loss.dtype), safe, axis=0)
        weights = xp.reshape(weights, tuple(t.shape))
        # A class of weight 0 costs nothing, even where its loss is not
        # finite.
        loss = weights * xp.where(weights == 0, 0.0, loss)
    if counted is not None:
        loss = xp.where(counted, loss, 0.0)
        if weights is not None:
            weights = xp.where(counted, weights, 0.0)
    return loss, counted, weights


def cross_entropy(
    logits: Any,
    target: Any,
    /,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    where: Any = None,
) -> Any:
    """Compute the cross-entropy loss between logits and targets.

    The results of :func:`torch.nn.functional.cross_entropy`, formula for
    formula (class weights, ``ignore_index``, label smoothing, probability
    targets, reductions), for the arrays of any Array API library, with
    full relative accuracy down to the tiniest loss.

    Parameters
    ----------
    logits : array
        Unnormalised log-probabilities, with the classes along ``axis``.
    target : array
        Either integer class indices, of the shape of ``logits`` without
        ``axis``, or floating class probabilities of the shape of
        ``logits``.
    axis : int, optional
        The class axis. The default -1 suits ``(N, C)`` logits; PyTorch's
        ``(N, C, d1, ..., dK)`` layout is ``axis=1``.
    weight : array, optional
        One weight per class, of length ``C``.
    ignore_index : int, optional
        A class index whose examples are ignored: their loss is 0 and they
        do not count in the mean. Only with class-index targets. Unlike
        PyTorch (whose default is -100), nothing is ignored by default.
    reduction : {'mean', 'sum', 'none'}, optional
        ``'none'`` gives the loss of each example; ``'sum'`` their sum;
        ``'mean'`` their sum divided by the summed weights of the counted
        targets (class indices) or by the number of counted examples
        (probabilities).
    label_smoothing : float, optional
        In [0, 1]: the target becomes a mixture of the original target,
        with weight ``1 - label_smoothing``, and the uniform distribution.
    where : array of bool, optional
        Examples to count, broadcast against the shape of ``logits``
        without ``axis``. Masked examples are treated as ignored.

    Returns
    -------
    loss : array
        A 0-d array for ``'mean'`` and ``'sum'``; for ``'none'``, an array
        of the shape of ``logits`` without ``axis``. Its dtype is that of
        the logits (combined with ``weight`` and probability targets).

    Raises
    ------
    ValueError
        A class index outside ``[0, C)`` that is neither ``ignore_index``
        nor masked, mismatched shapes, a ``weight`` of the wrong length,
        ``label_smoothing`` outside [0, 1], an unknown ``reduction``,
        ``ignore_index`` with probability targets, or a Dask class axis in
        chunks of unknown length (after boolean indexing).
    TypeError
        Targets that are neither integer nor floating, complex logits.

    See Also
    --------
    log_softmax, logsumexp

    Notes
    -----
    With class weights ``w``, smoothing ``eps`` and ``C`` classes, the loss
    of an example with class index ``y`` is, as in PyTorch::

        (1 - eps) * w[y] * nll[y] + eps / C * sum_c w[c] * nll[c]

    and with target probabilities ``t`` it is ``sum_c w[c] * t'[c] *
    nll[c]`` with ``t' = (1 - eps) * t + eps / C``. Here ``nll[c] = (m -
    x[c]) + log1p(s + (W - 1))``, from the split of :func:`logsumexp`:
    both terms are non-negative, so a tiny loss keeps its digits
    (``[[0, -40]]`` with class 0 gives ``4.248354255291589e-18``; PyTorch
    gives 0). For class indices only the target logit is gathered; no
    array of log-probabilities is formed unless smoothing needs one.

    Departures from PyTorch, all where PyTorch gives NaN: when nothing is
    counted (every target ignored or masked) the mean is 0, with zero
    gradient; a class with zero target mass or zero weight contributes 0
    even where its logit is ``-inf``.

    Class indices are checked where their values can be read: NumPy,
    PyTorch, CuPy, array-api-strict and eager JAX raise on an index
    outside ``[0, C)``. Under ``jax.jit``, ``torch.compile`` and on Dask
    the values are not known when the call is made; there such an
    example's loss is NaN, and so is any mean or sum that counts it.

    float32 logits are computed in float64 where the namespace has it, and
    float16 and bfloat16 in float32, so logits up to the dtype's maximum do
    not overflow.

    Class indices take the fast path of :func:`logsumexp` (float32 and
    float64 on NumPy and eager PyTorch, float32 under JAX with
    ``jax_enable_x64`` or on its CPU with the C kernel, and under
    ``torch.compile``), with or without
    ``weight``, ``ignore_index`` and ``where``: the kernels give each
    example's ``(m - x[y]) + log1p(t)``, and its gradient in closed form,
    and the weights and the mask apply to that. With label smoothing
    ``eps`` they give ``(1 - eps) (m - x[y]) + log1p(t) + eps / C sum_c (m
    - x[c])``, three non-negative terms, for float32 logits without class
    weights. Probability targets, smoothing otherwise, and a ``weight`` of
    a wider dtype than the logits (which asks for that dtype's accuracy)
    take the path above. Unweighted, unmasked float32 logits of shape
    ``(N, C)`` with int64 class indices, computed eagerly on NumPy and
    PyTorch (CPU, under autograd too), go to the C kernel before anything
    else, each example's loss finished there; a call in which it leaves a row (a
    maximum that is not finite, a class out of range) takes the general
    path, whose checks report bad input.

    Examples
    --------
    >>> import numpy as np
    >>> from lsekit import cross_entropy
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    >>> cross_entropy(logits, np.array([0, 1]))  # doctest: +ELLIPSIS
    np.float64(0.205578658106721...)
    >>> cross_entropy(np.array([[0.0, -40.0]]), np.array([0]))
    np.float64(4.248354255291589e-18)
    >>> cross_entropy(logits, np.array([0, 2]), ignore_index=2, reduction="none")
    array([0.2413113, 0.       ])

    The same call on PyTorch; the gradient is ``softmax - target`` per
    example, with the target smoothed, divided by the batch size for the
    mean:

    >>> import torch
    >>> x = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]], requires_grad=True)
    >>> loss = cross_entropy(x, torch.tensor([0, 1]), label_smoothing=0.1)
    >>> loss.backward()
    >>> loss.item()
    0.3639...
    >>> x.grad
    tensor([[-0.0739,  0.0710,  0.0029],
            [ 0.0043, -0.0448,  0.0404]])

    And on JAX, under ``jax.jit``, with the class axis of PyTorch's
    ``(N, C, d)`` layout:

    >>> import jax, jax.numpy as jnp
    >>> x = jnp.zeros((2, 3, 4), dtype=jnp.float32)
    >>> y = jnp.ones((2, 4), dtype=jnp.int32)
    >>> f = jax.jit(lambda x, y: cross_entropy(x, y, axis=1))
    >>> float(f(x, y))  # log 3
    1.0986123085021973
    """
    reduction = _args.check_choice(_FUNC, "reduction", reduction, _REDUCTIONS)
    smoothing = _args.check_fraction(_FUNC, "label_smoothing", label_smoothing)
    ignore = _args.check_optional_int(_FUNC, "ignore_index", ignore_index)
    if weight is None and where is None:
        exact = _exact(ignore, smoothing)
        found = _fast.loss_at_once(
            logits, target, axis, ignore, smoothing, exact, reduction
        )
        if found is not None:
            return _native_result(found)
    xp, arr = _compat.as_arrays(
        _FUNC, 2, logits=logits, target=target, weight=weight, where=where
    )
    x, t, w, mask = arr["logits"], arr["target"], arr["weight"], arr["where"]
    _check_real(xp, "logits", x)
    shape = tuple(x.shape)
    i = _class_axis(axis, shape)
    n_classes = shape[i]
    examples = shape[:i] + shape[i + 1 :]

    if _compat.isdtype(xp, t.dtype, "integral"):
        probabilities = False
        _check_target_shape(t, "class indices", examples, f"logits without axis {axis}")
    elif _compat.isdtype(xp, t.dtype, "real floating"):
        probabilities = True
        _check_target_shape(t, "probabilities", shape, "logits")
        if ignore is not None:
            raise ValueError(
                f"{_FUNC}() ignore_index={ignore} applies to class-index "
                "targets only; mask probability targets with where="
            )
    else:
        raise TypeError(
            f"{_FUNC}() target must hold integer class indices or floating "
            f"probabilities, got dtype {t.dtype}"
        )

    out_dtype = _float_dtype(xp, x)
    if w is not None:
        _check_real(xp, "weight", w)
        if w.ndim != 1 or not _args.same_shape(tuple(w.shape), (n_classes,)):
            raise ValueError(
                f"{_FUNC}() weight must have one entry per class, shape "
                f"({n_classes},); got {tuple(w.shape)}"
            )
        out_dtype = xp.result_type(out_dtype, _float_dtype(xp, w))
    if probabilities:
        out_dtype = xp.result_type(out_dtype, t.dtype)
    if mask is not None:
        _args.check_mask(_FUNC, xp, mask, examples, f"the examples' shape {examples}")
        mask = xp.broadcast_to(mask, examples)

    if not probabilities:
        # Compared in the indexing dtype, so that a narrow target dtype
        # neither wraps ignore_index around nor overflows on it.
        index = _compat.index_dtype(xp, _compat.device(t))
        if ignore is not None:
            info = xp.iinfo(index)
            if not info.min <= ignore <= info.max:
                raise ValueError(
                    f"{_FUNC}() ignore_index={ignore} lies outside the range of "
                    f"class indices ({index})"
                )
        t = xp.astype(t, index, copy=False)
        _check_indices(xp, t, n_classes, ignore, mask)

    work = _compat.compute_dtype(xp, out_dtype, _compat.device(x))
    if any(n == 0 for n in examples):
        # No examples: nothing is counted.
        loss = xp.zeros(examples, dtype=out_dtype, device=_compat.device(x))
        if reduction != "none":
            loss = xp.sum(loss)
        return _compat.finalize(xp, loss)
    compensated = _compensate(work, out_dtype)
    kern = None
    # A weight of a wider dtype than the logits asks for the loss in that
    # dtype, beyond what the kernels certify. The kernels smooth float32's
    # target, without class weights: float64's sum over the classes would
    # leave no digits to spare.
    smoothed = not smoothing or (w is None and x.dtype == xp.float32)
    if not probabilities and smoothed and out_dtype == x.dtype:
        kern = _fast.kernels(x, "cross_entropy")
    options: dict[str, Any] = {
        "axis": i,
        "ignore": ignore,
        "smoothing": smoothing,
        "reduction": reduction,
        "compensated": compensated,
    }
    if kern is not None:
        loss = _kernel_loss(xp, x, t, w, mask, kern=kern, **options)
    else:
        loss = _standard_loss(
            xp, x, t, w, mask, probabilities=probabilities, work=work, **options
        )
    return _compat.finalize(xp, xp.astype(loss, out_dtype, copy=False))


@_compat.compiled
def _kernel_loss(
    xp: ModuleType,
    x: Any,
    t: Any,
    w: Any,
    mask: Any,
    *,
    kern: ModuleType,
    axis: int,
    ignore: int | None,
    smoothing: float,
    reduction: str,
    compensated: bool,
) -> Any:
    """The reduced loss of checked class indices ``t``, by the kernels
    ``kern`` (see ``_fast_loss``)."""
    with _compat.errstate(xp):
        found = _fast_loss(xp, kern, x, t, axis, ignore, w, mask, smoothing)
        return _impl.reduce(xp, *found, reduction, compensated)


@_compat.compiled
def _standard_loss(
    xp: ModuleType,
    x: Any,
    t: Any,
    w: Any,
    mask: Any,
    *,
    axis: int,
    probabilities: bool,
    ignore: int | None,
    smoothing: float,
    reduction: str,
    compensated: bool,
    work: Any,
) -> Any:
    """The reduced loss of checked arguments by the standard-only path, in
    ``work``, a large eager batch in blocks (see ``_blocks``)."""
    if w is not None:
        w = xp.astype(w, work)
    passes = _compat.passes(xp)

    def run(part: tuple[Any, ...], example_part: tuple[Any, ...]) -> Any:
        return _impl.per_example(
            xp,
            xp.astype(x[part], work),
            xp.astype(t[part], work) if probabilities else t[example_part],
            axis,
            probabilities=probabilities,
            weight=w,
            ignore_index=ignore,
            where=None if mask is None else mask[example_part],
            smoothing=smoothing,
            compensated=compensated,
            passes=passes,
        )

    cut, blocks = _blocks(x, axis)
    with _compat.errstate(xp):
        parts = [run(*block) for block in blocks]
        loss, counted, weights = parts[0]
        if len(parts) > 1:
            loss, counted, weights = (
                None if part is None else xp.concat([q[k] for q in parts], axis=cut)
                for k, part in enumerate(parts[0])
            )
        return _impl.reduce(xp, loss, counted, weights, reduction, compensated, passes)
