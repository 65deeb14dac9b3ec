"""lsekit against each library's own functions, timed in the same run.

A first look at speed, not the full benchmark suite::

    python benchmarks/timing.py [--rows 1000] [--cols 10000] [--repeats 7]

Runs alternate lsekit and the peer on the same input and report the median
of the repeats; the ratio is lsekit's time over the peer's.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np

import lsekit


def _median_pair(
    ours: Callable[[], Any], peer: Callable[[], Any], repeats: int
) -> tuple[float, float]:
    ours()
    peer()
    t_ours, t_peer = [], []
    for _ in range(repeats):
        for fn, times in ((ours, t_ours), (peer, t_peer)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(t_ours), statistics.median(t_peer)


def _max_shift_cross_entropy(x: np.ndarray, y: np.ndarray) -> Any:
    m = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]
    return np.mean(lse - np.take_along_axis(x, y[:, None], axis=1)[:, 0])


def _cases(
    x64: np.ndarray,
) -> list[tuple[str, str, Callable[[], Any], Callable[[], Any]]]:
    from scipy import special

    y = np.random.default_rng(1).integers(0, x64.shape[1], size=x64.shape[0])
    cases = []
    for dtype in ("float32", "float64"):
        x = x64.astype(dtype)
        cases += [
            (
                "numpy vs scipy.special",
                f"logsumexp {dtype}",
                lambda x=x: lsekit.logsumexp(x, axis=1),
                lambda x=x: special.logsumexp(x, axis=1),
            ),
            (
                "numpy vs scipy.special",
                f"log_softmax {dtype}",
                lambda x=x: lsekit.log_softmax(x, axis=1),
                lambda x=x: special.log_softmax(x, axis=1),
            ),
            (
                "numpy vs max-shift by hand",
                f"cross_entropy {dtype}",
                lambda x=x: lsekit.cross_entropy(x, y),
                lambda x=x: _max_shift_cross_entropy(x, y),
            ),
        ]
    try:
        import torch
    except ImportError:
        return cases
    ty = torch.asarray(y)
    for dtype in ("float32", "float64"):
        t = torch.asarray(x64.astype(dtype))
        cases += [
            (
                "torch vs torch",
                f"logsumexp {dtype}",
                lambda t=t: lsekit.logsumexp(t, axis=1),
                lambda t=t: torch.logsumexp(t, 1),
            ),
            (
                "torch vs torch",
                f"log_softmax {dtype}",
                lambda t=t: lsekit.log_softmax(t, axis=1),
                lambda t=t: torch.log_softmax(t, 1),
            ),
            (
                "torch vs torch",
                f"cross_entropy {dtype}",
                lambda t=t: lsekit.cross_entropy(t, ty),
                lambda t=t: torch.nn.functional.cross_entropy(t, ty),
            ),
        ]
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--cols", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    x = np.random.default_rng(0).normal(scale=5.0, size=(args.rows, args.cols))
    print(f"shape ({args.rows}, {args.cols}), median of {args.repeats}")
    print("| backend | function | lsekit ms | peer ms | ratio |")
    print("|---|---|---|---|---|")
    for backend, what, ours, peer in _cases(x):
        t_ours, t_peer = _median_pair(ours, peer, args.repeats)
        print(
            f"| {backend} | {what} | {1e3 * t_ours:.1f} | {1e3 * t_peer:.1f} "
            f"| {t_ours / t_peer:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
