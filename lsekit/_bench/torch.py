"""PyTorch, eager, on the CPU: lsekit against torch's own functions.

The library peers are ``torch.logsumexp`` and ``torch.nn.functional``'s
``softmax``, ``log_softmax`` and ``cross_entropy``, with the max-shift
formulas written in PyTorch beside them.
"""

from __future__ import annotations

import functools

from . import suite, torch_cases
from .case import Case
from .sizes import Sizes

__all__ = ["NAME", "available", "cases", "versions"]

NAME = "torch"


def available() -> str | None:
    """Why the backend cannot run here, or None if it can."""
    return torch_cases.available("cpu")


def versions() -> dict[str, str]:
    """The versions of the libraries timed."""
    return torch_cases.versions("cpu")


@functools.cache
def _library() -> suite.Library:
    return torch_cases.library("cpu")


def cases(sizes: Sizes) -> list[Case]:
    """The eager PyTorch cases of a run of ``sizes``."""
    return suite.cases(NAME, sizes, _library)
