"""PyTorch: a custom ``torch.autograd.Function``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = ["differentiable"]


@functools.cache
def differentiable(
    forward: Callable[[Any, Any], tuple[Any, tuple[Any, ...]]],
    backward: Callable[..., tuple[Any, Any]],
) -> Callable[[Any, Any], Any]:
    # Imported here, so that the module imports (and its doctests collect)
    # where torch is not installed.
    import torch

    class Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, a: Any, b: Any) -> Any:
            out, saved = forward(a, b)
            ctx.save_for_backward(a, b, out, *saved)
            return out

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx: Any, g: Any) -> tuple[Any, Any]:
            a, b, out, *saved = ctx.saved_tensors
            return backward(a, b, tuple(saved), out, g)

    return Function.apply
