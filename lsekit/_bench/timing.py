"""The timing protocol: warm up, then alternate lsekit and its peers.

Each side is called once before timing (compiling it, where a compiler is
involved), so that no side pays for a first call. Then the repeats
alternate the sides on the same input, so that a change of machine load
during the run touches every side alike, and each side's figure is the
median of its repeats. A side whose calls are short is timed in batches of
calls lasting about `MIN_BATCH_S`, so that the clock's resolution and the
cost of one Python call do not count; its time is the batch's over the
number of calls in it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

__all__ = [
    "alternate",
    "bandwidth_fraction",
    "batch_size",
    "median",
    "ratio",
    "time_once",
]

# A batch this long is well above perf_counter's resolution and the jitter
# of one Python call.
MIN_BATCH_S = 0.005
MAX_INNER = 1000


def time_once(call: Callable[[], object], clock: Callable[[], float]) -> float:
    """Seconds one call of ``call`` takes."""
    start = clock()
    call()
    return clock() - start


def batch_size(seconds: float, min_batch_s: float = MIN_BATCH_S) -> int:
    """Calls per timed batch for a call that takes ``seconds``.

    Examples
    --------
    >>> batch_size(0.5), batch_size(0.001), batch_size(0.0)
    (1, 5, 1000)
    """
    if seconds <= 0:
        return MAX_INNER
    return max(1, min(MAX_INNER, math.ceil(min_batch_s / seconds)))


def alternate(
    calls: Sequence[Callable[[], object]],
    repeats: int,
    inner: int | Sequence[int] = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> list[list[float]]:
    """Time ``calls`` in turn, ``repeats`` rounds, ``inner`` calls a batch.

    Parameters
    ----------
    calls : sequence of callable
        lsekit's call first, then its peers'; each already waits for its
        result to be computed.
    repeats : int
        Rounds; in each, every call is timed once, in order.
    inner : int or sequence of int
        Calls per timed batch: one count for all, or one per call.
    clock : callable
        The clock, `time.perf_counter` by default.

    Returns
    -------
    list of list of float
        For each call, the seconds per call of each round.

    Examples
    --------
    A clock that advances 1 s per reading, 2 readings per batch:

    >>> ticks = iter(range(100))
    >>> alternate([lambda: None] * 2, repeats=2, inner=4, clock=lambda: next(ticks))
    [[0.25, 0.25], [0.25, 0.25]]
    """
    counts = [inner] * len(calls) if isinstance(inner, int) else list(inner)
    if repeats < 1 or min(counts, default=1) < 1 or len(counts) != len(calls):
        raise ValueError(
            f"repeats ({repeats}) and inner ({inner}) must be >= 1, with one "
            f"inner count per call ({len(calls)})"
        )
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for call, n, out in zip(calls, counts, times, strict=True):
            start = clock()
            for _ in range(n):
                call()
            out.append((clock() - start) / n)
    return times


def median(times: Sequence[float]) -> float:
    """The median of ``times``.

    Examples
    --------
    >>> median([3.0, 1.0, 2.0]), median([4.0, 1.0, 2.0, 3.0])
    (2.0, 2.5)
    """
    return float(statistics.median(times))


def ratio(ours: float, peer: float) -> float:
    """lsekit's median time over the peer's (NaN if the peer's is 0).

    Examples
    --------
    >>> ratio(3.0, 2.0)
    1.5
    """
    return ours / peer if peer > 0 else math.nan


def bandwidth_fraction(
    ours_s: float, ours_bytes: int, copy_s: float, copy_bytes: int
) -> float:
    """lsekit's bytes per second over a device copy's.

    Examples
    --------
    Reading 1 GB in 0.5 s, against a copy moving 2 GB in 0.4 s:

    >>> bandwidth_fraction(0.5, 10**9, 0.4, 2 * 10**9)
    0.4
    """
    if ours_s <= 0 or copy_s <= 0 or copy_bytes <= 0:
        return math.nan
    return (ours_bytes / ours_s) / (copy_bytes / copy_s)
