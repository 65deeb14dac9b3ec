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


def _training(f: Any) -> Any:
    """``f`` as a training step under ``jax.jit``: a fixed random gradient
    of its output (one per shape, made on the first call) pulled back to
    its first argument, whose gradient is the result."""
    jax = _import("jax")
    grads: dict[tuple[Any, ...], Any] = {}

    @jax.jit  # type: ignore[untyped-decorator]
    def pull(x: Any, g: Any, *rest: Any) -> Any:
        _, back = jax.vjp(lambda x: f(x, *rest), x)
        return back(g)[0]

    def step(x: Any, *rest: Any) -> Any:
        key = (x.shape, x.dtype, *(r.shape for r in rest))
        if key not in grads:
            out = jax.eval_shape(lambda x: f(x, *rest), x)
            seeded = jax.random.key(0)
            grads[key] = jax.random.normal(seeded, out.shape, out.dtype)
        return pull(x, grads[key], *rest)

    return step


@functools.cache
def _library(trained: bool = False) -> suite.Library:
    """The JAX `Library`: calls under ``jax.jit``, or (``trained``)
    training steps, forward and backward."""
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
        wrap=_training if trained else jax.jit,
        sync=lambda r: r.block_until_ready(),
    )


def cases(sizes: Sizes) -> list[Case]:
    """The jitted JAX cases of a run of ``sizes``, the matrix product to 256."""
    matmul = [n for n in sizes.matmul if n <= MATMUL_LIMIT]
    return suite.cases(NAME, sizes, _library, matmul=matmul)
