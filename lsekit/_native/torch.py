"""PyTorch: a custom ``torch.autograd.Function``.

It works with ``torch.autograd`` (second derivatives included), forward-mode
AD, and ``torch.func``'s ``grad``, ``vmap``, ``jacrev`` and ``jacfwd``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from . import Rules

__all__ = ["differentiable"]


@functools.cache
def differentiable(rules: Rules) -> Callable[[Any, Any], Any]:
    # Imported here, so that the module imports (and its doctests collect)
    # where torch is not installed; typed as Any, since torch's annotations
    # are there in some environments and not in others.
    torch: Any = importlib.import_module("torch")

    class Function(torch.autograd.Function):  # type: ignore[misc]
        # The saved arrays are returned as extra outputs, without gradient:
        # torch.func transforms need the context filled by setup_context,
        # which sees the inputs and outputs only.
        @staticmethod
        def forward(a: Any, b: Any) -> tuple[Any, ...]:
            out, saved = rules.forward(a, b)
            return (out, *saved)

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, Any], output: Any) -> None:
            out, *saved = output
            ctx.mark_non_differentiable(*saved)
            ctx.save_for_backward(*inputs, out, *saved)
            ctx.save_for_forward(*inputs, out, *saved)

        @staticmethod
        def backward(ctx: Any, g: Any, *_: Any) -> tuple[Any, Any]:
            a, b, out, *saved = ctx.saved_tensors
            if torch.is_grad_enabled():
                # create_graph: the gradient is itself differentiated.
                return rules.backward_twice(a, b, out, g)
            return rules.backward(a, b, tuple(saved), out, g)

        @staticmethod
        def jvp(ctx: Any, da: Any, db: Any) -> tuple[Any, ...]:
            a, b, out, *saved = ctx.saved_tensors
            da = torch.zeros_like(a) if da is None else da
            db = torch.zeros_like(b) if db is None else db
            t = rules.tangent(a, b, tuple(saved), out, da, db)
            return (t, *(None for _ in saved))

        @staticmethod
        def vmap(
            info: Any, in_dims: tuple[Any, Any], a: Any, b: Any
        ) -> tuple[tuple[Any, ...], tuple[int, ...]]:
            # The mapped axis becomes one more batch axis, in front.
            def lead(x: Any, dim: Any) -> Any:
                x = x.unsqueeze(0) if dim is None else x.movedim(dim, 0)
                return x.expand(info.batch_size, *x.shape[1:])

            outputs = Function.apply(lead(a, in_dims[0]), lead(b, in_dims[1]))
            return outputs, (0,) * len(outputs)

    def apply(a: Any, b: Any) -> Any:
        return Function.apply(a, b)[0]

    return apply
