"""PyTorch: a custom ``torch.autograd.Function``."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["differentiable"]


@functools.cache
def differentiable(
    forward: Callable[[Any, Any], tuple[Any, tuple[Any, ...]]],
    backward: Callable[..., tuple[Any, Any]],
) -> Callable[[Any, Any], Any]:
    # Imported here, so that the module imports (and its doctests collect)
    # where torch is not installed; typed as Any, since torch's annotations
    # are there in some environments and not in others.
    torch: Any = importlib.import_module("torch")

    class Function(torch.autograd.Function):  # type: ignore[misc]
        @staticmethod
        def forward(ctx: Any, a: Any, b: Any) -> Any:
            out, saved = forward(a, b)
            ctx.save_for_backward(a, b, out, *saved)
            return out

        @staticmethod
        @torch.autograd.function.once_differentiable  # type: ignore[untyped-decorator]
        def backward(ctx: Any, g: Any) -> tuple[Any, Any]:
            a, b, out, *saved = ctx.saved_tensors
            return backward(a, b, tuple(saved), out, g)

    apply: Callable[[Any, Any], Any] = Function.apply
    return apply
