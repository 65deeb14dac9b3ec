"""Validation of the arguments shared by the public functions.

Each check raises with the offending value in its message, before any
arithmetic runs.
"""

from __future__ import annotations

import contextlib
import operator
from types import ModuleType
from typing import Any

from . import _compat

__all__ = [
    "check_broadcast",
    "check_choice",
    "check_flag",
    "check_fraction",
    "check_mask",
    "check_numeric",
    "check_optional_int",
    "normalize_axis",
    "same_shape",
]


def normalize_axis(func: str, axis: Any, ndim: int) -> tuple[int, ...]:
    """Return ``axis`` as a sorted tuple of non-negative ints.

    ``None`` means every axis. Raises ``TypeError`` for a non-integer axis
    and ``ValueError`` for one out of bounds or repeated.
    """
    if axis is None:
        return tuple(range(ndim))
    items = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for item in items:
        if isinstance(item, bool):
            raise TypeError(
                f"{func}() axis must be an int or a tuple of ints, not {axis!r}"
            )
        try:
            i = operator.index(item)
        except TypeError:
            raise TypeError(
                f"{func}() axis must be None, an int or a tuple of ints, not {axis!r}"
            ) from None
        if not -ndim <= i < ndim:
            raise ValueError(
                f"{func}() axis {i} is out of bounds for array of dimension {ndim}"
            )
        out.append(i % ndim if ndim else i)
    if len(set(out)) != len(out):
        raise ValueError(f"{func}() axis {axis!r} repeats an axis")
    return tuple(sorted(out))


def check_flag(func: str, name: str, value: Any) -> bool:
    """Accept ``True``/``False`` (and NumPy's booleans), reject anything else."""
    if value is True or value is False:
        return bool(value)
    if type(value).__name__ in ("bool_", "bool") and value in (True, False):
        return bool(value)
    raise TypeError(f"{func}() {name} must be True or False, not {value!r}")


def check_numeric(func: str, name: str, xp: ModuleType, x: Any) -> None:
    """Reject arrays whose dtype is not boolean, integer, real or complex."""
    try:
        ok = _compat.isdtype(xp, x.dtype, ("bool", "numeric"))
    except (TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise TypeError(
            f"{func}() argument {name!r} must hold numbers, got dtype {x.dtype}"
        )


def check_mask(
    func: str, xp: ModuleType, where: Any, shape: tuple[Any, ...], within: str = ""
) -> None:
    """``where`` must be boolean and broadcast against the data's shape.

    With ``within`` (a description of ``shape``), it must also not enlarge
    ``shape``.
    """
    if not _compat.isdtype(xp, where.dtype, "bool"):
        raise TypeError(
            f"{func}() where must be a boolean array, got dtype {where.dtype}"
        )
    out = check_broadcast(func, "where", tuple(where.shape), shape)
    if within and not same_shape(out, shape):
        raise ValueError(
            f"{func}() where of shape {tuple(where.shape)} would enlarge {within}"
        )


def _known(n: Any) -> bool:
    return isinstance(n, int)


def same_shape(left: tuple[Any, ...], right: tuple[Any, ...]) -> bool:
    """Shapes equal, unknown lengths (NaN, None) matching each other."""
    return len(left) == len(right) and all(
        i == j or not (_known(i) or _known(j)) for i, j in zip(left, right, strict=True)
    )


def check_broadcast(
    func: str, name: str, shape: tuple[Any, ...], target: tuple[Any, ...]
) -> tuple[Any, ...]:
    """Return the broadcast shape, or raise naming both shapes."""
    n = max(len(shape), len(target))
    left = (1,) * (n - len(shape)) + tuple(shape)
    right = (1,) * (n - len(target)) + tuple(target)
    out = []
    for i, j in zip(left, right, strict=True):
        if not _known(i) or not _known(j):
            # A lazy array of unknown length (Dask after boolean indexing):
            # the library checks it when the graph runs.
            out.append(i if not _known(i) else j)
        elif i == j or j == 1:
            out.append(i)
        elif i == 1:
            out.append(j)
        else:
            raise ValueError(
                f"{func}() {name} of shape {tuple(shape)} does not broadcast "
                f"against an array of shape {tuple(target)}"
            )
    return tuple(out)


def check_choice(func: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` must be one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{func}() {name} must be one of {options}, not {value!r}")
    return value


def check_fraction(func: str, name: str, value: Any) -> float:
    """``value`` must be a real number in [0, 1]."""
    number = None
    # NumPy's booleans are named "bool" (2.x) or "bool_" (1.x).
    if not isinstance(value, (str, bytes)) and type(value).__name__ not in (
        "bool",
        "bool_",
    ):
        with contextlib.suppress(TypeError, ValueError):
            number = float(value)
    if number is None:
        raise TypeError(f"{func}() {name} must be a float, not {value!r}")
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{func}() {name} must lie in [0, 1], not {value!r}")
    return number


def check_optional_int(func: str, name: str, value: Any) -> int | None:
    """``value`` must be None or an integer (not a bool or a float)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{func}() {name} must be None or an int, not {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"{func}() {name} must be None or an int, not {value!r}"
        ) from None
