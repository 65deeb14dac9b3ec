"""The PyTorch kernels under autograd: eagerly, and under ``torch.compile``.

Rows that autograd records take the kernels too, inside a
``torch.autograd.Function`` whose gradient is a closed form in one pass or
two over the rows, as PyTorch's own functions have: the softmax ``p`` of
each row, ``g p`` for ``logsumexp``, ``p (g - sum(g p))`` for ``softmax``,
``g - p sum(g)`` for ``log_softmax``, ``g (p - onehot(target))`` for the
loss.

Eagerly (``reverse``), the rows that the kernels do not certify,
recomputed by the standard-only path, take their gradient from that path
too: its derivatives give 0, not NaN, where they can, at a maximum that
is not finite among others. Differentiated in turn (``create_graph``),
the gradients of ``softmax`` and ``log_softmax`` are their closed forms
in PyTorch's operations on the output, which autograd tracks back through
the function (so that the rows, as large, need not be kept, as PyTorch's
own keep the output alone); those of ``logsumexp`` and the loss, and of
any batch with rows recomputed, recompute the standard-only path's graph
and differentiate that. Second derivatives are those the tests check.

Under ``torch.compile`` (``traced``), the forward pass is the guarded
traced kernel and the backward the closed forms, both traced for Inductor
to fuse; in a batch that takes the standard-only path, the closed forms
give that path's gradients where a row's maximum is not finite, from a
value per row that each branch of the guard hands them. AOTAutograd does
not take second derivatives of a compiled graph.

This module imports torch: ``torch.py`` imports it where autograd records
a tensor, and an import is what Dynamo runs rather than traces, so that
the functions' classes are made outside the graph even when the first
call comes while ``torch.compile`` traces.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from .. import _compat
from . import _fused, _traced

# Typed as Any: torch's annotations are there in some environments and not
# in others.
torch: Any = importlib.import_module("torch")

__all__ = ["Guarded", "Rows", "attach", "pullback", "reverse", "traced"]

Rows = Callable[[Any, Any, "int | None", str, Any], tuple[Any, tuple[Any, ...]]]
"""``rows(x2, target, ignore, kind, exact)``: ``(out, stats)`` for rows
that autograd does not record: the kernel's result, every row's included
(``exact`` recomputes those that the kernel does not certify), and the
per-row tensors that the gradient needs. ``target`` and ``ignore`` are the
loss's class indices and ignored index, None elsewhere.

The statistics end with the mask of the rows that ``exact`` recomputed (or
None). Before it: nothing for ``softmax`` and ``log_softmax``, whose
gradients come from their outputs; ``m`` and ``low`` for ``logsumexp`` and
``cross_entropy``, each row's maximum and ``log1p`` of the sum of its other
terms (``logsumexp = m + low``), in float64, meaningless in the rows
recomputed.
"""


def reverse(
    kind: str,
    x2: Any,
    target: Any,
    ignore: int | None,
    rows: Rows,
    exact: Any,
    smoothing: float = 0.0,
) -> Any:
    """``rows``' result for 2-D rows ``x2`` that autograd records, with the
    gradient of ``kind`` ("logsumexp", "softmax", "log_softmax",
    "cross_entropy", its target smoothed by ``smoothing``). ``exact`` is the
    standard-only path's function of the rows (and ``target``)."""
    with torch.no_grad():
        out, stats = rows(x2.detach(), target, ignore, kind, exact)
    return attach(x2, target, (kind, ignore, exact, smoothing, None), [out, *stats])


def attach(x2: Any, target: Any, how: Any, box: list[Any]) -> Any:
    """``box[0]``, the result that ``box`` (of ``Rows``' ``(out, stats)``,
    tensors, flattened) holds for rows ``x2`` that autograd records, with
    the gradient that ``how``, ``(kind, ignore, exact, smoothing, count)``,
    says (see ``reverse``). ``count`` is None where ``box[0]`` holds a
    result per row; where it is the loss's sum over the rows divided by
    ``count`` (an int), reduced in float64 and rounded to float32 (as
    ``_core.losses.reduce`` does), the gradient is the reduction's too:
    each operation that autograd records costs a small batch several
    microseconds, forward and back."""
    # Handed over in a list: a tensor argument returned as it is would be
    # taken for a view of an input.
    return _Reverse.apply(x2, target, how, box)


class _Reverse(torch.autograd.Function):  # type: ignore[misc]
    """The eager kernels' result, computed beforehand and passed in ``box``,
    with their closed-form gradient."""

    @staticmethod
    def forward(ctx: Any, x2: Any, target: Any, how: Any, box: Any) -> Any:
        ctx.kind, ctx.ignore, ctx.exact, ctx.smoothing, ctx.count = how
        # The gradients of softmax and log_softmax come from their output
        # alone: the rows, as large, are kept for them only where some are
        # recomputed.
        keep = ctx.kind in ("logsumexp", "cross_entropy") or box[-1] is not None
        ctx.save_for_backward(x2 if keep else None, target, *box)
        return box[0]

    @staticmethod
    def backward(ctx: Any, g: Any) -> tuple[Any, None, None, None]:
        x2, target, out, *stats, redo = ctx.saved_tensors
        if torch.is_grad_enabled():
            # The gradient is differentiated in turn: from the output,
            # which autograd tracks back through this function, or
            # through the standard-only path's graph.
            if x2 is None:
                return _from_output(ctx.kind, out, g), None, None, None
            g = _per_row(ctx.kind, g, ctx.count, x2.shape[0])
            return _recomputed(ctx.exact, x2, target, g, True), None, None, None
        dx = _slope(ctx, x2, target, out, stats, g)
        if redo is not None:
            g = _per_row(ctx.kind, g, ctx.count, x2.shape[0])
            some = None if target is None else target[redo]
            dx[redo] = _recomputed(ctx.exact, x2[redo], some, g[redo])
        return dx, None, None, None


def _per_row(kind: str, g: Any, count: int | None, nrows: int) -> Any:
    """The gradient ``g`` of ``_Reverse``'s result as that of each row's,
    in float64 for ``logsumexp`` and the loss, which are computed in
    float64 whatever the result's dtype: the gradient of the rounding to
    it, and of the reduction (``count``, see ``attach``)."""
    if kind not in ("logsumexp", "cross_entropy"):
        return g
    g = g.to(torch.float64)
    return g if count is None else (g / count).expand(nrows)


def _recomputed(
    exact: Callable[..., Any], x2: Any, target: Any, g: Any, create_graph: bool = False
) -> Any:
    """The gradient of the standard-only path ``exact`` at ``x2``, given
    ``g``, that of its output."""
    with torch.enable_grad():
        if not create_graph:
            x2 = x2.detach().requires_grad_(True)
        y = exact(x2) if target is None else exact(x2, target)
        (dx,) = torch.autograd.grad(y.to(g.dtype), x2, g, create_graph=create_graph)
    return dx


def _from_output(kind: str, out: Any, g: Any) -> Any:
    """The gradient of ``softmax`` or ``log_softmax`` given ``g``, in
    PyTorch's operations on the output ``out``, which can be differentiated
    again."""
    if kind == "softmax":
        return out * (g - (g * out).sum(1, keepdim=True))
    return g - out.exp() * g.sum(1, keepdim=True)


def _slope(ctx: Any, x2: Any, target: Any, out: Any, stats: list[Any], g: Any) -> Any:
    """The closed-form gradient in the rows ``x2`` of ``_Reverse``'s ``ctx``,
    given ``g``.

    Those of ``softmax`` and ``log_softmax`` are PyTorch's own, from the
    output. Those of ``logsumexp`` and ``cross_entropy`` take ``p = exp(x -
    m) / (1 + t)``, ``m`` the row's maximum, exact in the rows' dtype, and
    ``1 + t = exp(low)`` in float64, where ``exp(x - lse)`` would pass on
    the rounding of ``lse`` itself (``|lse|`` ulps, 60 at 700 in float64).
    float32 rows take ``p`` times ``g`` from the C kernel where it was
    built (``_fused_slope``): one pass where PyTorch's operations take
    three, and the shift exact.
    """
    kind = ctx.kind
    if kind == "softmax":
        return torch._softmax_backward_data(g, out, 1, out.dtype)
    if kind == "log_softmax":
        return torch._log_softmax_backward_data(g, out, 1, out.dtype)
    m, low = stats[0], stats[1]
    ops = sys.modules[f"{__package__}.torch"]
    if _fused.fits(ops, x2):
        return _fused_slope(ops, ctx, x2, target, m, low, g)
    ignore, smoothing = ctx.ignore, ctx.smoothing
    g = _per_row(kind, g, ctx.count, x2.shape[0])
    if ignore is not None:
        # The rows whose target is ignored: a constant loss.
        g = torch.where(target != ignore, g, 0.0)
    scale = g * torch.exp(-low)
    dx = torch.sub(x2, m.to(x2.dtype)[:, None]).exp_()
    dx.mul_(scale.to(x2.dtype)[:, None])
    if kind == "cross_entropy":
        # The target's own term, -(1 - eps) x[target], and the smoothing's,
        # -eps / n sum(x).
        at = target if ignore is None else torch.where(target != ignore, target, 0)
        hit = (-(1.0 - smoothing) * g).to(x2.dtype)[:, None]
        dx.scatter_add_(1, at[:, None], hit)
        if smoothing:
            dx.sub_((smoothing / x2.shape[1] * g).to(x2.dtype)[:, None])
    return dx


def _fused_slope(
    ops: Any, ctx: Any, x2: Any, target: Any, m: Any, low: Any, g: Any
) -> Any:
    """``_slope`` of float32 rows: theirs by the C kernel, the values per
    row (``_per_row``'s, the same operations) in NumPy's, which cost a
    small batch a microsecond each where PyTorch's cost several."""
    np = sys.modules["numpy"]
    nrows, n = x2.shape
    # One value, or one per row: broadcast against the rows' vectors.
    g = g.detach().numpy().astype(np.float64)
    if ctx.count is not None:
        g = g / ctx.count
    at = None if target is None else target.numpy()
    if ctx.ignore is not None:
        # The rows whose target is ignored: a constant loss.
        skip = at == ctx.ignore
        g, at = np.where(skip, 0.0, g), np.where(skip, 0, at)
    dx = _fused.slope(ops, x2, m.numpy(), g * np.exp(-low.numpy()))
    if ctx.kind == "cross_entropy":
        # The target's own term, -(1 - eps) x[target], and the smoothing's,
        # -eps / n sum(x), rounded to float32 and added as PyTorch adds.
        d = dx.numpy()
        d[np.arange(nrows), at] += (-(1.0 - ctx.smoothing) * g).astype(np.float32)
        if ctx.smoothing:
            d -= np.reshape((ctx.smoothing / n * g).astype(np.float32), (-1, 1))
    return dx


Guarded = Callable[[str, Any, Any, "int | None", Any, float], tuple[Any, Any]]
"""``guarded(kind, x2, target, ignore, exact, smoothing)``: ``(out, aux)``,
traced (the loss's target smoothed by ``smoothing``):
the result of ``kind`` on 2-D rows ``x2`` (by the traced kernel, or by
the standard-only path ``exact``) and a float64 value per row for
``pullback``: for ``logsumexp`` the number of ``+inf`` entries
(``_traced.infinities``; 0 where the kernel ran), for ``softmax`` and
``log_softmax`` 1 where the row's maximum is finite and 0 elsewhere, for
the loss each row's log-sum-exp."""


def traced(
    kind: str,
    x2: Any,
    target: Any,
    ignore: int | None,
    exact: Any,
    guarded: Guarded,
    smoothing: float = 0.0,
) -> Any:
    """``guarded``'s result for rows ``x2`` that autograd records under
    ``torch.compile``, with ``pullback`` as its gradient (the loss's target
    smoothed by ``smoothing``)."""
    return _Traced.apply(x2, target, kind, ignore, exact, guarded, smoothing)


class _Traced(torch.autograd.Function):  # type: ignore[misc]
    """A ``Guarded`` and its ``pullback``, which Dynamo traces both."""

    @staticmethod
    def forward(
        ctx: Any,
        x2: Any,
        target: Any,
        kind: str,
        ignore: int | None,
        exact: Any,
        guarded: Guarded,
        smoothing: float,
    ) -> Any:
        out, aux = guarded(kind, x2, target, ignore, exact, smoothing)
        ctx.kind, ctx.ignore, ctx.smoothing = kind, ignore, smoothing
        # The gradients of softmax and log_softmax need their output
        # alone: the rows, as large, are not kept for them.
        rows = x2 if kind in ("logsumexp", "cross_entropy") else None
        ctx.save_for_backward(rows, target, out, aux)
        return out

    @staticmethod
    def backward(ctx: Any, g: Any) -> tuple[Any, ...]:
        x2, target, out, aux = ctx.saved_tensors
        dx = pullback(ctx.kind, ctx.ignore, x2, target, out, aux, g, ctx.smoothing)
        return dx, None, None, None, None, None, None


def pullback(
    kind: str,
    ignore: int | None,
    x2: Any,
    target: Any,
    out: Any,
    aux: Any,
    g: Any,
    smoothing: float = 0.0,
) -> Any:
    """The gradient in the rows ``x2`` given ``g``, that of ``out``, from
    the result and the values per row of a ``Guarded``: in the rows of a
    maximum that is not finite, that of the standard-only path traced (the
    share of each ``+inf`` entry for ``logsumexp``, 0 elsewhere, NaN in a
    row that holds a NaN, whose ``aux`` is NaN). ``x2`` is None for
    ``softmax`` and ``log_softmax``, whose gradients come from ``out``."""
    xp = _compat.namespace(aux)
    if kind in ("softmax", "log_softmax"):
        nan = xp.astype(xp.where(xp.isnan(aux), aux, xp.ones_like(aux)), out.dtype)
        live = (aux > 0)[:, None]
        g = xp.where(live, g, xp.zeros_like(g)) * nan[:, None]
        if kind == "softmax":
            p = xp.where(live, out, xp.zeros_like(out))
            gp = g * p
            return gp - p * xp.sum(gp, axis=1, keepdims=True)
        p = xp.where(live, xp.exp(out), xp.zeros_like(out))
        return g - p * xp.sum(g, axis=1, keepdims=True)
    nan = xp.astype(xp.where(xp.isnan(aux), aux, xp.ones_like(aux)), x2.dtype)
    if kind == "logsumexp":
        p = _traced.logsumexp_shares(xp, x2, out, aux)
        return p * (xp.astype(g, x2.dtype) * nan)[:, None]
    # The loss: p less the target's one-hot row, where the row's
    # log-sum-exp is finite and its target not ignored.
    keep = xp.isfinite(aux)
    if ignore is not None:
        keep = keep & (target != ignore)
    w = xp.astype(xp.where(keep, g, xp.zeros_like(g)), x2.dtype) * nan
    n = x2.shape[1]
    at = xp.where((target >= 0) & (target < n), target, xp.zeros_like(target))
    hit = xp.arange(n, device=_compat.device(x2)) == at[:, None]
    # The target smoothed: 1 - eps at its class, eps / n spread over all.
    onehot = xp.astype(hit, x2.dtype) * (1.0 - smoothing) + smoothing / n
    return (_traced.shares(xp, x2, aux) - onehot) * w[:, None]
