"""The benchmark's backends, by name, each a module of this package.

Importing this module imports no array library: a backend's library is
imported when its ``available()`` is asked.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from .case import Case
from .sizes import Sizes

__all__ = ["GPU", "NAMES", "Backend", "load"]

NAMES = (
    "numpy",
    "torch",
    "torch_train",
    "torch_compile",
    "torch_compile_train",
    "jax",
    "jax_train",
    "dask",
    "cupy",
    "torch_cuda",
)
GPU = frozenset({"cupy", "torch_cuda"})


@dataclass(frozen=True)
class Backend:
    """A backend module's functions, typed.

    Attributes
    ----------
    name : str
        One of `NAMES`.
    available : callable
        Returns why the backend cannot run here, or None if it can.
    versions : callable
        Returns ``{library: version}`` of what the backend times.
    cases : callable
        Given the run's `Sizes`, returns its cases.
    """

    name: str
    available: Callable[[], str | None]
    versions: Callable[[], dict[str, str]]
    cases: Callable[[Sizes], list[Case]]


def load(name: str) -> Backend:
    """The backend called ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not one of `NAMES`.

    Examples
    --------
    >>> load("numpy").name
    'numpy'
    >>> load("nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown backend 'nope' (known: numpy, torch, ...)
    """
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r} (known: {', '.join(NAMES)})")
    module = importlib.import_module(f"{__package__}.{name}")
    return Backend(
        name=module.NAME,
        available=module.available,
        versions=module.versions,
        cases=module.cases,
    )
