"""Per-library autodiff hooks, imported only when their library is in use.

Each module has the same names: ``differentiable(forward, backward)`` turns
a forward pass that returns ``(out, saved)`` and a backward pass
``backward(a, b, saved, out, g) -> (grad_a, grad_b)`` into a function of
``(a, b)`` with that gradient in its library's autodiff system.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["load"]


def load(library: str) -> ModuleType:
    """The hooks module for ``library`` ("torch" or "jax")."""
    return importlib.import_module(f"{__name__}.{library}")
