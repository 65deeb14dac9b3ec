"""Public ``logsumexp``, ``softmax`` and ``log_softmax``.

This layer validates and converts arguments, picks the dtype to compute in,
and hands the arrays to the standard-only code in ``_core.reductions``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import _args, _compat, _fast
from ._core import reductions as _impl

__all__ = ["log_softmax", "logsumexp", "softmax"]


def _prepare(
    func: str, xp: ModuleType, x: Any, where: Any, extra: Any = None
) -> tuple[Any, Any, Any]:
    """Check ``x`` (and ``where``); return x in its compute dtype and its dtype.

    ``extra`` takes part in dtype promotion (the weights ``b``).
    """
    _args.check_numeric(func, "x" if func != "logsumexp" else "a", xp, x)
    dtype = x.dtype if extra is None else xp.result_type(x.dtype, extra.dtype)
    if _compat.isdtype(xp, dtype, ("bool", "integral")):
        out_dtype = _compat.compute_dtype(xp, dtype, _compat.device(x))
    else:
        out_dtype = dtype
    work = _compat.compute_dtype(xp, out_dtype, _compat.device(x))
    if where is not None:
        _args.check_mask(func, xp, where, tuple(x.shape))
    return xp.astype(x, work), work, out_dtype


def _masked(xp: ModuleType, x: Any, where: Any) -> Any:
    """Masked entries count as absent: they become ``-inf``."""
    if where is None:
        return x
    fill = (
        complex(-math.inf, 0.0)
        if _compat.isdtype(xp, x.dtype, "complex floating")
        else -math.inf
    )
    return xp.where(where, x, fill)


def _compensate(work: Any, out_dtype: Any) -> bool:
    # Without a wider dtype to compute in, the sum of exponentials is
    # compensated instead; a wider one already absorbs its rounding.
    return bool(work == out_dtype)


def _exact_rows(impl: str) -> Callable[[Any], Any]:
    """The standard-only ``impl`` over the rows of a 2-D array, for the rows
    that the fast path hands back: for logsumexp in the dtype it computes
    in (float64 where the namespace has it), for the normalisations in
    the rows'."""

    def exact(rows: Any) -> Any:
        xp = _compat.namespace(rows)
        work = _compat.compute_dtype(xp, rows.dtype, _compat.device(rows))
        compensated = _compensate(work, rows.dtype)
        with _compat.errstate(xp):
            if impl == "logsumexp":
                out = _impl.logsumexp(
                    xp, xp.astype(rows, work), (1,), None, False, False, compensated
                )[0]
                return xp.astype(out, work)
            out = getattr(_impl, impl)(xp, xp.astype(rows, work), (1,), compensated)
            return xp.astype(out, rows.dtype)

    return exact


# Built once, so that each has one function (JAX's kernels key their
# compiled guards on it), and without functools.cache, which Dynamo warns
# about whenever it traces a call.
_EXACT = {impl: _exact_rows(impl) for impl in ("logsumexp", "softmax", "log_softmax")}


def _native_result(x: Any) -> Any:
    """0-d NumPy results as NumPy scalars, as SciPy gives them."""
    return x[()] if x.ndim == 0 and type(x).__module__ == "numpy" else x


def _empty(x: Any) -> bool:
    # Any zero-length axis, reduced or not: max() has no identity, and some
    # libraries refuse it even along a non-empty axis.
    return any(n == 0 for n in x.shape)


def logsumexp(
    a: Any,
    axis: Any = None,
    b: Any = None,
    keepdims: bool = False,
    return_sign: bool = False,
    *,
    where: Any = None,
) -> Any:
    """Compute the log of the sum of exponentials of input elements.

    ``log(sum(b * exp(a)))`` over ``axis``, without overflow or underflow,
    accurate to an ulp even when one term dominates the sum. The signature
    and results are those of :func:`scipy.special.logsumexp`, with JAX's
    ``where`` in addition; the input's array library, device and dtype
    decide the output's.

    Parameters
    ----------
    a : array_like
        Input array of any Array API library (NumPy, PyTorch, JAX, CuPy,
        Dask, array-api-strict), or a Python scalar or list (read as NumPy).
    axis : None or int or tuple of ints, optional
        Axis or axes over which the sum is taken. By default, ``axis`` is
        None, and all elements are summed.
    b : array_like, optional
        Scaling factor for ``exp(a)``, broadcast against ``a``. Entries with
        ``b == 0`` are ignored even where ``a`` is infinite or NaN; weights
        may be negative.
    keepdims : bool, optional
        If True, the reduced axes are left in the result as dimensions with
        size one.
    return_sign : bool, optional
        If True, return ``(log|sum|, sign)``. If False, a negative sum
        gives NaN.
    where : array of bool, optional
        Entries to include, broadcast against ``a``. Masked entries count as
        absent, so a fully masked slice gives ``-inf``.

    Returns
    -------
    res : array
        ``log(|sum(b * exp(a))|)`` over ``axis``. Real input gives a real
        result; complex input the principal branch of the complex log.
    sgn : array
        Only with ``return_sign=True``: the sign of the sum (1, -1, or 0
        for an empty sum), complex ``exp(i*phase)`` for complex input.

    See Also
    --------
    softmax, log_softmax

    Notes
    -----
    Each slice is split into its maximum ``m`` and the rest:
    ``sum(b * exp(a)) = exp(m) * (W + s)`` with ``W`` the summed weight of
    the entries equal to ``m`` and ``s`` the weighted exponentials of all
    other entries shifted by ``m``. The result is
    ``m + log1p(s + (W - 1))``: because ``W - 1`` is exact, terms far below
    the maximum survive, where ``m + log(1 + s)`` rounds them away
    (``logsumexp([0, -40])`` is ``4.248354255291589e-18``, not 0).

    float32 is computed in float64 where the namespace has it, and rounded
    once at the end. float64, which has nothing wider, undoes the rounding
    of each shift ``a - m`` (recovered exactly by TwoSum; it would otherwise
    cost ``|a - m|`` ulps of ``exp(a - m)``) and sums the shifted
    exponentials with compensation (TwoSum folding), so that a result that
    is itself a long sum of tiny terms keeps its last digit.

    Unweighted, unmasked float32 and float64 input takes a fast path on
    NumPy and on eager PyTorch (CPU), and float32 under JAX (with
    ``jax_enable_x64``, or on the CPU where the C kernel was built) and
    under ``torch.compile`` (CPU). float32 on NumPy and eager PyTorch, and
    on JAX's CPU without x64 mode (as an XLA custom call), goes through a
    C kernel, built at install where a C compiler is found, in one pass
    over memory: each row's maximum ``m``,
    then ``exp(a - m)`` with the shift formed in float64 (exact, where a
    float32 shift rounds by up to ``|a - m|`` ulps of the term) by a
    float64 polynomial within ``2**-33``, summed in float64 over the
    entries but the maxima, which count as an exact 1 each; on PyTorch's
    own threads. Without the kernel, and for float64, the fast path takes
    the maxima, ``exp`` and its float64 sum in blocks that stay in cache,
    or fused by the compiler, with exponentials exact in their argument
    (unshifted ``exp(x)`` divided by ``exp(m)`` afterwards, or, when
    traced, the shift's rounding undone by TwoSum); float32 rows whose
    result is at least 4.5 in magnitude (8.5 on NumPy, whose ``exp`` is
    within 2.5 ulps) take ``log`` of the float64 sum of the unshifted
    ``exp(x)``, without the maxima, their result large enough for the
    exponentials' own rounding (eagerly the other rows alone take the
    maxima; traced, the whole batch does), and small float32 arrays (up to
    4096 entries on NumPy, 8192 on PyTorch: a hidden Markov model's step)
    are converted to float64 at once. The rows where the fast path's
    rounding could reach half an ulp of the result (one dominant term, a
    result near 0, a maximum outside the range of ``exp``, a non-finite
    one) are recomputed by the path above. Results agree with it to within
    an ulp; ``python -m lsekit bench`` times both against each library's
    own function. Eager PyTorch takes it under autograd too: the gradient
    is then the closed form (here ``g * exp(x - m) / (1 + t)``, from the
    row's maximum ``m`` and the sum ``t`` of its other terms), in a pass or
    two like the library's own, and the rows recomputed take theirs from
    the path above, as does a second derivative.

    Integer and boolean input is promoted to the namespace's default
    floating dtype; float16 and bfloat16 are computed in float32 and
    returned in their own dtype. An empty or all ``-inf`` slice gives
    ``-inf`` with sign 0 and no warning; ``+inf`` gives ``inf``; NaN
    propagates.

    Under PyTorch's and JAX's autodiff the gradient in ``a`` is ``sign * b *
    exp(a - out)`` (the softmax, without weights): 0, not NaN, for an all
    ``-inf`` or fully masked slice, at masked entries and where ``b == 0``.
    The gradient in ``b`` is ``sign * exp(a - out)``, at zero weights too.
    Higher derivatives are those of the exact function, ties at the
    maximum included.

    Examples
    --------
    >>> import numpy as np
    >>> from lsekit import logsumexp
    >>> logsumexp(np.array([1000.0, 1000.0, 1000.0]))
    np.float64(1001.0986122886682)
    >>> logsumexp(np.array([0.0, -40.0]))
    np.float64(4.248354255291589e-18)
    >>> logsumexp(np.array([[0.0, 1.0], [2.0, 3.0]]), axis=1)
    array([1.31326169, 3.31326169])
    >>> logsumexp(np.array([1.0, 2.0]), b=np.array([1.0, -1.0]), return_sign=True)
    (np.float64(1.5413248546129181), np.float64(-1.0))
    >>> logsumexp(np.array([1.0, 2.0, 3.0]), where=np.array([True, False, False]))
    np.float64(1.0)

    On PyTorch, the gradient of an all ``-inf`` slice is 0 (``torch.logsumexp``
    gives NaN):

    >>> import torch
    >>> x = torch.tensor([-float("inf"), -float("inf")], requires_grad=True)
    >>> logsumexp(x).backward()
    >>> x.grad
    tensor([0., 0.])
    """
    keepdims = _args.check_flag("logsumexp", "keepdims", keepdims)
    return_sign = _args.check_flag("logsumexp", "return_sign", return_sign)
    if b is None and where is None and not (keepdims or return_sign):
        found = _fast.rows_at_once(a, axis, "logsumexp", _EXACT["logsumexp"])
        if found is not None:
            return _native_result(found)
    kern = _fast.kernels(a, "logsumexp") if b is None and where is None else None
    if kern is not None:
        axes = _args.normalize_axis("logsumexp", axis, a.ndim)
        out = _fast.logsumexp(kern, a, axes, keepdims, _EXACT["logsumexp"])
        if return_sign:
            sign = kern.cast(kern.sign(out), a.dtype)
            return _native_result(kern.cast(out, a.dtype)), _native_result(sign)
        return _native_result(kern.cast(out, a.dtype))
    xp, arr = _compat.as_arrays("logsumexp", a=a, where=where)
    a, where = arr["a"], arr["where"]
    if b is not None:
        b = _as_weights(xp, a, b)
        _args.check_numeric("logsumexp", "b", xp, b)
        shape = _args.check_broadcast("logsumexp", "b", tuple(b.shape), tuple(a.shape))
    else:
        shape = tuple(a.shape)
    axes = _args.normalize_axis("logsumexp", axis, len(shape))
    a, work, out_dtype = _prepare("logsumexp", xp, a, where, b)
    if where is not None:
        shape = _args.check_broadcast("logsumexp", "where", tuple(where.shape), shape)
    out, sign = _logsumexp(
        xp,
        a,
        b,
        where,
        shape=shape,
        axes=axes,
        keepdims=keepdims,
        return_sign=return_sign,
        work=work,
        out_dtype=out_dtype,
    )
    if return_sign:
        return _compat.finalize(xp, out), _compat.finalize(xp, sign)
    return _compat.finalize(xp, out)


@_compat.compiled
def _logsumexp(
    xp: ModuleType,
    a: Any,
    b: Any,
    where: Any,
    *,
    shape: tuple[int, ...],
    axes: tuple[int, ...],
    keepdims: bool,
    return_sign: bool,
    work: Any,
    out_dtype: Any,
) -> tuple[Any, Any]:
    """The logsumexp and sign of checked arrays (``a`` in ``work``), in
    ``out_dtype`` unless complex."""
    if not _args.same_shape(shape, tuple(a.shape)):
        a = xp.broadcast_to(a, shape)
    complex_ = _compat.isdtype(xp, work, "complex floating")
    slope = None
    passes = _compat.passes(xp)
    with _compat.errstate(xp):
        a = _masked(xp, a, where)
        if b is not None:
            b = xp.astype(b, work)
            if not _args.same_shape(shape, tuple(b.shape)):
                b = xp.broadcast_to(b, shape)
            if where is not None:
                b = xp.where(where, b, 0.0)
            if not complex_ and _compat.differentiable(b):
                slope = (a, b)
            a = xp.where(b == 0, -math.inf, a)
        if _empty(a):
            out, sign = _empty_logsumexp(xp, a, axes, keepdims, work)
        elif complex_:
            out, sign = _impl.logsumexp_complex(
                xp, a, axes, b, keepdims, return_sign, passes
            )
        else:
            compensated = _compensate(work, out_dtype)
            out, sign = _impl.logsumexp(
                xp, a, axes, b, keepdims, return_sign, compensated, passes
            )
            if slope is not None:
                out = out + _zero_weight_slope(xp, *slope, out, sign, axes, keepdims)
    if complex_:
        return out, sign
    return xp.astype(out, out_dtype), xp.astype(sign, out_dtype)


def _as_weights(xp: ModuleType, a: Any, b: Any) -> Any:
    """Weights as an array; Python scalars take ``a``'s floating dtype."""
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        dtype = a.dtype
        if _compat.isdtype(xp, dtype, ("bool", "integral")):
            dtype = _compat.compute_dtype(xp, dtype, _compat.device(a))
        elif _compat.isdtype(xp, dtype, "complex floating"):
            dtype = None
        return xp.asarray(b, dtype=dtype, device=_compat.device(a))
    _, arr = _compat.as_arrays("logsumexp", a=a, b=b)
    return arr["b"]


def _zero_weight_slope(
    xp: ModuleType,
    a: Any,
    b: Any,
    out: Any,
    sign: Any,
    axes: tuple[int, ...],
    keepdims: bool,
) -> Any:
    """Zero, with the derivative in ``b`` of the entries where ``b == 0``.

    Those entries are left out of the sum (their ``a`` may be infinite or
    NaN), which would also cut them out of the gradient; yet a zero weight
    has the slope ``sign * exp(a - out)`` like any other. The result is
    ``log1p(sum(b * sign * exp(a - out)))`` over them: ``log(S + sum(b *
    exp(a)))`` less ``log S`` in exact arithmetic, so its derivatives, the
    second ones included, are those of the entries left out, and it is 0 in
    value, ``b`` being 0. Its derivative in ``a`` is ``b * ...``, 0 too. The
    exponential is capped, so that it never reaches ``inf`` and ``0 * inf``
    never turns the value into NaN.
    """
    if not keepdims:
        kept = tuple(1 if i in axes else n for i, n in enumerate(a.shape))
        out, sign = xp.reshape(out, kept), xp.reshape(sign, kept)
    live = (b == 0) & xp.isfinite(a) & xp.isfinite(out)
    gap = xp.where(live, a - xp.where(xp.isfinite(out), out, 0.0), 0.0)
    cap = math.log(xp.finfo(a.dtype).max) / 2
    term = xp.where(live, b * (sign * xp.exp(xp.where(gap > cap, cap, gap))), 0.0)
    return xp.log1p(xp.sum(term, axis=axes, keepdims=keepdims))


def _empty_logsumexp(
    xp: ModuleType, a: Any, axes: tuple[int, ...], keepdims: bool, dtype: Any
) -> tuple[Any, Any]:
    shape = tuple(
        1 if i in axes else n
        for i, n in enumerate(a.shape)
        if keepdims or i not in axes
    )
    device = _compat.device(a)
    out = xp.full(shape, -math.inf, dtype=dtype, device=device)
    sign = xp.zeros(shape, dtype=dtype, device=device)
    return out, sign


def _normalised(func: str, x: Any, axis: Any, where: Any, impl: str) -> Any:
    if where is None:
        found = _fast.rows_at_once(x, axis, impl, _EXACT[impl])
        if found is not None:
            return found
    kern = _fast.kernels(x, impl) if where is None else None
    if kern is not None:
        axes = _args.normalize_axis(func, axis, x.ndim)
        return _fast.normalised(kern, x, axes, impl, _EXACT[impl])
    xp, arr = _compat.as_arrays(func, x=x, where=where)
    x, where = arr["x"], arr["where"]
    axes = _args.normalize_axis(func, axis, x.ndim)
    if where is not None:
        _args.check_mask(
            func, xp, where, tuple(x.shape), f"x of shape {tuple(x.shape)}"
        )
    x, _, out_dtype = _prepare(func, xp, x, None)
    out = _normalised_arrays(xp, x, where, impl=impl, axes=axes, out_dtype=out_dtype)
    return _compat.finalize(xp, out)


@_compat.compiled
def _normalised_arrays(
    xp: ModuleType,
    x: Any,
    where: Any,
    *,
    impl: str,
    axes: tuple[int, ...],
    out_dtype: Any,
) -> Any:
    """``impl`` (softmax or log_softmax) of checked arrays, in ``out_dtype``."""
    if _empty(x):
        return xp.astype(x, out_dtype)
    work = x.dtype
    complex_ = _compat.isdtype(xp, work, "complex floating")
    passes = _compat.passes(xp)
    with _compat.errstate(xp):
        xm = _masked(xp, x, where)
        if complex_:
            out = getattr(_impl, impl + "_complex")(xp, xm, axes, passes)
        else:
            kernel = getattr(_impl, impl)
            out = kernel(xp, xm, axes, _compensate(work, out_dtype), passes)
        if where is not None:
            fill = 0.0 if impl == "softmax" else -math.inf
            out = xp.where(where, out, fill)
    return xp.astype(out, out_dtype)


def softmax(x: Any, axis: Any = None, *, where: Any = None) -> Any:
    """Compute the softmax function.

    ``exp(x) / sum(exp(x))`` over ``axis``, without overflow, with the
    signature and results of :func:`scipy.special.softmax` and JAX's
    ``where`` in addition.

    Parameters
    ----------
    x : array_like
        Input array of any Array API library, or a Python scalar or list.
    axis : None or int or tuple of ints, optional
        Axis or axes over which the normalisation runs. By default, ``axis``
        is None, and the whole array is one distribution (SciPy's default;
        pass ``axis=-1`` for the rows of a batch of logits).
    where : array of bool, optional
        Entries to include, broadcast against ``x``. Masked entries are 0
        and do not count in the normalisation.

    Returns
    -------
    s : array
        An array of the shape of ``x``; each slice sums to 1.

    See Also
    --------
    log_softmax, logsumexp

    Notes
    -----
    The result is ``exp(x - m) / (W + s)`` with the split of
    :func:`logsumexp`, so every entry carries a few ulps of relative error,
    the smallest ones included. An all ``-inf`` or fully masked slice gives
    0 (SciPy gives NaN); a slice holding ``+inf`` gives NaN at the infinite
    entries and 0 elsewhere (SciPy gives NaN everywhere).

    Unmasked float32 and float64 input takes the fast path described in
    :func:`logsumexp` (without its C kernel, for rows with a non-negative
    maximum on NumPy and PyTorch, whose numerators ``exp(x)`` are then not
    shifted); the C kernel (NumPy, eager PyTorch and JAX's CPU) rounds
    ``exp(x - m)`` and ``1 / (W + s)`` to float32 and multiplies them,
    within 1.5 ulps of the quotient. Neither path
    passes on the rounding of ``x - m``, which costs a plain max-shift
    softmax in float64 up to ``|x - m|`` ulps (hundreds, far below the
    maximum).

    Examples
    --------
    >>> import numpy as np
    >>> from lsekit import softmax
    >>> softmax(np.array([-1000.0, 1000.0, -1000.0, 5.0, 10.0, 0.001]))
    array([0., 1., 0., 0., 0., 0.])
    >>> softmax(np.array([[1.0, 1.0], [0.0, -np.inf]]), axis=1)
    array([[0.5, 0.5],
           [1. , 0. ]])
    >>> softmax(np.array([-np.inf, -np.inf]))
    array([0., 0.])
    """
    return _normalised("softmax", x, axis, where, "softmax")


def log_softmax(x: Any, axis: Any = None, *, where: Any = None) -> Any:
    """Compute the logarithm of the softmax function.

    ``x - logsumexp(x)`` over ``axis``, with the signature and results of
    :func:`scipy.special.log_softmax`, JAX's ``where`` in addition, and
    full relative accuracy for the dominant entry.

    Parameters
    ----------
    x : array_like
        Input array of any Array API library, or a Python scalar or list.
    axis : None or int or tuple of ints, optional
        Axis or axes over which the normalisation runs. By default, ``axis``
        is None, and the whole array is one distribution.
    where : array of bool, optional
        Entries to include, broadcast against ``x``. Masked entries are
        ``-inf`` and do not count in the normalisation.

    Returns
    -------
    s : array
        An array of the shape of ``x``.

    See Also
    --------
    softmax, logsumexp

    Notes
    -----
    The dominant entry is ``-log1p(s)`` with ``s`` the sum of the other
    shifted exponentials, so its tiny log-probability keeps every digit:
    ``log_softmax([0, -40])[0]`` is ``-4.248354255291589e-18`` where SciPy,
    PyTorch and JAX return 0. An all ``-inf`` or fully masked slice gives
    ``-inf`` (SciPy gives NaN).

    Unmasked float32 and float64 input takes the fast path described in
    :func:`logsumexp`; every entry stays within 4 ulps (float32 on NumPy,
    eager PyTorch and JAX's CPU forms ``(x - m) - log1p(s)`` in float64 and
    rounds once, in the C kernel, which JAX calls from XLA; without it,
    under ``torch.compile`` and on JAX's other devices, the three terms
    round in float32, within 1.5 ulps plus the error of ``log1p(s)``).

    Examples
    --------
    >>> import numpy as np
    >>> from lsekit import log_softmax
    >>> log_softmax(np.array([0.0, -40.0]))
    array([-4.24835426e-18, -4.00000000e+01])
    >>> log_softmax(np.array([1000.0, 1001.0, 1002.0]))
    array([-2.40760596, -1.40760596, -0.40760596])
    >>> log_softmax(np.array([-np.inf, -np.inf]))
    array([-inf, -inf])
    """
    return _normalised("log_softmax", x, axis, where, "log_softmax")
