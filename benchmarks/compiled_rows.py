"""Compiled calls on rows near the limits of the fast kernels' certificates,
against the library's own functions, same run.

Under ``jax.jit`` and ``torch.compile`` a batch takes lsekit's fast kernel
where the kernel certifies every row, its float64 terms where those
certify every row it left (``logsumexp`` alone), and the standard-only
path otherwise (see ``docs/accuracy.md``). These inputs probe that, each
of about as many entries as ``--shape`` (float32, CPU)::

    python benchmarks/compiled_rows.py [--shape 512x8192] [--repeats 7]
        [--backend torch_compile jax] [--inputs logits near-zero ...]
        [--quick]

- ``logits``: normal, scale 3, as ``python -m lsekit bench`` times;
- ``near-zero``: the same shifted so that each row's log-sum-exp lies in
  ``[-1, 1]``, where float32 terms are too coarse for ``logsumexp``;
- ``log-probabilities``: each row less its log-sum-exp, which is then
  about ``1e-7``: too near 0 for float64 terms too;
- ``ten-classes``: rows of 10, normal, scale 2;
- ``causal``: a square causal mask of ``-inf``, whose first row keeps one
  entry.

One markdown table: lsekit's median time, the library's own function's,
and their ratio, the protocol of ``lsekit._bench.timing`` (a warm-up
call of each, which compiles it, then the two alternated). ``--quick``:
64x600, 3 repeats.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import platform
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import numpy as np
from masked_logits import (
    FUNCTIONS,
    add_options,
    jax_pairs,
    medians,
    sizes,
    torch_pairs,
    waited,
)

from lsekit._bench import timing

BACKENDS = ("torch_compile", "jax")
INPUTS = ("logits", "near-zero", "log-probabilities", "ten-classes", "causal")


def _lse(x: np.ndarray) -> np.ndarray:
    """Each row's log-sum-exp in float64, as a column."""
    m = x.max(axis=1, keepdims=True).astype(np.float64)
    return m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def _input(name: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The float32 rows of ``name`` of about ``shape``'s size, and a class
    index per row among its finite entries."""
    rng = np.random.default_rng(0)
    size = shape[0] * shape[1]
    if name == "ten-classes":
        x = rng.standard_normal((size // 10, 10)) * 2.0
    elif name == "causal":
        side = math.isqrt(size)
        x = rng.standard_normal((side, side)) * 3.0
        x = np.where(np.tril(np.ones((side, side), dtype=bool)), x, -np.inf)
    else:
        x = rng.standard_normal(shape) * 3.0
        if name == "near-zero":
            x = x - _lse(x) + rng.uniform(-1.0, 1.0, (shape[0], 1))
        elif name == "log-probabilities":
            x = x - _lse(x)
    x = x.astype(np.float32)
    return x, np.argmax(x, axis=1)


def _rows(backend: str, shape: tuple[int, int], inputs: list[str], repeats: int):
    if backend == "jax":
        convert, pairs, wait = jax_pairs()
    else:
        convert, pairs, wait = torch_pairs(compiled=True)
    for name in inputs:
        x, y = (convert(a) for a in _input(name, shape))
        for function, (ours, peer) in pairs.items():
            a, b = medians(
                [waited(wait, ours, x, y), waited(wait, peer, x, y)], repeats
            )
            rows, cols = x.shape
            yield (
                f"| {backend} | {name} ({rows}x{cols}) | {function} | "
                f"{a * 1e3:.3f} | {b * 1e3:.3f} | {timing.ratio(a, b):.2f} |"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(parser, BACKENDS)
    parser.add_argument("--inputs", nargs="+", choices=INPUTS, default=INPUTS)
    args = parser.parse_args(argv)
    (n, c), repeats = sizes(args)
    print(
        f"about {n}x{c} float32 entries per input; {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}; {repeats} repeats; "
        f"functions: {', '.join(FUNCTIONS)}\n"
    )
    print("| backend | input | function | lsekit ms | library ms | ratio |")
    print("|---|---|---|---|---|---|")
    for backend in args.backend:
        for row in _rows(backend, (n, c), args.inputs, repeats):
            print(row, flush=True)


if __name__ == "__main__":
    main()
