"""JAX under ``jax.jit``: lsekit against ``jax.nn`` and an optax-style loss.

Both sides of every case are wrapped in ``jax.jit`` and called once before
timing, which compiles them; every timed call waits on
``block_until_ready``. JAX has no cross-entropy of integer labels: the
peer is the one optax and most JAX code write,
``-mean(take_along_axis(log_softmax(logits), labels))``.

lsekit runs with ``jax_enable_x64``, as the demo does: without it JAX
turns every float64 request into float32, and lsekit could not compute
float32 input in float64. The inputs are float32 all the same. The matrix
product runs up to size `MATMUL_LIMIT` only.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from . import maxshift, suite
from .case import Case
from .sizes import Sizes

__all__ = ["NAME", "available", "cases", "versions"]

NAME = "jax"
# XLA takes longer to compile lsekit's logmatmulexp the larger the operands
# (6 s at 256 on a 2-core CPU, past 4 minutes at 1024): larger sizes would
# hold a full run up for hours.
MATMUL_LIMIT = 256


def _import(name: str) -> Any:
    # Typed as Any: jax's annotations vary between versions.
    return importlib.import_module(name)


def available() -> str | None:
    """Why the backend cannot run here, or None if it can."""
    try:
        _import("jax")
    except ImportError as exc:
        return f"jax is not installed ({exc})"
    return None


def versions() -> dict[str, str]:
    """The versions of the libraries timed, and JAX's default device."""
    jax = _import("jax")
    return {"jax": f"{jax.__version__} ({jax.devices()[0].platform})"}


@functools.cache
def _library() -> suite.Library:
    jax = _import("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = _import("jax.numpy")
    nn = jax.nn

    def optax_style(x: Any, y: Any) -> Any:
        logp = nn.log_softmax(x, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))

    return suite.Library(
        asarray=jnp.asarray,
        own={
            "logsumexp": ("jax.nn.logsumexp", lambda x: nn.logsumexp(x, axis=-1)),
            "softmax": ("jax.nn.softmax", lambda x: nn.softmax(x, axis=-1)),
            "log_softmax": (
                "jax.nn.log_softmax",
                lambda x: nn.log_softmax(x, axis=-1),
            ),
            "cross_entropy": ("optax-style (jax.nn.log_softmax)", optax_style),
        },
        by_hand={
            f: functools.partial(getattr(maxshift, f), jnp) for f in suite.FUNCTIONS
        },
        wrap=jax.jit,
        sync=lambda r: r.block_until_ready(),
    )


def cases(sizes: Sizes) -> list[Case]:
    """The jitted JAX cases of a run of ``sizes``, the matrix product to 256."""
    matmul = [n for n in sizes.matmul if n <= MATMUL_LIMIT]
    return suite.cases(NAME, sizes, _library, matmul=matmul)
