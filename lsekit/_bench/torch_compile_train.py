"""PyTorch under ``torch.compile``, on the CPU, training: the forward pass
compiled, its backward by AOTAutograd, as ``torch.compile`` of a model
trains.

Each call is a training step, as in `torch_train`, of a function compiled
as in `torch_compile`, over the same shapes and functions. ``logmatmulexp``
is left out: compiling its forward alone already takes minutes.
"""

from __future__ import annotations

import functools

from . import suite, torch_cases
from .case import Case
from .sizes import Sizes
from .torch_compile import available, compiled_cases, versions

__all__ = ["NAME", "available", "cases", "versions"]

NAME = "torch_compile_train"


@functools.cache
def _library() -> suite.Library:
    return torch_cases.library("cpu", compiled=True, trained=True)


def cases(sizes: Sizes) -> list[Case]:
    """The compiled training cases of a run of ``sizes``."""
    return compiled_cases(NAME, sizes, _library, matmul=[])
