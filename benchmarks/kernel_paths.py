"""The C kernel's vector paths, eager NumPy or PyTorch, against the peer.

lsekit's C kernel (``lsekit/_fast/_kernel.c``) picks its widest vector
path at run time: AVX-512 (eight float64 lanes, the scaling by ``2**k`` in
one instruction), AVX2 and FMA (four lanes), or scalar code. This times
every function (float32, the last axis reduced) through each path the CPU
has, and the library's own function (SciPy's on NumPy, PyTorch's), the
sides alternated call by call, each going first in turn::

    python benchmarks/kernel_paths.py [--backend torch] [--shapes 512x8192]
        [--calls 20]

One markdown table: median milliseconds per call of each path and of the
peer, and each path's time over the peer's.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

# The kernel's ``vector`` levels.
PATHS = {"AVX-512": 2, "AVX2": 1, "scalar": 0}


def _functions(backend: str) -> tuple[Callable[[np.ndarray], Any], dict[str, Any]]:
    """The input's conversion, and each function: lsekit's and the peer's."""
    import lsekit

    ours = {
        "logsumexp": lambda x, y: lsekit.logsumexp(x, axis=-1),
        "softmax": lambda x, y: lsekit.softmax(x, axis=-1),
        "log_softmax": lambda x, y: lsekit.log_softmax(x, axis=-1),
        "cross_entropy": lsekit.cross_entropy,
    }
    if backend == "numpy":
        from scipy import special

        def loss(x: np.ndarray, y: np.ndarray) -> Any:
            logp = special.log_softmax(x, axis=-1)
            return -np.mean(np.take_along_axis(logp, y[:, None], axis=-1))

        peers = {
            "logsumexp": lambda x, y: special.logsumexp(x, axis=-1),
            "softmax": lambda x, y: special.softmax(x, axis=-1),
            "log_softmax": lambda x, y: special.log_softmax(x, axis=-1),
            "cross_entropy": loss,
        }
        convert: Callable[[np.ndarray], Any] = np.asarray
    else:
        import torch

        f = torch.nn.functional
        peers = {
            "logsumexp": lambda x, y: torch.logsumexp(x, -1),
            "softmax": lambda x, y: f.softmax(x, -1),
            "log_softmax": lambda x, y: f.log_softmax(x, -1),
            "cross_entropy": f.cross_entropy,
        }
        convert = torch.from_numpy
    return convert, {name: (ours[name], peers[name]) for name in ours}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("numpy", "torch"), default="torch")
    parser.add_argument("--shapes", default="64x600,512x8192,128x32000")
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args(argv)
    from lsekit._fast import _fused

    kernel = _fused._load()
    if kernel is None:
        raise SystemExit("lsekit's C kernel was not built")
    paths = {}
    for label, level in PATHS.items():
        if kernel.vector(level) == level:
            paths[label] = level
    kernel.vector(max(PATHS.values()))
    convert, functions = _functions(args.backend)
    rng = np.random.default_rng(0)
    print(
        f"{args.backend}, float32, {os.cpu_count()} CPUs, {platform.machine()}; "
        f"paths: {', '.join(paths)}\n"
    )
    head = " | ".join(f"{p} ms" for p in paths)
    ratios = " | ".join(f"{p} / peer" for p in paths)
    print(f"| shape | function | {head} | peer ms | {ratios} |")
    print("|---|---|" + "---|" * (2 * len(paths) + 1))
    for shape in args.shapes.split(","):
        rows, n = (int(v) for v in shape.split("x"))
        x = convert(rng.normal(0.0, 3.0, (rows, n)).astype(np.float32))
        y = convert(rng.integers(0, n, rows))
        for name, (ours, peer) in functions.items():
            sides = [*paths, "peer"]
            times: dict[str, list[float]] = {k: [] for k in sides}
            for call in range(len(sides) * (args.calls + 1)):
                # Each side in turn goes first: a call can leave the next
                # one caches, threads or memory to page in.
                side = sides[(call + call // len(sides)) % len(sides)]
                if side != "peer":
                    kernel.vector(paths[side])
                start = time.perf_counter()
                (peer if side == "peer" else ours)(x, y)
                times[side].append(time.perf_counter() - start)
            kernel.vector(max(PATHS.values()))
            ms = {k: statistics.median(v[1:]) * 1e3 for k, v in times.items()}
            cells = " | ".join(f"{ms[p]:.3f}" for p in paths)
            shares = " | ".join(f"{ms[p] / ms['peer']:.2f}" for p in paths)
            print(f"| {shape} | {name} | {cells} | {ms['peer']:.3f} | {shares} |")


if __name__ == "__main__":
    main()
