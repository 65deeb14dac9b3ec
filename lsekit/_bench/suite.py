"""The cases of one backend, made from what its library provides.

Every backend times the same functions on the same inputs; what differs is
how its arrays are made, its own functions, the max-shift formulas written
in it, how a call is wrapped (``jax.jit``, ``torch.compile``, a Dask
``compute``) and how to wait for a result. A backend module describes those
in a `Library`, and `cases` turns it into the run's `Case` list.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from . import inputs
from .case import LIBRARY, MAX_SHIFT, Case, Peer, Setup
from .sizes import Sizes

__all__ = ["FUNCTIONS", "REDUCTIONS", "Library", "cases", "lsekit_call"]

REDUCTIONS = ("logsumexp", "softmax", "log_softmax")
FUNCTIONS = (*REDUCTIONS, "cross_entropy", "logmatmulexp")


def _same(f: Callable[..., Any]) -> Callable[..., Any]:
    return f


def _itself(x: Any) -> Any:
    return x


@dataclass(frozen=True)
class Library:
    """What one backend brings to the common cases.

    Attributes
    ----------
    asarray : callable
        Turns a NumPy array into the backend's array, on its device.
    own : dict
        Function name -> (peer name, call): the library's own function,
        taking the same positional arrays as lsekit's (``x``; ``x, y`` for
        the loss; ``a, b`` for the matrix product).
    by_hand : dict
        Function name -> call: the max-shift formula written in the library.
    wrap : callable
        Applied to every side's call before its first use: ``jax.jit``,
        ``torch.compile``, or one that computes a lazy result.
    sync : callable
        Waits for a result to be computed and returns it.
    to_numpy : callable
        Turns a result into something `numpy.asarray` reads.
    trace_memory : bool
        Whether tracemalloc sees the library's allocations.
    first_call : callable
        A context manager that the first call of each side (compilation,
        where there is one) runs in: it can clear a compiler's caches and
        hold back its chatter.
    copier : callable, optional
        GPU backends: given a device array, returns a call that copies it
        into a buffer on the same device, allocated once (see `bandwidth`).
    """

    asarray: Callable[[Any], Any]
    own: dict[str, tuple[str, Callable[..., Any]]]
    by_hand: dict[str, Callable[..., Any]]
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]] = _same
    sync: Callable[[Any], Any] = _itself
    to_numpy: Callable[[Any], Any] = _itself
    trace_memory: bool = False
    first_call: Callable[[], AbstractContextManager[object]] = field(
        default=contextlib.nullcontext
    )
    copier: Callable[[Any], Callable[[], Any]] | None = None


def lsekit_call(function: str) -> Callable[..., Any]:
    """lsekit's ``function`` with the suite's arguments, over the last axis.

    Examples
    --------
    >>> import numpy as np
    >>> float(lsekit_call("logsumexp")(np.array([0.0, 0.0])))
    0.6931471805599453
    """
    import lsekit

    if function in REDUCTIONS:
        f = getattr(lsekit, function)
        return lambda x: f(x, axis=-1)
    if function == "cross_entropy":
        return lambda x, y: lsekit.cross_entropy(x, y)
    if function == "logmatmulexp":
        return lambda a, b: lsekit.logmatmulexp(a, b)
    raise ValueError(f"unknown function {function!r} (known: {', '.join(FUNCTIONS)})")


def _arrays(function: str, shape: tuple[int, int], dtype: str) -> tuple[Any, ...]:
    if function == "logmatmulexp":
        return inputs.log_operands(shape[0], dtype)
    x = inputs.logits(shape, dtype)
    if function == "cross_entropy":
        return x, inputs.labels(shape[0], shape[1])
    return (x,)


def _bind(f: Callable[..., Any], args: Sequence[Any]) -> Callable[[], Any]:
    return functools.partial(f, *args)


def _setup(
    load: Callable[[], Library],
    function: str,
    shape: tuple[int, int],
    dtype: str,
    by_hand: bool = True,
) -> Callable[[], Setup]:
    def setup() -> Setup:
        lib = load()
        host = _arrays(function, shape, dtype)
        args = tuple(lib.asarray(a) for a in host)
        peers: list[Peer] = []
        if function in lib.own:
            name, own = lib.own[function]
            peers.append(Peer(name, LIBRARY, _bind(lib.wrap(own), args)))
        if function in lib.by_hand and (by_hand or not peers):
            name = (
                "max-shift matmul"
                if function == "logmatmulexp"
                else "max-shift by hand"
            )
            peers.append(
                Peer(name, MAX_SHIFT, _bind(lib.wrap(lib.by_hand[function]), args))
            )
        ours = _bind(lib.wrap(lsekit_call(function)), args)
        # The warm-up: the first call of each side, which compiles it where a
        # compiler is involved, so that neither the timing nor the check
        # that follows counts it.
        with lib.first_call():
            for call in (ours, *(p.call for p in peers)):
                lib.sync(call())
        return Setup(
            ours=ours,
            peers=tuple(peers),
            input_bytes=sum(int(a.nbytes) for a in host),
            sync=lib.sync,
            to_numpy=lib.to_numpy,
            trace_memory=lib.trace_memory,
        )

    return setup


def cases(
    backend: str,
    sizes: Sizes,
    load: Callable[[], Library],
    *,
    shapes: Sequence[tuple[int, int]] | None = None,
    matmul: Sequence[int] | None = None,
    functions: Sequence[str] | None = None,
    by_hand: bool = True,
    float64: bool = False,
) -> list[Case]:
    """The cases of ``backend`` for a run of ``sizes``.

    Parameters
    ----------
    backend : str
        The backend's name.
    sizes : Sizes
        The run's sizes.
    load : callable
        Returns the backend's `Library`; called when a case is set up, so
        that counting cases imports nothing. Cache it.
    shapes : sequence of (int, int), optional
        The float32 shapes, instead of ``sizes.shapes``.
    matmul : sequence of int, optional
        The ``logmatmulexp`` sizes, instead of ``sizes.matmul``.
    functions : sequence of str, optional
        The reductions and the loss to run; by default all four.
    by_hand : bool
        Time the max-shift formulas too (where the library has its own
        function; else they are the only peer).
    float64 : bool
        Add the float64 cases of ``sizes.float64_shape``.

    Returns
    -------
    list of Case
        For each shape, the reductions and the loss; then the matrix
        product at each size.
    """
    rows = [(s, "float32") for s in (sizes.shapes if shapes is None else shapes)]
    if float64 and sizes.float64_shape is not None:
        rows.append((sizes.float64_shape, "float64"))
    out: list[Case] = []
    for shape, dtype in rows:
        for function in FUNCTIONS[:-1] if functions is None else functions:
            setup = _setup(load, function, shape, dtype, by_hand)
            out.append(Case(backend, function, shape, dtype, setup))
    for n in sizes.matmul if matmul is None else matmul:
        square = (n, n)
        out.append(
            Case(
                backend,
                "logmatmulexp",
                square,
                "float32",
                _setup(load, "logmatmulexp", square, "float32", by_hand),
            )
        )
    return out
