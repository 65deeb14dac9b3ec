"""Logits masked with ``-inf``, as attention masks and restricted
vocabularies make them, against the library's own functions, same run.

``python -m lsekit bench`` times finite logits. Here a causal mask sets
``-inf`` above each row's diagonal (row ``i`` of ``N`` keeps its first
``(i + 1) C / N`` entries, about half of them in all), on eager PyTorch,
under ``torch.compile`` and under ``jax.jit`` (float32, CPU)::

    python benchmarks/masked_logits.py [--shape 512x8192] [--repeats 7]
        [--backend torch torch_compile jax] [--quick]

One markdown table: for each backend and function, lsekit's median time
on the masked logits and on the same logits unmasked, the library's own
function's on the masked ones, and the ratio of lsekit's to it. Runs
alternate the three calls on their inputs, after one warm-up call of each
(which compiles them), and report the median of the repeats (the protocol
of ``lsekit._bench.timing``). ``--quick``: 64x600, 3 repeats.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np

import lsekit
from lsekit._bench import timing

FUNCTIONS = ("logsumexp", "softmax", "log_softmax", "cross_entropy")
BACKENDS = ("torch", "torch_compile", "jax")
# lsekit's side, the same on every backend.
OURS = {
    "logsumexp": lambda x, y: lsekit.logsumexp(x, axis=1),
    "softmax": lambda x, y: lsekit.softmax(x, axis=1),
    "log_softmax": lambda x, y: lsekit.log_softmax(x, axis=1),
    "cross_entropy": lambda x, y: lsekit.cross_entropy(x, y),
}


def _logits(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite float32 logits, the same with a causal mask of ``-inf``, and
    class indices among each row's kept entries."""
    rng = np.random.default_rng(0)
    n, c = shape
    x = (rng.standard_normal(shape) * 3.0).astype(np.float32)
    kept = (np.arange(1, n + 1) * c + n - 1) // n
    masked = np.where(np.arange(c)[None, :] < kept[:, None], x, -np.inf)
    y = (rng.random(n) * kept).astype(np.int64)
    return x, masked.astype(np.float32), y


def torch_pairs(compiled: bool) -> tuple[Callable[..., Any], dict[str, Any], Any]:
    import torch
    import torch.nn.functional as F

    peers = {
        "logsumexp": lambda x, y: torch.logsumexp(x, 1),
        "softmax": lambda x, y: F.softmax(x, 1),
        "log_softmax": lambda x, y: F.log_softmax(x, 1),
        "cross_entropy": lambda x, y: F.cross_entropy(x, y),
    }
    pairs = {k: (OURS[k], peers[k]) for k in FUNCTIONS}
    if compiled:
        pairs = {
            k: tuple(torch.compile(f, dynamic=False) for f in pair)
            for k, pair in pairs.items()
        }
    return torch.from_numpy, pairs, lambda out: out


def jax_pairs() -> tuple[Callable[..., Any], dict[str, Any], Any]:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    def optax_style(x: Any, y: Any) -> Any:
        logp = jax.nn.log_softmax(x, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    peers = {
        "logsumexp": lambda x, y: jax.nn.logsumexp(x, axis=1),
        "softmax": lambda x, y: jax.nn.softmax(x, axis=1),
        "log_softmax": lambda x, y: jax.nn.log_softmax(x, axis=1),
        "cross_entropy": optax_style,
    }
    pairs = {k: (jax.jit(OURS[k]), jax.jit(peers[k])) for k in FUNCTIONS}
    return jnp.asarray, pairs, jax.block_until_ready


def waited(wait: Any, f: Any, x: Any, y: Any) -> Callable[[], Any]:
    """``f(x, y)``, waited for."""
    return lambda: wait(f(x, y))


def medians(calls: list[Callable[[], Any]], repeats: int) -> list[float]:
    """Each call's median time, in seconds: a warm-up call of each (which
    compiles it), then the calls alternated over ``repeats``."""
    for call in calls:
        call()
    first = [timing.time_once(call, time.perf_counter) for call in calls]
    inner = [timing.batch_size(s) for s in first]
    return [timing.median(t) for t in timing.alternate(calls, repeats, inner)]


def add_options(parser: argparse.ArgumentParser, backends: tuple[str, ...]) -> None:
    """``--shape``, ``--repeats``, ``--backend`` among ``backends`` and
    ``--quick``, for ``sizes``."""
    parser.add_argument("--shape", default="512x8192")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--backend", nargs="+", choices=backends, default=backends)
    parser.add_argument("--quick", action="store_true")


def sizes(args: argparse.Namespace) -> tuple[tuple[int, int], int]:
    """The shape and the number of repeats the options ask for."""
    if args.quick:
        return (64, 600), 3
    n, c = (int(v) for v in args.shape.split("x"))
    return (n, c), args.repeats


def _rows(backend: str, shape: tuple[int, int], repeats: int) -> list[str]:
    if backend == "jax":
        convert, pairs, wait = jax_pairs()
    else:
        convert, pairs, wait = torch_pairs(backend == "torch_compile")
    x, masked, y = (convert(a) for a in _logits(shape))
    rows = []
    for name, (ours, peer) in pairs.items():
        calls = [
            waited(wait, ours, masked, y),
            waited(wait, ours, x, y),
            waited(wait, peer, masked, y),
        ]
        a, b, c = medians(calls, repeats)
        rows.append(
            f"| {backend} | {name} | {a * 1e3:.3f} | {b * 1e3:.3f} | "
            f"{c * 1e3:.3f} | {timing.ratio(a, c):.2f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(parser, BACKENDS)
    args = parser.parse_args(argv)
    (n, c), repeats = sizes(args)
    print(
        f"{n}x{c} float32, a causal mask of -inf; {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}; {repeats} repeats\n"
    )
    print(
        "| backend | function | lsekit masked ms | lsekit unmasked ms "
        "| library masked ms | ratio |"
    )
    print("|---|---|---|---|---|---|")
    for backend in args.backend:
        for row in _rows(backend, (n, c), repeats):
            print(row, flush=True)


if __name__ == "__main__":
    main()
