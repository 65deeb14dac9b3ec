"""Dask: lsekit on a chunked ``dask.array`` against max-shift by hand.

Dask has no log-sum-exp of its own, so the peer is the max-shift formula
written in ``dask.array``. Both sides build a graph and compute it inside
the timed call, with Dask's default (threaded) scheduler. Every axis of
every input is split in two chunks, so that every reduction crosses a chunk
boundary, as it does on arrays too large for one chunk, and the operands
of the matrix product are chunked alike along the axis they share: its
graph is a product per block and their combination along that axis.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from . import maxshift, suite
from .case import Case
from .sizes import Sizes

__all__ = ["NAME", "available", "cases", "versions"]

NAME = "dask"

# Chunks per axis.
_SPLIT = 2


def _import(name: str) -> Any:
    # Typed as Any: dask's annotations vary between versions.
    return importlib.import_module(name)


def available() -> str | None:
    """Why the backend cannot run here, or None if it can."""
    try:
        _import("dask.array")
    except ImportError as exc:
        return f"dask[array] is not installed ({exc})"
    return None


def versions() -> dict[str, str]:
    """The versions of the libraries timed."""
    return {"dask": str(_import("dask").__version__)}


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(1, -(-n // _SPLIT)) for n in shape)


def _computed(f: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return f(*args).compute()

    return call


@functools.cache
def _library() -> suite.Library:
    da = _import("dask.array")
    return suite.Library(
        asarray=lambda a: da.from_array(a, chunks=_chunks(a.shape)),
        own={},
        by_hand={
            f: functools.partial(getattr(maxshift, f), da) for f in suite.FUNCTIONS
        },
        wrap=_computed,
    )


def cases(sizes: Sizes) -> list[Case]:
    """The Dask cases of a run of ``sizes``."""
    return suite.cases(NAME, sizes, _library)
