"""Per-library autodiff hooks, imported only when their library is in use.

Each module has the same names: ``differentiable(rules)`` turns the
:class:`Rules` of a function of two arrays into that function, with those
derivatives, in its library's autodiff system.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

__all__ = ["Rules", "load"]


class Rules(NamedTuple):
    """A function of ``(a, b)`` and its derivatives.

    ``forward(a, b) -> (out, saved)``: the value, and arrays the derivatives
    reuse. ``backward(a, b, saved, out, g) -> (grad_a, grad_b)``: the
    gradient, fast, for a first derivative. ``backward_twice(a, b, out, g)``:
    the same gradient written in differentiable operations only, for when
    the gradient is differentiated in turn (second derivatives).
    ``tangent(a, b, saved, out, da, db)``: the forward-mode derivative,
    linear in ``(da, db)``.
    """

    forward: Callable[[Any, Any], tuple[Any, Any]]
    backward: Callable[..., tuple[Any, Any]]
    backward_twice: Callable[..., tuple[Any, Any]]
    tangent: Callable[..., Any]


def load(library: str) -> ModuleType:
    """The hooks module for ``library`` ("torch" or "jax")."""
    return importlib.import_module(f"{__name__}.{library}")
