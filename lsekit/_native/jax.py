"""JAX: a ``jax.custom_vjp``."""

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
    # where jax is not installed; typed as Any, since jax's annotations are
    # there in some environments and not in others.
    jax: Any = importlib.import_module("jax")

    @jax.custom_vjp  # type: ignore[untyped-decorator]
    def function(a: Any, b: Any) -> Any:
        return forward(a, b)[0]

    def fwd(a: Any, b: Any) -> tuple[Any, tuple[Any, ...]]:
        out, saved = forward(a, b)
        return out, (a, b, out, tuple(saved))

    def bwd(residuals: tuple[Any, ...], g: Any) -> tuple[Any, Any]:
        a, b, out, saved = residuals
        return backward(a, b, saved, out, g)

    function.defvjp(fwd, bwd)
    result: Callable[[Any, Any], Any] = function
    return result
