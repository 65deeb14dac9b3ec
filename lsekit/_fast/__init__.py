"""Native fast paths: one module per library, with the same names.

Each module has ``accepts(x)``, ``eligible(x, func)``, ``now(x)``,
``transpose(x, perm)``, ``as_rows(x, n)``, ``logsumexp(x2, exact)``,
``normalised(x2, kind, exact)``, ``cross_entropy(x2, target, ignore,
smoothing, exact)``, ``sign(out)`` and ``cast(x, dtype)``: the kernels
of ``logsumexp``, ``log_softmax``, ``softmax`` and the class-index
``cross_entropy`` over the rows of a 2-D float array, which take the
exponentials in its dtype and sum them in float64. NumPy's and eager
PyTorch's are blocked loops (``_blocked``), whose float32 rows a C
kernel takes where it was built (``_fused``); JAX's, and PyTorch's under
``torch.compile``, one traced expression (``_traced``). The driver here
lays the reduced axes out as rows and hands the rows that the eager
kernels do not certify (the traced ones decide themselves) to the
standard-only implementation in ``_core``. The fast paths are held to
the same tests as ``_core``.

Eagerly (``now``), float32 reduced over the last axis is the C kernel's
alone, and so is the loss of float32 logits of shape ``(N, C)`` and int64
class indices: ``rows_at_once`` and ``loss_at_once`` take them before any
of the checks, casts and layouts that other arrays need, which cost a
small batch more than the kernel's pass. NumPy's and PyTorch's modules
give them two more functions: ``graded(x2, target, how, box)``, the
result with the gradient of ``_autograd`` where autograd records the
rows, and ``as_float32(v)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .. import _compat
from . import _fused, jax, numpy, torch

__all__ = [
    "cross_entropy",
    "kernels",
    "logsumexp",
    "loss_at_once",
    "normalised",
    "rows_at_once",
]

# The range of the kernel's class indices, int64.
_INT64 = (-(2**63), 2**63 - 1)

# Imported here, not on first use: a first call may come while
# ``torch.compile`` traces, which cannot follow an import.
_MODULES = (numpy, torch, jax)

# The kernels found for each array type: the lookup runs on every call.
# Neither read nor written while Dynamo traces (see ``_compat.compiling``).
_BY_TYPE: dict[type, ModuleType | None] = {}


def _module(x: Any) -> ModuleType | None:
    found = None
    for module in _MODULES:
        if module.accepts(x):
            found = module
    return found


def kernels(x: Any, func: str) -> ModuleType | None:
    """The kernel module for ``x`` and the function ``func``
    (``"logsumexp"``, ``"log_softmax"``, ``"softmax"`` or
    ``"cross_entropy"``), or None when none applies to them."""
    if _compat.compiling():
        kern = _module(x)
    else:
        key = type(x)
        if key not in _BY_TYPE:
            _BY_TYPE[key] = _module(x)
        kern = _BY_TYPE[key]
    return kern if kern is not None and kern.eligible(x, func) else None


def _layout(
    x: Any, axes: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """The permutation that puts the reduced axes last, the permuted shape,
    and the number of kept axes."""
    ndim = x.ndim
    kept = tuple(i for i in range(ndim) if i not in axes)
    perm = (*kept, *axes)
    shape = tuple(x.shape[i] for i in perm)
    return perm, shape, len(kept)


def _rows(
    kern: ModuleType, x: Any, perm: tuple[int, ...], shape: tuple[int, ...], nkept: int
) -> Any:
    """``x`` with its axes in the order ``perm`` (of shape ``shape``), as
    C-contiguous rows of the last ``x.ndim - nkept`` axes."""
    if perm != tuple(range(len(perm))):
        x = kern.transpose(x, perm)
    return kern.as_rows(x, math.prod(shape[nkept:]))


def _restore(
    kern: ModuleType, out2: Any, perm: tuple[int, ...], shape: tuple[int, ...]
) -> Any:
    """Rows back in the input's layout: the inverse of ``_rows``."""
    out = out2.reshape(shape)
    if perm == tuple(range(len(perm))):
        return out
    return kern.transpose(out, tuple(perm.index(i) for i in range(len(perm))))


def _redo(x2: Any, redo: Any, out: Any, exact: Callable[..., Any], *extra: Any) -> None:
    """Write ``exact(x2[redo], *(e[redo] for e in extra))`` into
    ``out[redo]``."""
    if redo is not None:
        out[redo] = exact(x2[redo], *(e[redo] for e in extra))


def logsumexp(
    kern: ModuleType,
    x: Any,
    axes: tuple[int, ...],
    keepdims: bool,
    exact: Callable[[Any], Any],
) -> Any:
    """The logsumexp of an eligible array, in float64 (``kern.sign`` gives
    its sign). ``exact(rows)`` is the standard-only logsumexp of 2-D rows,
    in float64.
    """
    perm, shape, nkept = _layout(x, axes)
    x2 = _rows(kern, x, perm, shape, nkept)
    out, redo = kern.logsumexp(x2, exact)
    _redo(x2, redo, out, exact)
    kept = shape[:nkept]
    if keepdims:
        kept = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
    return out.reshape(kept)


def normalised(
    kern: ModuleType,
    x: Any,
    axes: tuple[int, ...],
    kind: str,
    exact: Callable[[Any], Any],
) -> Any:
    """``log_softmax`` or ``softmax`` (``kind``) of an eligible array, in its
    dtype. ``exact(rows)`` is the standard-only function of 2-D rows."""
    perm, shape, nkept = _layout(x, axes)
    x2 = _rows(kern, x, perm, shape, nkept)
    out, redo = kern.normalised(x2, kind, exact)
    _redo(x2, redo, out, exact)
    return _restore(kern, out, perm, shape)


def cross_entropy(
    kern: ModuleType,
    x: Any,
    target: Any,
    axis: int,
    ignore: int | None,
    smoothing: float,
    exact: Callable[[Any, Any], Any],
) -> tuple[Any, Any]:
    """Each example's cross-entropy (class indices ``target``, classes along
    ``axis``, smoothed by ``smoothing``) in float64, of the examples'
    shape, and the mask of those counted (None: all). ``exact(rows,
    target)`` is the standard-only loss of 2-D rows, in float64.
    """
    perm, shape, nkept = _layout(x, (axis,))
    x2 = _rows(kern, x, perm, shape, nkept)
    t = target.reshape(-1)
    loss, counted, redo = kern.cross_entropy(x2, t, ignore, smoothing, exact)
    _redo(x2, redo, loss, exact, t)
    examples = shape[:nkept]
    return loss.reshape(examples), None if counted is None else counted.reshape(
        examples
    )


def loss_at_once(
    x: Any,
    target: Any,
    axis: Any,
    ignore: int | None,
    smoothing: float,
    exact: Callable[[Any, Any], Any],
    reduction: str,
) -> Any:
    """The loss of float32 logits ``x`` of shape ``(N, C)`` with the classes
    along ``axis`` (-1 or 1) and their int64 class indices ``target`` of
    shape ``(N,)``, by the C kernel, where it computes every row now: each
    example's in float64, reduced by ``reduction`` (``"none"``,
    ``"mean"`` or ``"sum"``) as ``_core.losses.reduce`` reduces them,
    rounded to float32, in ``x``'s library (a NumPy array, or a tensor
    with its gradient where autograd records ``x``). ``exact`` is the
    standard-only loss (see ``cross_entropy``). None where any of that
    does not hold, or where a row is left to the standard-only path (its
    maximum is not finite, its class out of range): the caller's general
    path then takes the call, and its checks report bad input."""
    kern = kernels(x, "cross_entropy")
    if (
        kern is None
        or x.ndim != 2
        or type(axis) is not int
        or axis not in (-1, 1)
        or not kern.now(x)
        or (ignore is not None and not _INT64[0] <= ignore <= _INT64[1])
    ):
        return None
    nrows, n = x.shape
    at = kern.indices(target, nrows)
    if at is None:
        return None
    x2 = kern.as_rows(x, n)
    if not _fused.fits(kern, x2):
        return None
    loss, counted, redo, m, low = _fused.cross_entropy(kern, x2, at, ignore, smoothing)
    if redo is not None:
        return None
    count = None
    if reduction != "none":
        # Ignored examples' losses are 0: with nothing counted, the mean
        # is 0, not 0 / 0.
        count = nrows if counted is None else int(counted.sum())
        count = max(count, 1) if reduction == "mean" else 1
        loss = loss.sum() / count
    how = ("cross_entropy", ignore, exact, smoothing, count)
    return kern.graded(x2, target, how, [kern.as_float32(loss), m, low, None])


def rows_at_once(x: Any, axis: Any, kind: str, exact: Callable[[Any], Any]) -> Any:
    """``kind`` (``"logsumexp"``, ``"log_softmax"`` or ``"softmax"``) of the
    float32 array ``x`` over its last axis (``axis``, -1 or ``x.ndim - 1``)
    by the C kernel, where it does every row now: the log-sum-exp in
    float32, of ``x``'s shape without that axis, or the normalised rows,
    with their gradient where autograd records ``x`` (``exact`` is the
    standard-only function of 2-D rows, see ``logsumexp``). None where any
    of that does not hold, or where a row is left to the standard-only
    path (its maximum is not finite, or, for the log-sum-exp, the kernel's
    rounding could reach half an ulp of a result near 0): the caller's
    general path then takes the call."""
    kern = kernels(x, kind)
    if (
        kern is None
        or x.ndim == 0
        or type(axis) is not int
        or axis not in (-1, x.ndim - 1)
        or not kern.now(x)
    ):
        return None
    x2 = kern.as_rows(x, x.shape[-1])
    if not _fused.fits(kern, x2):
        return None
    how = (kind, None, exact, 0.0, None)
    if kind == "logsumexp":
        found = _fused.logsumexp_now(kern, x2)
        if found is None:
            return None
        out, m, low = found
        out = kern.graded(x2, None, how, [kern.as_float32(out), m, low, None])
        return out.reshape(x.shape[:-1])
    out, _, _, left, _ = _fused.run(kern, x2, kind)
    if left:
        return None
    out = kern.graded(x2, None, how, [out, None])
    return out if x.ndim == 2 else out.reshape(x.shape)
