"""Training steps on eager PyTorch or under ``jax.jit`` (CPU): lsekit's
against the library's own.

On PyTorch a step makes the float32 logits a leaf that requires a
gradient, calls the function and propagates a gradient of ones back
through it. Under ``jax.jit`` a step is one compiled function that pulls
a fixed random gradient of the output back to the logits (``jax.vjp``),
against ``jax.nn``'s functions and an optax-style loss. The forward call
alone is timed too. The sides alternate call by call, each going first in
turn, over many calls: at the seed's shape a step takes about a tenth of
a millisecond, and on a shared machine larger ones move by a third from
run to run, which the suite's few repeats (``python -m lsekit bench
--backend torch_train jax_train``) time less steadily::

    python benchmarks/training_steps.py [--backend torch|jax]
        [--shapes 64x600] [--calls 300]

One markdown table: median microseconds per forward call and per step of
each side, and lsekit's time over the peer's.
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


def _jax_functions() -> dict[str, tuple[Callable[..., Any], Callable[..., Any]]]:
    """Each function: lsekit's and JAX's, of logits and class indices."""
    import jax
    import jax.numpy as jnp

    import lsekit

    def optax_style(x: Any, y: Any) -> Any:
        logp = jax.nn.log_softmax(x, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))

    return {
        "logsumexp": (
            lambda x, y: lsekit.logsumexp(x, axis=-1),
            lambda x, y: jax.nn.logsumexp(x, axis=-1),
        ),
        "softmax": (
            lambda x, y: lsekit.softmax(x, axis=-1),
            lambda x, y: jax.nn.softmax(x, axis=-1),
        ),
        "log_softmax": (
            lambda x, y: lsekit.log_softmax(x, axis=-1),
            lambda x, y: jax.nn.log_softmax(x, axis=-1),
        ),
        "cross_entropy": (lsekit.cross_entropy, optax_style),
    }


def _forward(f: Callable[..., Any], x: Any, y: Any) -> Any:
    return f(x.detach().requires_grad_(True), y)


def _step(f: Callable[..., Any], x: Any, y: Any) -> Any:
    leaf = x.detach().requires_grad_(True)
    out = f(leaf, y)
    out.backward(sys.modules["torch"].ones_like(out))
    return leaf.grad


def _jax_sides(f: Callable[..., Any], x: Any, y: Any) -> list[Callable[[], Any]]:
    """The jitted forward call and training step of ``f``, each a call
    that waits for its result."""
    import jax

    forward = jax.jit(f)
    out = jax.eval_shape(f, x, y)
    g = jax.random.normal(jax.random.key(0), out.shape, out.dtype)

    @jax.jit  # type: ignore[untyped-decorator]
    def step(x: Any, y: Any, g: Any) -> Any:
        _, back = jax.vjp(lambda v: f(v, y), x)
        return back(g)[0]

    sides = [lambda: forward(x, y), lambda: step(x, y, g)]
    for side in sides:
        side().block_until_ready()
    return [lambda side=side: side().block_until_ready() for side in sides]


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
    parser.add_argument("--backend", choices=("torch", "jax"), default="torch")
    parser.add_argument("--shapes", default="64x600")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    import numpy as np

    rng = np.random.default_rng(0)
    if args.backend == "jax":
        import jax

        version = f"jax {jax.__version__} under jax.jit"
    else:
        import torch

        version = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    print(f"{version}, float32, {os.cpu_count()} CPUs, {platform.machine()}\n")
    print(
        "| shape | function | forward us | peer us | ratio "
        "| step us | peer us | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        rows, n = (int(v) for v in shape.split("x"))
        logits = rng.normal(0.0, 3.0, (rows, n)).astype(np.float32)
        labels = rng.integers(0, n, rows)
        if args.backend == "jax":
            x, y = jax.numpy.asarray(logits), jax.numpy.asarray(labels)
            functions = _jax_functions()
        else:
            x, y = torch.from_numpy(logits), torch.from_numpy(labels)
            functions = _functions()
        for name, pair in functions.items():
            if args.backend == "jax":
                (ours_fwd, ours_step), (peer_fwd, peer_step) = (
                    _jax_sides(f, x, y) for f in pair
                )
                sides = [ours_fwd, peer_fwd, ours_step, peer_step]
            else:
                sides = [
                    functools.partial(_forward, pair[0], x, y),
                    functools.partial(_forward, pair[1], x, y),
                    functools.partial(_step, pair[0], x, y),
                    functools.partial(_step, pair[1], x, y),
                ]
            ours_f, peer_f, ours_s, peer_s = _medians(sides, args.calls)
            print(
                f"| {shape} | {name} | {ours_f:.1f} | {peer_f:.1f} | "
                f"{ours_f / peer_f:.2f} | {ours_s:.1f} | {peer_s:.1f} | "
                f"{ours_s / peer_s:.2f} |"
            )


if __name__ == "__main__":
    main()
