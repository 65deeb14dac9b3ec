"""PyTorch, eager, on the CPU, training: forward and backward.

Each call is a training step: the input requires a gradient, the function
runs, and a fixed random gradient of its output is propagated back; the
result compared is the input's gradient. The peers are those of `torch`,
differentiated by autograd, on the same library and device.
"""

from __future__ import annotations

import functools

from . import suite, torch_cases
from .case import Case
from .sizes import Sizes
from .torch import available, versions

__all__ = ["NAME", "available", "cases", "versions"]

NAME = "torch_train"


@functools.cache
def _library() -> suite.Library:
    return torch_cases.library("cpu", trained=True)


def cases(sizes: Sizes) -> list[Case]:
    """The training cases of a run of ``sizes``."""
    return suite.cases(NAME, sizes, _library)
