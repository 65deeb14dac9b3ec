"""Peak memory of one call, traced by tracemalloc.

NumPy reports its array allocations to tracemalloc, so on NumPy the peak
traced during a call is the memory it needed beyond its input. Other
libraries allocate outside its view.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

__all__ = ["peak"]


def peak(fn: Callable[[], object], *, warm_up: bool = True) -> int:
    """Bytes allocated at the peak of one call of ``fn``.

    Parameters
    ----------
    fn : callable
        The call to measure.
    warm_up : bool
        Call ``fn`` once, untraced, first, so that caches filled on a first
        call are not counted.

    Returns
    -------
    int
        The traced peak, less what was traced before the call.

    Examples
    --------
    >>> import numpy as np
    >>> peak(lambda: np.ones(1_000_000)) >= 8_000_000
    True
    """
    if warm_up:
        fn()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return max(0, tracemalloc.get_traced_memory()[1] - base)
    finally:
        if not tracing:
            tracemalloc.stop()
