"""JAX under ``jax.jit``, training: forward and backward.

Each call is a training step, jitted: a fixed random gradient of the
function's output is pulled back to its input (``jax.vjp``), and the result
compared is the input's gradient. The peers are those of `jax`,
differentiated by JAX.
"""

from __future__ import annotations

from . import jax, suite
from .case import Case
from .jax import available, versions
from .sizes import Sizes

__all__ = ["NAME", "available", "cases", "versions"]

NAME = "jax_train"


def cases(sizes: Sizes) -> list[Case]:
    """The training cases of a run of ``sizes``, the matrix product to 256."""
    matmul = [n for n in sizes.matmul if n <= jax.MATMUL_LIMIT]
    return suite.cases(NAME, sizes, lambda: jax._library(trained=True), matmul=matmul)
