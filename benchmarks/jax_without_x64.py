"""float32 ``logsumexp``, ``softmax``, ``log_softmax`` and ``cross_entropy``
under ``jax.jit`` without JAX's x64 mode, against ``jax.nn``'s (and an
optax-style integer-label loss).

lsekit's traced kernels sum in float64, which JAX offers only in x64 mode;
without it, float32 on the CPU calls lsekit's C kernel as an XLA custom
call (``lsekit/_fast/_kernel.c``), summing in float64 of its own, and
takes the standard-only path elsewhere. This times both (the kernel, and
the standard-only path with the kernel switched off) against the peers,
all compiled first, then alternated call by call::

    python benchmarks/jax_without_x64.py [--shape 512x8192] [--calls 20]

A markdown table: median milliseconds per call, and the ratios to
``jax.nn``'s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any

import numpy as np


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="512x8192")
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_enable_x64", False)
    import jax.numpy as jnp

    import lsekit
    from lsekit._fast import _fused

    if _fused._load() is None:
        raise SystemExit("lsekit's C kernel was not built")
    rows, n = (int(v) for v in args.shape.split("x"))
    x = np.random.default_rng(0).normal(0.0, 3.0, (rows, n)).astype(np.float32)
    v = jnp.asarray(x)
    y = jnp.asarray(np.random.default_rng(1).integers(0, n, rows).astype(np.int32))

    def optax_style(a: Any) -> Any:
        logp = jax.nn.log_softmax(a, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))

    functions = {
        "logsumexp": (
            lambda a: lsekit.logsumexp(a, axis=-1),
            lambda a: jax.nn.logsumexp(a, axis=-1),
        ),
        "softmax": (
            lambda a: lsekit.softmax(a, axis=-1),
            lambda a: jax.nn.softmax(a, axis=-1),
        ),
        "log_softmax": (
            lambda a: lsekit.log_softmax(a, axis=-1),
            lambda a: jax.nn.log_softmax(a, axis=-1),
        ),
        "cross_entropy": (lambda a: lsekit.cross_entropy(a, y), optax_style),
    }
    print(
        f"{args.shape} float32, x64 mode off, jax {jax.__version__} "
        f"({jax.default_backend()}), {os.cpu_count()} CPUs, {platform.machine()}\n"
    )
    print(
        "| function | lsekit ms | without the C kernel ms | jax.nn ms "
        "| ratio | ratio without the kernel |"
    )
    print("|---|---|---|---|---|---|")
    for name, (ours, theirs) in functions.items():
        # One compiled function per side: the kernel's switch is read when
        # a function is traced.
        sides = {}
        for label, on in (("kernel", True), ("standard", False)):
            _fused.ENABLED = on
            # A new function each: jit's cache is keyed on it.
            sides[label] = jax.jit(lambda a, f=ours: f(a))
            sides[label](v).block_until_ready()
        _fused.ENABLED = True
        sides["peer"] = jax.jit(theirs)
        sides["peer"](v).block_until_ready()
        times: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(args.calls):
            for label, f in sides.items():
                start = time.perf_counter()
                f(v).block_until_ready()
                times[label].append(time.perf_counter() - start)
        kernel, standard, peer = (
            statistics.median(times[k]) * 1e3 for k in ("kernel", "standard", "peer")
        )
        print(
            f"| {name} | {kernel:.3f} | {standard:.3f} | {peer:.3f} "
            f"| {kernel / peer:.2f} | {standard / peer:.2f} |"
        )


if __name__ == "__main__":
    main()
