"""The eager PyTorch kernels under autograd.

Rows that autograd records take the kernels too, inside a
``torch.autograd.Function`` whose gradient is a closed form in one pass or
two over the rows, as PyTorch's own functions have: the softmax ``p`` of
each row, ``g p`` for ``logsumexp``, ``p (g - sum(g p))`` for ``softmax``,
``g - p sum(g)`` for ``log_softmax``, ``g (p - onehot(target))`` for the
loss. Differentiated in turn (``create_graph``), the function recomputes
the standard-only path's graph and differentiates that, so that second
derivatives are those the tests check.

The rows that the kernels do not certify, recomputed by the standard-only
path, take their gradient from that path too: its derivatives give 0, not
NaN, where they can, at a maximum that is not finite among others.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["Rows", "reverse"]

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
    kind: str, x2: Any, target: Any, ignore: int | None, rows: Rows, exact: Any
) -> Any:
    """``rows``' result for 2-D rows ``x2`` that autograd records, with the
    gradient of ``kind`` ("logsumexp", "softmax", "log_softmax",
    "cross_entropy"). ``exact`` is the standard-only path's function of the
    rows (and ``target``)."""
    torch = sys.modules["torch"]
    with torch.no_grad():
        out, stats = rows(x2.detach(), target, ignore, kind, exact)
    # Handed over in a list: a tensor argument returned as it is would be
    # taken for a view of an input.
    return _function().apply(x2, target, (kind, ignore, exact), [out, *stats])


@functools.cache
def _function() -> Any:
    """The ``torch.autograd.Function``, made once torch is in use."""
    # Typed as Any: torch's annotations are there in some environments and
    # not in others.
    torch: Any = sys.modules["torch"]

    class Reverse(torch.autograd.Function):  # type: ignore[misc]
        @staticmethod
        def forward(ctx: Any, x2: Any, target: Any, how: Any, box: Any) -> Any:
            ctx.kind, ctx.ignore, ctx.exact = how
            ctx.save_for_backward(x2, target, *box)
            return box[0]

        @staticmethod
        def backward(ctx: Any, g: Any) -> tuple[Any, None, None, None]:
            x2, target, out, *stats, redo = ctx.saved_tensors
            if torch.is_grad_enabled():
                # The gradient is differentiated in turn.
                return _recomputed(ctx.exact, x2, target, g, True), None, None, None
            dx = _slope(ctx.kind, x2, target, ctx.ignore, out, stats, g)
            if redo is not None:
                some = None if target is None else target[redo]
                dx[redo] = _recomputed(ctx.exact, x2[redo], some, g[redo])
            return dx, None, None, None

    return Reverse


def _recomputed(
    exact: Callable[..., Any], x2: Any, target: Any, g: Any, create_graph: bool = False
) -> Any:
    """The gradient of the standard-only path ``exact`` at ``x2``, given
    ``g``, that of its output."""
    torch = sys.modules["torch"]
    with torch.enable_grad():
        if not create_graph:
            x2 = x2.detach().requires_grad_(True)
        y = exact(x2) if target is None else exact(x2, target)
        (dx,) = torch.autograd.grad(y.to(g.dtype), x2, g, create_graph=create_graph)
    return dx


def _slope(
    kind: str,
    x2: Any,
    target: Any,
    ignore: int | None,
    out: Any,
    stats: list[Any],
    g: Any,
) -> Any:
    """The closed-form gradient in the rows ``x2``, given ``g``.

    Those of ``softmax`` and ``log_softmax`` are PyTorch's own, from the
    output. Those of ``logsumexp`` and ``cross_entropy`` take ``p = exp(x -
    m) / (1 + t)``, ``m`` the row's maximum, exact in the rows' dtype, and
    ``1 + t = exp(low)`` in float64, where ``exp(x - lse)`` would pass on
    the rounding of ``lse`` itself (``|lse|`` ulps, 60 at 700 in float64).
    """
    torch = sys.modules["torch"]
    if kind == "softmax":
        return torch._softmax_backward_data(g, out, 1, x2.dtype)
    if kind == "log_softmax":
        return torch._log_softmax_backward_data(g, out, 1, x2.dtype)
    m, low = stats[0], stats[1]
    if ignore is not None:
        # The rows whose target is ignored: a constant loss.
        g = torch.where(target != ignore, g, 0.0)
    dx = torch.sub(x2, m.to(x2.dtype)[:, None]).exp_()
    dx.mul_((g * torch.exp(-low)).to(x2.dtype)[:, None])
    if kind == "cross_entropy":
        # The target's own term, -x[target].
        at = target if ignore is None else torch.where(target != ignore, target, 0)
        dx.scatter_add_(1, at[:, None], -g.to(x2.dtype)[:, None])
    return dx
