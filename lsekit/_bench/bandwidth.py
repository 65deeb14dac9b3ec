"""GPU cases: lsekit's achieved memory bandwidth against a device copy's.

A reduction over a large array is bound by memory traffic, not arithmetic,
so the fair bound on a GPU is the bandwidth the device reaches at all. A
device-to-device copy of the input measures it (bytes read plus bytes
written, over its time); lsekit's ``logsumexp`` reads the input and writes
one value per row, its ``log_softmax`` reads and writes the whole array.
Each case's ratio is lsekit's bytes per second over the copy's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import inputs
from .case import BANDWIDTH, LIBRARY, Case, Peer, Setup
from .sizes import Sizes
from .suite import Library, lsekit_call

__all__ = ["FUNCTIONS", "cases"]

FUNCTIONS = ("logsumexp", "log_softmax")


def _setup(
    load: Callable[[], Library], function: str, shape: tuple[int, int]
) -> Callable[[], Setup]:
    def setup() -> Setup:
        lib = load()
        if lib.copier is None:
            raise TypeError("bandwidth cases need a Library with a copier")
        host = inputs.logits(shape, "float32")
        x = lib.asarray(host)
        nbytes = int(host.nbytes)
        out_bytes = nbytes if function == "log_softmax" else shape[0] * 4
        f = lsekit_call(function)
        name, own = lib.own[function]
        copy = lib.copier(x)

        def ours() -> Any:
            return f(x)

        peers = (
            # Checks lsekit's result; timed too, with no target.
            Peer(name, LIBRARY, lambda: own(x)),
            Peer("device copy", BANDWIDTH, copy, bytes_moved=2 * nbytes),
        )
        for call in (ours, *(p.call for p in peers)):
            lib.sync(call())
        return Setup(
            ours=ours,
            peers=peers,
            input_bytes=nbytes,
            sync=lib.sync,
            to_numpy=lib.to_numpy,
            ours_bytes=nbytes + out_bytes,
        )

    return setup


def cases(backend: str, sizes: Sizes, load: Callable[[], Library]) -> list[Case]:
    """The bandwidth cases of ``backend``, at ``sizes.bandwidth_shape``."""
    shape = sizes.bandwidth_shape
    return [
        Case(backend, f, shape, "float32", _setup(load, f, shape)) for f in FUNCTIONS
    ]
