"""Small float32 arrays, eager NumPy and PyTorch, against the library's own.

A hidden Markov model's forward pass calls ``logsumexp`` on its states'
array once per step; a short sequence's logits are a few thousand
entries. There each call's fixed costs are the whole call. This times
every function on such arrays (float32, the last axis reduced) against
SciPy's (NumPy) and PyTorch's own, and against lsekit without its C
kernel (``lsekit._fast._fused``, where it was built), whose float64
kernels for small arrays then take them::

    python benchmarks/small_arrays.py [--backend numpy torch] [--calls 2000]

One markdown table per backend: median microseconds per call of lsekit,
of lsekit without its C kernel and of the peer, the three alternated call
by call, and lsekit's ratio to each.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

SHAPES = ((8, 8), (16, 64), (32, 128), (64, 64))


def _numpy() -> tuple[Callable[[np.ndarray], Any], dict[str, Any]]:
    from scipy import special

    def loss(x: np.ndarray, y: np.ndarray) -> Any:
        logp = special.log_softmax(x, axis=1)
        return -np.mean(np.take_along_axis(logp, y[:, None], axis=1))

    return (lambda a: a), {
        "logsumexp": lambda x, y: special.logsumexp(x, axis=1),
        "softmax": lambda x, y: special.softmax(x, axis=1),
        "log_softmax": lambda x, y: special.log_softmax(x, axis=1),
        "cross_entropy": loss,
    }


def _torch() -> tuple[Callable[[np.ndarray], Any], dict[str, Any]]:
    import torch

    f = torch.nn.functional
    return torch.from_numpy, {
        "logsumexp": lambda x, y: torch.logsumexp(x, 1),
        "softmax": lambda x, y: f.softmax(x, 1),
        "log_softmax": lambda x, y: f.log_softmax(x, 1),
        "cross_entropy": f.cross_entropy,
    }


PEERS = {
    "numpy": ("scipy.special", _numpy),
    "torch": ("torch", _torch),
}


def _ours() -> dict[str, Any]:
    import lsekit

    return {
        "logsumexp": lambda x, y: lsekit.logsumexp(x, axis=1),
        "softmax": lambda x, y: lsekit.softmax(x, axis=1),
        "log_softmax": lambda x, y: lsekit.log_softmax(x, axis=1),
        "cross_entropy": lsekit.cross_entropy,
    }


def _median_us(times: list[float]) -> float:
    return statistics.median(times) * 1e6


def run(backend: str, calls: int) -> None:
    title, make = PEERS[backend]
    convert, peers = make()
    ours = _ours()
    fused = importlib.import_module("lsekit._fast._fused")
    print(f"\n{backend}: lsekit, lsekit without its C kernel and {title}\n")
    print(
        "| function | shape | lsekit us | no C kernel us | peer us "
        "| ratio to peer | ratio to no C kernel |"
    )
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for rows, n in SHAPES:
        x = convert(rng.normal(0.0, 3.0, (rows, n)).astype(np.float32))
        y = convert(rng.integers(0, n, rows))
        for name, peer in peers.items():
            sides = {
                "lsekit": (ours[name], True),
                "no C kernel": (ours[name], False),
                "peer": (peer, True),
            }
            times: dict[str, list[float]] = {k: [] for k in sides}
            for f, kernel in sides.values():
                fused.ENABLED = kernel
                f(x, y)
            for _ in range(calls):
                for k, (f, kernel) in sides.items():
                    fused.ENABLED = kernel
                    start = time.perf_counter()
                    f(x, y)
                    times[k].append(time.perf_counter() - start)
            fused.ENABLED = True
            a, b, c = (_median_us(times[k]) for k in sides)
            print(
                f"| {name} | {rows}x{n} | {a:.1f} | {b:.1f} | {c:.1f} "
                f"| {a / c:.2f} | {a / b:.2f} |",
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend", nargs="+", choices=list(PEERS), default=list(PEERS)
    )
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    for backend in args.backend:
        run(backend, args.calls)


if __name__ == "__main__":
    main()
