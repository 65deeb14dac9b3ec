"""Eager JAX calls, outside ``jax.jit``, against ``jax.nn``'s, same run.

A user who calls lsekit on JAX arrays without ``jax.jit`` gets lsekit's
float32 kernels, and its standard-only path (float64 among others), each
compiled as one program, once per shape. Each call here takes a fresh
array of the same shape (CPU, all of them alive at once), as the batches of
a loop do::

    python benchmarks/jax_eager.py [--shape 64x600] [--dtype float32]
                                   [--calls 40] [--quick]

One markdown table: for each function, the first call's time (which
compiles), the median of the calls after it, the same for ``jax.nn``'s
function (and the optax-style loss), and the ratio of the medians. The
two alternate call by call. ``--quick``: 8 calls.
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

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _pairs() -> dict[str, tuple[Callable[..., Any], Callable[..., Any]]]:
    import jax

    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    import lsekit

    def optax_style(x: Any, y: Any) -> Any:
        logp = jax.nn.log_softmax(x, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    return {
        "logsumexp": (
            lambda x, y: lsekit.logsumexp(x, axis=1),
            lambda x, y: jax.nn.logsumexp(x, axis=1),
        ),
        "softmax": (
            lambda x, y: lsekit.softmax(x, axis=1),
            lambda x, y: jax.nn.softmax(x, axis=1),
        ),
        "log_softmax": (
            lambda x, y: lsekit.log_softmax(x, axis=1),
            lambda x, y: jax.nn.log_softmax(x, axis=1),
        ),
        "cross_entropy": (lambda x, y: lsekit.cross_entropy(x, y), optax_style),
    }


def _timed(f: Callable[..., Any], x: Any, y: Any) -> float:
    import jax

    start = time.perf_counter()
    jax.block_until_ready(f(x, y))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="64x600")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n, c = (int(v) for v in args.shape.split("x"))
    calls = 8 if args.quick else args.calls
    pairs = _pairs()
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    xs = [
        jnp.asarray(rng.normal(0.0, 3.0, (n, c)).astype(args.dtype))
        for _ in range(calls + 1)
    ]
    ys = [jnp.asarray(rng.integers(0, c, n)) for _ in range(calls + 1)]
    print(
        f"{n}x{c} {args.dtype}, a fresh array each call; {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}\n"
    )
    print(
        "| function | lsekit first (ms) | lsekit median (ms) | peer first (ms) "
        "| peer median (ms) | ratio of medians |"
    )
    print("|---|---|---|---|---|---|")
    for name, (ours, peer) in pairs.items():
        first = [_timed(f, xs[0], ys[0]) for f in (ours, peer)]
        times: list[list[float]] = [[], []]
        for x, y in zip(xs[1:], ys[1:], strict=True):
            for k, f in enumerate((ours, peer)):
                times[k].append(_timed(f, x, y))
        a, b = (statistics.median(t) for t in times)
        print(
            f"| {name} | {first[0] * 1e3:.1f} | {a * 1e3:.3f} | "
            f"{first[1] * 1e3:.1f} | {b * 1e3:.3f} | {a / b:.2f} |"
        )


if __name__ == "__main__":
    main()
