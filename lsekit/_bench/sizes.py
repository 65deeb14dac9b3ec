"""The shapes each run uses: the full suite's and ``--quick``'s."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FULL", "QUICK", "Sizes", "parse_shapes"]


@dataclass(frozen=True)
class Sizes:
    """What a run times.

    Attributes
    ----------
    shapes : tuple of (int, int)
        float32 ``(rows, classes)`` inputs of the reductions and the loss,
        reduced over the last axis.
    matmul : tuple of int
        Square float32 operands of ``logmatmulexp``, one case per size.
    float64_shape : (int, int) or None
        One float64 shape, timed on NumPy only.
    compiled_shapes : tuple of (int, int)
        The shapes run under ``torch.compile``, whose compilation (seconds
        per function and shape on a small CPU) dominates a quick run.
    compiled_matmul : tuple of int
        The ``logmatmulexp`` sizes run under ``torch.compile``.
    compiled_functions : tuple of str
        The reductions and the loss run under ``torch.compile``.
    compiled_by_hand : bool
        Whether ``torch.compile`` cases time the max-shift formulas too,
        or the library's own functions alone.
    bandwidth_shape : (int, int)
        The float32 input of the GPU bandwidth cases (the device copy, and
        lsekit's ``logsumexp`` and ``log_softmax``): 2**28 values, enough
        to leave every cache behind.
    repeats : int
        Timed calls of each side per case, after the warm-up.
    """

    shapes: tuple[tuple[int, int], ...]
    matmul: tuple[int, ...]
    float64_shape: tuple[int, int] | None
    compiled_shapes: tuple[tuple[int, int], ...]
    compiled_matmul: tuple[int, ...]
    compiled_functions: tuple[str, ...]
    compiled_by_hand: bool
    bandwidth_shape: tuple[int, int]
    repeats: int


_BANDWIDTH = (2**14, 2**14)

FULL = Sizes(
    shapes=((64, 600), (512, 8192), (2048, 32000), (4096, 32000)),
    matmul=(256, 512, 1024, 2048),
    float64_shape=(2048, 32000),
    compiled_shapes=((64, 600), (512, 8192), (2048, 32000), (4096, 32000)),
    compiled_matmul=(256, 512, 1024, 2048),
    compiled_functions=("logsumexp", "softmax", "log_softmax", "cross_entropy"),
    compiled_by_hand=True,
    bandwidth_shape=_BANDWIDTH,
    repeats=5,
)

# A first look in a minute or two on a 2-core CPU: compiling takes most of
# that, so torch.compile covers the base reduction and the loss against
# PyTorch's own functions at one shape; the matrix product runs at a size
# whose Dask graph stays small.
QUICK = Sizes(
    shapes=((64, 600), (1024, 4096)),
    matmul=(128,),
    float64_shape=None,
    compiled_shapes=((1024, 4096),),
    compiled_matmul=(),
    compiled_functions=("logsumexp", "cross_entropy"),
    compiled_by_hand=False,
    bandwidth_shape=_BANDWIDTH,
    repeats=3,
)


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """Read ``"4x8,16x32"`` as ``((4, 8), (16, 32))``.

    Examples
    --------
    >>> parse_shapes("4x8, 16x32")
    ((4, 8), (16, 32))
    >>> parse_shapes("4")
    Traceback (most recent call last):
    ...
    ValueError: shape '4' is not ROWSxCOLS with positive integers
    """
    shapes: list[tuple[int, int]] = []
    for part in text.split(","):
        item = part.strip()
        bits = item.split("x")
        try:
            rows, cols = (int(b) for b in bits)
        except ValueError:
            rows = cols = 0
        if rows < 1 or cols < 1:
            raise ValueError(f"shape {item!r} is not ROWSxCOLS with positive integers")
        shapes.append((rows, cols))
    return tuple(shapes)
