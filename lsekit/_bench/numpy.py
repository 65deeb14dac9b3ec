"""NumPy: lsekit against ``scipy.special`` and the max-shift formulas.

SciPy has no cross-entropy and no log-space matrix product: those are set
against the max-shift versions alone. Peak memory is traced here only, as
NumPy is the library that reports its allocations to tracemalloc.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from typing import Any

from . import maxshift, suite
from .case import Case
from .sizes import Sizes

__all__ = ["NAME", "available", "cases", "versions"]

NAME = "numpy"


def _import(name: str) -> Any:
    # Typed as Any: SciPy ships without annotations.
    return importlib.import_module(name)


def available() -> str | None:
    """Why the backend cannot run here, or None if it can."""
    if importlib.util.find_spec("scipy") is None:
        return "scipy is not installed (its functions are the peers)"
    return None


def versions() -> dict[str, str]:
    """The versions of the libraries timed."""
    import numpy as np

    return {"numpy": np.__version__, "scipy": _import("scipy").__version__}


@functools.cache
def _library() -> suite.Library:
    import numpy as np

    special = _import("scipy.special")

    return suite.Library(
        asarray=np.asarray,
        own={
            f: (f"scipy.special.{f}", functools.partial(getattr(special, f), axis=-1))
            for f in suite.REDUCTIONS
        },
        by_hand={
            f: functools.partial(getattr(maxshift, f), np)
            for f in (*suite.REDUCTIONS, "cross_entropy", "logmatmulexp")
        },
        trace_memory=True,
    )


def cases(sizes: Sizes) -> list[Case]:
    """The NumPy cases of a run of ``sizes``, a float64 shape included."""
    return suite.cases(NAME, sizes, _library, float64=True)
