"""JAX: a ``jax.custom_jvp``, which ``jax.grad`` transposes for reverse mode."""

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
    # where jax is not installed; typed as Any, since jax's annotations are
    # there in some environments and not in others.
    jax: Any = importlib.import_module("jax")

    @jax.custom_jvp  # type: ignore[untyped-decorator]
    def function(a: Any, b: Any) -> Any:
        return rules.forward(a, b)[0]

    @function.defjvp  # type: ignore[untyped-decorator]
    def jvp(primals: tuple[Any, Any], tangents: tuple[Any, Any]) -> tuple[Any, Any]:
        a, b = primals
        da, db = tangents
        out, saved = rules.forward(a, b)
        return out, rules.tangent(a, b, tuple(saved), out, da, db)

    result: Callable[[Any, Any], Any] = function
    return result
