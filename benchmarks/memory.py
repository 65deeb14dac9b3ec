"""Peak extra memory on NumPy, as a multiple of the input's bytes.

NumPy reports its allocations to tracemalloc, so the peak traced during one
call is the memory the call needed beyond its input::

    python benchmarks/memory.py [--rows 1000] [--cols 10000]

Each lsekit function is set next to its peer: SciPy's, or for the
cross-entropy a hand-written max-shift version (SciPy has none).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np
from scipy import special

import lsekit


def peak(fn: Callable[[], Any]) -> int:
    """Bytes allocated at the peak of one call (after a warm-up call)."""
    fn()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _max_shift_cross_entropy(x: np.ndarray, y: np.ndarray) -> Any:
    m = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]
    return np.mean(lse - np.take_along_axis(x, y[:, None], axis=1)[:, 0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--cols", type=int, default=10000)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x64 = rng.normal(scale=5.0, size=(args.rows, args.cols))
    y = rng.integers(0, args.cols, size=args.rows)
    print(f"shape ({args.rows}, {args.cols}); peak extra memory / input bytes")
    print("| function | dtype | lsekit | peer | peer is |")
    print("|---|---|---|---|---|")
    for dtype in ("float32", "float64"):
        x = x64.astype(dtype)
        cases = [
            (
                "logsumexp",
                lambda x=x: lsekit.logsumexp(x, axis=1),
                lambda x=x: special.logsumexp(x, axis=1),
                "scipy.special",
            ),
            (
                "log_softmax",
                lambda x=x: lsekit.log_softmax(x, axis=1),
                lambda x=x: special.log_softmax(x, axis=1),
                "scipy.special",
            ),
            (
                "cross_entropy",
                lambda x=x: lsekit.cross_entropy(x, y),
                lambda x=x: _max_shift_cross_entropy(x, y),
                "max-shift by hand",
            ),
        ]
        for name, ours, theirs, who in cases:
            a, b = peak(ours) / x.nbytes, peak(theirs) / x.nbytes
            print(f"| {name} | {dtype} | {a:.2f} | {b:.2f} | {who} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
