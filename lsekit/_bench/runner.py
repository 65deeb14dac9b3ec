"""Run cases: set each up, check it, time it, trace its memory.

Each case's sides are first called once (which compiles them, where a
compiler is involved) and their results compared, so that a case whose
peer computes something else never shows a ratio. Then the sides are timed
in alternation (see `timing`), and on NumPy the peak memory of one call of
each is traced (see `memory`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import memory, timing
from .backends import NAMES, Backend
from .backends import load as load_backend
from .case import BANDWIDTH, Case, Peer, Setup
from .progress import Progress
from .sizes import Sizes
from .targets import UNTARGETED, Target, target_for

__all__ = ["Outcome", "Row", "agree", "row", "run", "run_case", "select"]

# Loose: the check is there to catch a case that computes the wrong thing,
# not to measure accuracy. A max-shift float32 result is off by 1e-6 or so.
RTOL = {"float32": 1e-3, "float64": 1e-9}


@dataclass(frozen=True)
class Row:
    """One line of the report: lsekit against one peer on one case.

    Attributes
    ----------
    backend, function, peer, kind, shape, dtype
        What was run: the backend, the lsekit function, the peer's name and
        kind (`case.LIBRARY`, `case.MAX_SHIFT`, `case.BANDWIDTH`), the
        input's shape and dtype.
    lsekit_ms, peer_ms : float
        Median milliseconds per call (NaN where the case failed).
    ratio : float
        ``lsekit_ms / peer_ms``; for a `BANDWIDTH` peer, lsekit's bytes per
        second over the copy's.
    target : Target or None
        The row's target, if it has one.
    lsekit_mem_x, peer_mem_x : float or None
        Peak extra memory of one call over the input's bytes (NumPy only).
    repeats : int
        Timed rounds behind each median.
    note : str
        Why the row failed, or what its ratio means (bandwidth rows).
    failed : bool
        Whether the case could not be run or its sides disagreed.
    """

    backend: str
    function: str
    peer: str
    kind: str
    shape: tuple[int, ...]
    dtype: str
    lsekit_ms: float
    peer_ms: float
    ratio: float
    target: Target | None
    lsekit_mem_x: float | None = None
    peer_mem_x: float | None = None
    repeats: int = 0
    note: str = ""
    failed: bool = False

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None without a target."""
        if self.target is None:
            return None
        return not self.failed and self.target.met(self.ratio)


def _gbps(nbytes: int, seconds: float) -> str:
    """``nbytes / seconds`` in GB/s, as text.

    Examples
    --------
    >>> _gbps(4_321_000_000_000, 1.0), _gbps(2_500_000_000, 1.0)
    ('4321 GB/s', '2.5 GB/s')
    """
    rate = nbytes / seconds / 1e9 if seconds > 0 else math.nan
    return f"{rate:.0f} GB/s" if rate >= 100 else f"{rate:.2g} GB/s"


def row(
    case: Case,
    peer: Peer,
    ours_s: float,
    peer_s: float,
    *,
    ours_bytes: int = 0,
    repeats: int = 0,
    mem: tuple[float | None, float | None] = (None, None),
) -> Row:
    """The report's row for ``peer`` on ``case``, from median seconds.

    Examples
    --------
    >>> from lsekit._bench.case import Case, Peer
    >>> case = Case("numpy", "logsumexp", (4, 8), "float32", setup=dict)
    >>> peer = Peer("scipy.special.logsumexp", "library", call=dict)
    >>> r = row(case, peer, 0.003, 0.002)
    >>> r.lsekit_ms, r.peer_ms, r.ratio, str(r.target), r.met
    (3.0, 2.0, 1.5, '<= 1', False)
    """
    note = ""
    if peer.kind == BANDWIDTH:
        ratio = timing.bandwidth_fraction(ours_s, ours_bytes, peer_s, peer.bytes_moved)
        note = (
            f"lsekit {_gbps(ours_bytes, ours_s)}, "
            f"copy {_gbps(peer.bytes_moved, peer_s)}"
        )
    else:
        ratio = timing.ratio(ours_s, peer_s)
    return Row(
        backend=case.backend,
        function=case.function,
        peer=peer.name,
        kind=peer.kind,
        shape=case.shape,
        dtype=case.dtype,
        lsekit_ms=1e3 * ours_s,
        peer_ms=1e3 * peer_s,
        ratio=ratio,
        target=target_for(case.backend, peer.kind, case.function),
        lsekit_mem_x=mem[0],
        peer_mem_x=mem[1],
        repeats=repeats,
        note=note,
    )


def _failed(case: Case, peer: str, kind: str, why: str) -> Row:
    return Row(
        backend=case.backend,
        function=case.function,
        peer=peer,
        kind=kind,
        shape=case.shape,
        dtype=case.dtype,
        lsekit_ms=math.nan,
        peer_ms=math.nan,
        ratio=math.nan,
        target=target_for(case.backend, kind, case.function),
        note=why,
        failed=True,
    )


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def agree(ours: Any, peer: Any, dtype: str) -> str | None:
    """None if two results agree within the loose tolerance, else why not.

    The tolerance is relative to each entry, with an absolute floor scaled
    to the largest entry of ``peer``, so that tiny probabilities among
    large ones do not count.

    Examples
    --------
    >>> import numpy as np
    >>> agree(np.array([1.0, 2.0]), np.array([1.0, 2.0000001]), "float32") is None
    True
    >>> agree(np.array([1.0, 2.0]), np.array([1.0, 3.0]), "float32")
    'lsekit and the peer disagree: max |diff| 1 (tolerance 0.001 relative)'
    """
    import numpy as np

    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(peer, dtype=np.float64)
    if a.shape != b.shape:
        return f"lsekit's result has shape {a.shape}, the peer's {b.shape}"
    rtol = RTOL.get(dtype, 1e-3)
    finite = b[np.isfinite(b)]
    scale = float(np.max(np.abs(finite))) if finite.size else 1.0
    if np.allclose(a, b, rtol=rtol, atol=rtol * 1e-3 * scale, equal_nan=True):
        return None
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - b)
    worst = float(np.nanmax(diff)) if diff.size else math.nan
    return (
        f"lsekit and the peer disagree: max |diff| {worst:.3g} "
        f"(tolerance {rtol:g} relative)"
    )


def _synced(setup: Setup, call: Callable[[], Any]) -> Callable[[], Any]:
    sync = setup.sync
    return lambda: sync(call())


def _timed(setup: Setup, call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = setup.sync(call())
    return out, time.perf_counter() - start


def _inner(setup: Setup, call: Callable[[], Any], seconds: float) -> int:
    """Calls per timed batch, from one call's ``seconds``.

    A short call is timed once more and the longer time kept: a single
    lucky reading would make the batches, and the run, far too long.
    """
    if seconds < timing.MIN_BATCH_S:
        seconds = max(seconds, _timed(setup, call)[1])
    return timing.batch_size(seconds)


def run_case(case: Case, repeats: int) -> list[Row]:
    """Set up, check, time and trace ``case``; one row per peer.

    ``case.setup`` makes the warm-up call of each side. The next call of
    each is compared (see `agree`) and timed, to choose how many calls
    its timed batches hold; then `timing.alternate` times the sides.
    """
    try:
        setup = case.setup()
    except Exception as exc:
        return [_failed(case, "—", "", f"setup failed: {_why(exc)}")]
    try:
        out, took = _timed(setup, setup.ours)
        ours_out = setup.to_numpy(out)
    except Exception as exc:
        failure = f"lsekit failed: {_why(exc)}"
        return [_failed(case, p.name, p.kind, failure) for p in setup.peers]
    rows: dict[int, Row] = {}
    timed: list[Peer] = []
    inner = [_inner(setup, setup.ours, took)]
    for i, peer in enumerate(setup.peers):
        why: str | None
        try:
            out, took = _timed(setup, peer.call)
            why = (
                None
                if peer.kind == BANDWIDTH
                else agree(ours_out, setup.to_numpy(out), case.dtype)
            )
        except Exception as exc:
            why = f"peer failed: {_why(exc)}"
        if why is not None:
            rows[i] = _failed(case, peer.name, peer.kind, why)
        else:
            timed.append(peer)
            inner.append(_inner(setup, peer.call, took))
    if timed:
        calls = [_synced(setup, setup.ours), *(_synced(setup, p.call) for p in timed)]
        times = timing.alternate(calls, repeats, inner)
        medians = [timing.median(t) for t in times]
        mems: list[float | None] = [None] * len(calls)
        if setup.trace_memory and setup.input_bytes > 0:
            mems = [memory.peak(c, warm_up=False) / setup.input_bytes for c in calls]
        for peer, t, m in zip(timed, medians[1:], mems[1:], strict=True):
            rows[setup.peers.index(peer)] = row(
                case,
                peer,
                medians[0],
                t,
                ours_bytes=setup.ours_bytes,
                repeats=repeats,
                mem=(mems[0], m),
            )
    return [rows[i] for i in sorted(rows)]


@dataclass
class Outcome:
    """What a run produced.

    Attributes
    ----------
    rows : list of Row
        In the order run: backend by backend, case by case.
    skipped : dict
        Backend name -> why it did not run.
    versions : dict
        Library -> version, for every backend that ran.
    sizes : Sizes
        The run's sizes; ``repeats`` as used.
    mode : str
        How the run was sized: ``"full"``, ``"quick"``, or either with
        ``", custom sizes"``.
    seconds : float
        Wall time of the run.
    backends : list of str
        The backends that ran, in order.
    interrupted : str or None
        How far the run got, where Ctrl-C stopped it.
    """

    rows: list[Row]
    skipped: dict[str, str]
    versions: dict[str, str]
    sizes: Sizes
    mode: str
    seconds: float = 0.0
    backends: list[str] = field(default_factory=list)
    interrupted: str | None = None


def select(names: Sequence[str] | None) -> tuple[list[Backend], dict[str, str]]:
    """The backends to run, and the others with why they cannot.

    Parameters
    ----------
    names : sequence of str, optional
        Backend names (``-`` read as ``_``); by default every backend, the
        GPU ones skipped where there is no GPU.

    Returns
    -------
    ready : list of Backend
        Those that can run, in the order of `backends.NAMES` (or of
        ``names``).
    skipped : dict
        Backend name -> why it cannot run here.

    Raises
    ------
    ValueError
        For a name that is no backend, naming it.
    """
    wanted = list(NAMES) if not names else [n.replace("-", "_") for n in names]
    loaded = [load_backend(n) for n in dict.fromkeys(wanted)]
    ready: list[Backend] = []
    skipped: dict[str, str] = {}
    for backend in loaded:
        try:
            why = backend.available()
        except Exception as exc:
            # A broken install fails in its own way; it must not stop the
            # other backends.
            why = f"unavailable: {_why(exc)}"
        if why is None:
            ready.append(backend)
        else:
            skipped[backend.name] = why
    return ready, skipped


def run(
    backends: Sequence[Backend],
    sizes: Sizes,
    *,
    mode: str = "custom",
    skipped: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Run every case of ``backends`` at ``sizes``.

    Parameters
    ----------
    backends : sequence of Backend
        From `select`.
    sizes : Sizes
        Shapes and repeats.
    mode : str
        The run's name in the report.
    skipped : dict, optional
        Backends already found unable to run, and why.
    progress : Progress, optional
        Told of each case as it starts.

    Returns
    -------
    Outcome
    """
    start = time.perf_counter()
    skipped = dict(skipped or {})
    versions: dict[str, str] = {}
    plan: list[Case] = []
    ran: list[str] = []
    for backend in backends:
        try:
            cases = backend.cases(sizes)
            versions.update(backend.versions())
        except Exception as exc:
            skipped[backend.name] = f"failed to start: {_why(exc)}"
            continue
        plan += cases
        ran.append(backend.name)
    # The untargeted cases run last. A matrix product leaves OpenBLAS's
    # idle threads spinning for about a tenth of a second after it, and on
    # a machine with few cores the next case was timed against a busy core:
    # the first PyTorch case, after NumPy's logmatmulexp, took up to four
    # times as long, on either side, in two of three runs.
    plan.sort(key=lambda case: case.function in UNTARGETED)
    if progress is not None:
        progress.total = len(plan)
    rows: list[Row] = []
    interrupted = None
    done = 0
    try:
        for case in plan:
            if progress is not None:
                progress.start(case.label)
            rows += run_case(case, sizes.repeats)
            done += 1
    except KeyboardInterrupt:
        # Ctrl-C in a long run: report what was measured.
        interrupted = f"interrupted after {done} of {len(plan)} cases"
    if progress is not None:
        progress.close()
    return Outcome(
        rows=rows,
        skipped=skipped,
        versions=versions,
        sizes=sizes,
        mode=mode,
        seconds=time.perf_counter() - start,
        backends=ran,
        interrupted=interrupted,
    )
