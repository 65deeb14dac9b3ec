"""PyTorch under ``torch.compile``, on the CPU.

Both sides of every case are compiled (``dynamic=False``, so each shape
gets code of its own) and called once before timing, which compiles them.
Compiling takes seconds per function and shape, so the run covers
``Sizes.compiled_shapes``, ``compiled_matmul`` (up to `MATMUL_LIMIT`) and
``compiled_functions`` only, and a quick run times PyTorch's own functions
alone.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Sequence

from . import suite, torch_cases
from .case import Case
from .sizes import Sizes

__all__ = ["NAME", "available", "cases", "compiled_cases", "versions"]

NAME = "torch_compile"
# Compiling lsekit's logmatmulexp takes longer the larger the operands (two
# minutes at 256 on a 2-core CPU, past a quarter of an hour at 1024): larger
# sizes would hold a full run up for hours.
MATMUL_LIMIT = 256


def available() -> str | None:
    """Why the backend cannot run here, or None if it can."""
    why = torch_cases.available("cpu")
    if why is not None:
        return why
    # Inductor writes C++ for the CPU and builds it with the system compiler.
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler on PATH, which torch.compile needs on the CPU"
    return None


def versions() -> dict[str, str]:
    """The versions of the libraries timed."""
    return torch_cases.versions("cpu")


@functools.cache
def _library() -> suite.Library:
    return torch_cases.library("cpu", compiled=True)


def compiled_cases(
    name: str,
    sizes: Sizes,
    load: Callable[[], suite.Library],
    matmul: Sequence[int],
) -> list[Case]:
    """The cases of a compiled backend ``name`` (its `Library` from
    ``load``) in a run of ``sizes``: the compiled shapes and functions,
    and ``logmatmulexp`` at the sizes ``matmul``."""
    return suite.cases(
        name,
        sizes,
        load,
        shapes=sizes.compiled_shapes,
        matmul=matmul,
        functions=sizes.compiled_functions,
        by_hand=sizes.compiled_by_hand,
    )


def cases(sizes: Sizes) -> list[Case]:
    """The compiled PyTorch cases of a run of ``sizes``."""
    matmul = [n for n in sizes.compiled_matmul if n <= MATMUL_LIMIT]
    return compiled_cases(NAME, sizes, _library, matmul)
