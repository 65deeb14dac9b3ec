"""Training steps on eager PyTorch (CPU): lsekit's against PyTorch's own.

A step makes the float32 logits a leaf that requires a gradient, calls the
function and propagates a gradient of ones back through it; the forward
call alone is timed too. The sides alternate call by call, each going
first in turn, over many calls: at the seed's shape a step takes about a
tenth of a millisecond, which the suite's few repeats
(``python -m lsekit bench --backend torch_train``) time less steadily::

    python benchmarks/training_steps.py [--shapes 64x600] [--calls 300]

One markdown table: median microseconds per forward call and per step of
each side, and lsekit's time over PyTorch's.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def _functions() -> dict[str, tuple[Callable[..., Any], Callable[..., Any]]]:
    """Each function: lsekit's and PyTorch's, of logits and class indices."""
    import torch

    import lsekit

    f = torch.nn.functional
    return {
        "logsumexp": (
            lambda x, y: lsekit.logsumexp(x, axis=-1),
            lambda x, y: torch.logsumexp(x, -1),
        ),
        "softmax": (
            lambda x, y: lsekit.softmax(x, axis=-1),
            lambda x, y: f.softmax(x, -1),
        ),
        "log_softmax": (
            lambda x, y: lsekit.log_softmax(x, axis=-1),
            lambda x, y: f.log_softmax(x, -1),
        ),
        "cross_entropy": (lsekit.cross_entropy, f.cross_entropy),
    }


def _forward(f: Callable[..., Any], x: Any, y: Any) -> Any:
    return f(x.detach().requires_grad_(True), y)


def _step(f: Callable[..., Any], x: Any, y: Any) -> Any:
    leaf = x.detach().requires_grad_(True)
    out = f(leaf, y)
    out.backward(sys.modules["torch"].ones_like(out))
    return leaf.grad


def _medians(sides: list[Callable[[], Any]], calls: int) -> list[float]:
    """Each side's median time of a call, in microseconds, the sides
    alternated and each going first in turn (the first round discarded)."""
    times: list[list[float]] = [[] for _ in sides]
    for call in range(len(sides) * (calls + 1)):
        k = (call + call // len(sides)) % len(sides)
        start = time.perf_counter()
        sides[k]()
        times[k].append(time.perf_counter() - start)
    return [statistics.median(t[1:]) * 1e6 for t in times]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="64x600")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
        f"{os.cpu_count()} CPUs, {platform.machine()}\n"
    )
    print(
        "| shape | function | forward us | peer us | ratio "
        "| step us | peer us | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        rows, n = (int(v) for v in shape.split("x"))
        x = torch.from_numpy(rng.normal(0.0, 3.0, (rows, n)).astype(np.float32))
        y = torch.from_numpy(rng.integers(0, n, rows))
        for name, pair in _functions().items():
            ours_f, peer_f, ours_s, peer_s = _medians(
                [
                    functools.partial(_forward, pair[0], x, y),
                    functools.partial(_forward, pair[1], x, y),
                    functools.partial(_step, pair[0], x, y),
                    functools.partial(_step, pair[1], x, y),
                ],
                args.calls,
            )
            print(
                f"| {shape} | {name} | {ours_f:.1f} | {peer_f:.1f} | "
                f"{ours_f / peer_f:.2f} | {ours_s:.1f} | {peer_s:.1f} | "
                f"{ours_s / peer_s:.2f} |"
            )


if __name__ == "__main__":
    main()
