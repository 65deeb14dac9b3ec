"""CuPy on a CUDA device: lsekit against ``cupyx.scipy.special``.

Each call is followed by ``cupy.cuda.Device().synchronize()``. The loss
and the matrix product, which SciPy's API lacks, are set against the
max-shift formulas written in CuPy; and the bandwidth cases measure
lsekit's achieved memory bandwidth as a fraction of a device copy's.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from . import bandwidth, maxshift, suite
from .case import Case
from .sizes import Sizes

__all__ = ["NAME", "available", "cases", "versions"]

NAME = "cupy"


def _import(name: str) -> Any:
    # Typed as Any: CuPy ships no annotations.
    return importlib.import_module(name)


def available() -> str | None:
    """Why the backend cannot run here, or None if it can."""
    try:
        cupy = _import("cupy")
    except ImportError as exc:
        return f"cupy is not installed ({exc})"
    except Exception as exc:
        # A CuPy build for another CUDA fails in its own way.
        return f"cupy does not import: {type(exc).__name__}: {exc}"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:
        # Without a driver, CUDA reports through whatever CuPy raises.
        return f"no CUDA device ({type(exc).__name__}: {exc})"
    return None if count > 0 else "no CUDA device"


def versions() -> dict[str, str]:
    """The versions of the libraries timed, and the GPU."""
    cupy = _import("cupy")
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    return {
        "cupy": str(cupy.__version__),
        "gpu": name.decode() if isinstance(name, bytes) else str(name),
    }


@functools.cache
def _library() -> suite.Library:
    cupy = _import("cupy")
    special = _import("cupyx.scipy.special")

    def sync(r: Any) -> Any:
        cupy.cuda.Device().synchronize()
        return r

    def copier(src: Any) -> Any:
        dst = cupy.empty_like(src)
        return lambda: cupy.copyto(dst, src)

    return suite.Library(
        asarray=cupy.asarray,
        own={
            f: (
                f"cupyx.scipy.special.{f}",
                functools.partial(getattr(special, f), axis=-1),
            )
            for f in suite.REDUCTIONS
        },
        by_hand={
            f: functools.partial(getattr(maxshift, f), cupy) for f in suite.FUNCTIONS
        },
        sync=sync,
        to_numpy=cupy.asnumpy,
        copier=copier,
    )


def cases(sizes: Sizes) -> list[Case]:
    """The CuPy cases of a run of ``sizes``, bandwidth included."""
    return [
        *suite.cases(NAME, sizes, _library),
        *bandwidth.cases(NAME, sizes, _library),
    ]
