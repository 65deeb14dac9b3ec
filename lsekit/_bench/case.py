"""What a benchmark case is: lsekit's call, its peers' calls, how to wait.

A `Case` is cheap to make: its input is allocated, and compiled code built,
only when the runner calls its ``setup``, so that a long list of cases can
be counted (for the progress bar) before any of them holds memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BANDWIDTH",
    "KINDS",
    "LIBRARY",
    "MAX_SHIFT",
    "Case",
    "Peer",
    "Setup",
    "shape_text",
]

#: The library's own function (``scipy.special.logsumexp``, ``torch.logsumexp``).
LIBRARY = "library"
#: The max-shift formula written by hand in the same library.
MAX_SHIFT = "max-shift"
#: A device-to-device copy: lsekit's achieved bandwidth as a fraction of it.
BANDWIDTH = "bandwidth"
KINDS = (LIBRARY, MAX_SHIFT, BANDWIDTH)


@dataclass(frozen=True)
class Peer:
    """One call that lsekit's is set against.

    Attributes
    ----------
    name : str
        What the report calls it, e.g. ``"scipy.special.logsumexp"``.
    kind : str
        `LIBRARY`, `MAX_SHIFT` or `BANDWIDTH`.
    call : callable
        Runs the peer once on the case's input and returns its result.
    bytes_moved : int
        For a `BANDWIDTH` peer, the bytes one call reads and writes.
    """

    name: str
    kind: str
    call: Callable[[], Any]
    bytes_moved: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"peer kind {self.kind!r} is not one of {KINDS}")


def _identity(result: Any) -> Any:
    return result


@dataclass(frozen=True)
class Setup:
    """A case made ready to run: its input exists, its code is compiled.

    Attributes
    ----------
    ours : callable
        Runs the lsekit function once and returns its result.
    peers : tuple of Peer
        The calls it is timed against, alternating with it.
    input_bytes : int
        Bytes of the input arrays, the unit of the memory figures.
    sync : callable
        Given a call's result, returns once the device has computed it
        (``block_until_ready``, a CUDA synchronisation); the identity where
        calls return finished results.
    to_numpy : callable
        Turns a result into something `numpy.asarray` reads, on the host.
    ours_bytes : int
        Bytes lsekit's call reads and writes, for `BANDWIDTH` peers.
    trace_memory : bool
        Whether tracemalloc sees the library's allocations (NumPy only), so
        that peak memory is worth measuring.
    """

    ours: Callable[[], Any]
    peers: tuple[Peer, ...]
    input_bytes: int
    sync: Callable[[Any], Any] = _identity
    to_numpy: Callable[[Any], Any] = _identity
    ours_bytes: int = 0
    trace_memory: bool = False


@dataclass(frozen=True)
class Case:
    """One lsekit function on one backend, shape and dtype.

    Attributes
    ----------
    backend : str
        The backend module's ``NAME``.
    function : str
        The lsekit function, e.g. ``"logsumexp"``.
    shape : tuple of int
        The input's shape (for ``logmatmulexp``, each operand's).
    dtype : str
        The input's dtype name.
    setup : callable
        Allocates the input and returns the `Setup`.
    """

    backend: str
    function: str
    shape: tuple[int, ...]
    dtype: str
    setup: Callable[[], Setup] = field(repr=False)

    @property
    def label(self) -> str:
        """``backend function shape dtype``, for progress lines.

        Examples
        --------
        >>> Case("numpy", "logsumexp", (64, 600), "float32", setup=dict).label
        'numpy logsumexp 64x600 float32'
        """
        return f"{self.backend} {self.function} {shape_text(self.shape)} {self.dtype}"


def shape_text(shape: tuple[int, ...]) -> str:
    """A shape as ``64x600``, the form the reports and ``--shapes`` use.

    Examples
    --------
    >>> shape_text((64, 600))
    '64x600'
    """
    return "x".join(str(n) for n in shape)
