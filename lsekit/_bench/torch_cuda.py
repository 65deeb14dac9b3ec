"""PyTorch on a CUDA device, with the GPU bandwidth cases.

As the eager CPU backend, on ``cuda``, each call followed by
``torch.cuda.synchronize()``; and the achieved memory bandwidth of lsekit's
``logsumexp`` and ``log_softmax`` as a fraction of a device copy's.
"""

from __future__ import annotations

import functools

from . import bandwidth, suite, torch_cases
from .case import Case
from .sizes import Sizes

__all__ = ["NAME", "available", "cases", "versions"]

NAME = "torch_cuda"


def available() -> str | None:
    """Why the backend cannot run here, or None if it can."""
    return torch_cases.available("cuda")


def versions() -> dict[str, str]:
    """The versions of the libraries timed, and the GPU."""
    return torch_cases.versions("cuda")


@functools.cache
def _library() -> suite.Library:
    return torch_cases.library("cuda")


def cases(sizes: Sizes) -> list[Case]:
    """The CUDA PyTorch cases of a run of ``sizes``, bandwidth included."""
    return [
        *suite.cases(NAME, sizes, _library),
        *bandwidth.cases(NAME, sizes, _library),
    ]
