"""The C kernel's threads on eager PyTorch: its OpenMP team, or threads of
the kernel's own.

PyTorch's OpenMP threads wait for work between its operations, spinning
for a while first. lsekit's C kernel (``lsekit/_fast/_kernel.c``) runs its
rows on that team; threads of its own would compete with the spinning ones
for the cores. This times ``lsekit.logsumexp`` and ``lsekit.log_softmax``
(float32, the last axis) both ways, each call right after one of
PyTorch's (``F.log_softmax`` of the same input, untimed), as in a model's
forward pass, and alone, the sides alternated::

    python benchmarks/kernel_threads.py [--shape 512x8192] [--calls 30]

A markdown table: median milliseconds per call.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="512x8192")
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args(argv)
    import torch
    import torch.nn.functional as F

    import lsekit
    from lsekit._fast import _fused
    from lsekit._fast import torch as kernels

    rows, n = (int(v) for v in args.shape.split("x"))
    x = torch.asarray(np.random.default_rng(0).normal(0.0, 3.0, (rows, n)))
    x = x.to(torch.float32)
    if _fused._load() is None:
        raise SystemExit("lsekit's C kernel was not built")
    team = kernels.threads
    own = lambda: (torch.get_num_threads(), None)  # noqa: E731
    functions = {
        "logsumexp": lambda: lsekit.logsumexp(x, axis=-1),
        "log_softmax": lambda: lsekit.log_softmax(x, axis=-1),
    }
    sides = {
        ("team", True): team,
        ("own threads", True): own,
        ("team", False): team,
        ("own threads", False): own,
    }
    print(
        f"{args.shape} float32, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"{platform.machine()}\n"
    )
    print("| function | threads | after F.log_softmax ms | alone ms |")
    print("|---|---|---|---|")
    for name, f in functions.items():
        times: dict[tuple[str, bool], list[float]] = {k: [] for k in sides}
        for _ in range(args.calls + 1):
            for (label, after), threads in sides.items():
                kernels.threads = threads
                if after:
                    F.log_softmax(x, dim=-1)
                start = time.perf_counter()
                f()
                times[(label, after)].append(time.perf_counter() - start)
        kernels.threads = team
        for label in ("team", "own threads"):
            after, alone = (
                statistics.median(times[(label, a)][1:]) * 1e3 for a in (True, False)
            )
            print(f"| {name} | {label} | {after:.3f} | {alone:.3f} |")


if __name__ == "__main__":
    main()
