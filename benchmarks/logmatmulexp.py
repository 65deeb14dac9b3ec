"""logmatmulexp against the unstable formula and the exact broadcast, same run.

Speed and memory of ``lsekit.logmatmulexp(a, b)`` on NumPy and PyTorch
(eager, CPU, default thread count)::

    python benchmarks/logmatmulexp.py [--size 1024] [--broadcast-size 512]
        [--repeats 7] [--broadcast-repeats 3] [--backend numpy|torch ...]
        [--no-accuracy] [--quick]

Five tables, in markdown:

1. time against the unstable ``log(exp(a) @ exp(b))`` (one matrix product,
   wrong wherever ``exp`` overflows or underflows; NumPy's warnings silenced)
   at ``--size``, on typical inputs (target: at most 1.5x);
2. time against the exact broadcast ``logsumexp(a[:, :, None] + b[None],
   axis=1)`` (``scipy.special.logsumexp`` / ``torch.logsumexp``) at
   ``--broadcast-size`` (target: lsekit at least 100x faster);
3. peak extra memory on NumPy, traced by tracemalloc, as a multiple of the
   bytes of the inputs plus the output (target: at most 4x);
4. the adversarial "crossed maxima" input, whose every cell goes through
   the exact repair path, against both peers at ``--broadcast-size``;
5. the error against mpmath on the typical inputs at size 256, in ulps of
   ``max(|out|, 1)``, of lsekit and of SciPy's logsumexp of the broadcast
   (the cells with ``|out| < 2`` and a random sample of the others).

Runs alternate lsekit and its peers on the same input, after one warm-up
call of each, and report the median of the repeats; a ratio is lsekit's
time over the peer's. ``--quick`` (size 256, broadcast 128, 3 repeats)
finishes in well under a minute.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np
import scipy
from scipy import special

import lsekit
from lsekit._bench.memory import peak

KINDS = ("normal", "dirichlet", "sticky", "banded")
DTYPES = ("float32", "float64")
TIME_TARGET = 1.5  # lsekit / unstable, at most
SPEEDUP_TARGET = 100.0  # broadcast / lsekit, at least
MEMORY_TARGET = 4.0  # peak / (inputs + output), at most
HALF_BAND = 5  # banded: |i - k| <= 5, 11 diagonals
STAY = 0.99  # sticky: probability of staying in the same state
GAP = 800.0  # crossed maxima: how far the maxima stand out
# Peak of scipy.special.logsumexp over the broadcast, in multiples of the
# broadcast's bytes (6.1-6.3 measured; torch.logsumexp needs less).
BROADCAST_PEAK = 7


# --- inputs ---------------------------------------------------------------


def _inputs(kind: str, n: int, rng: np.random.Generator) -> tuple[Any, Any]:
    """Two float64 (n, n) operands in log space."""
    if kind == "normal":
        # Log-values spread over about +-10: logits, log-likelihoods.
        return rng.normal(scale=3.0, size=(n, n)), rng.normal(scale=3.0, size=(n, n))
    if kind == "dirichlet":
        # Log of HMM transition matrices with Dirichlet(1) rows.
        ones = np.ones(n)
        return (
            np.log(rng.dirichlet(ones, size=n)),
            np.log(rng.dirichlet(ones, size=n)),
        )
    if kind == "sticky":
        # Log of a near-diagonal transition matrix: stay with probability
        # 0.99, else move to a state drawn from Dirichlet(1) rows.
        def sticky() -> Any:
            t = (1.0 - STAY) * rng.dirichlet(np.ones(n), size=n)
            return np.log(t + STAY * np.eye(n))

        return sticky(), sticky()
    if kind == "banded":
        # normal(scale=3) on the band |i - k| <= HALF_BAND, -inf off it.
        idx = np.arange(n)
        off = np.abs(idx[:, None] - idx[None, :]) > HALF_BAND

        def banded() -> Any:
            x = rng.normal(scale=3.0, size=(n, n))
            x[off] = -np.inf
            return x

        return banded(), banded()
    if kind == "crossed":
        # Row maxima of a at k = 0, column maxima of b at k = 1, both GAP
        # above the rest: every term of every cell sits about GAP below the
        # shifts, so the shifted product underflows and no cell is certified.
        a = rng.normal(scale=3.0, size=(n, n))
        b = rng.normal(scale=3.0, size=(n, n))
        a[:, 0] += GAP
        b[1, :] += GAP
        return a, b
    raise ValueError(kind)


def _describe(kind: str) -> str:
    return {
        "normal": "normal(scale=3)",
        "dirichlet": "HMM, log Dirichlet(1) rows",
        "sticky": f"HMM, log sticky (stay {STAY})",
        "banded": f"banded, {2 * HALF_BAND + 1} diagonals, -inf off",
        "crossed": f"crossed maxima, gap {GAP:g}",
    }[kind]


# --- backends -------------------------------------------------------------


class Backend:
    """How one library makes arrays and computes the two peers."""

    name: str

    def asarray(self, x: Any, dtype: str) -> Any:
        raise NotImplementedError

    def unstable(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def broadcast(self, a: Any, b: Any, rows: int) -> Any:
        raise NotImplementedError

    def to_numpy(self, x: Any) -> Any:
        return np.asarray(x)


class NumPy(Backend):
    name = "numpy"

    def asarray(self, x: Any, dtype: str) -> Any:
        return np.ascontiguousarray(x, dtype=dtype)

    def unstable(self, a: Any, b: Any) -> Any:
        with np.errstate(all="ignore"):
            return np.log(np.exp(a) @ np.exp(b))

    def broadcast(self, a: Any, b: Any, rows: int) -> Any:
        with np.errstate(all="ignore"):
            parts = [
                special.logsumexp(a[i : i + rows, :, None] + b[None], axis=1)
                for i in range(0, a.shape[0], rows)
            ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class Torch(Backend):
    name = "torch"

    def __init__(self) -> None:
        import torch

        self.torch = torch

    def asarray(self, x: Any, dtype: str) -> Any:
        return self.torch.asarray(np.ascontiguousarray(x, dtype=dtype))

    def unstable(self, a: Any, b: Any) -> Any:
        torch = self.torch
        return torch.log(torch.exp(a) @ torch.exp(b))

    def broadcast(self, a: Any, b: Any, rows: int) -> Any:
        torch = self.torch
        parts = [
            torch.logsumexp(a[i : i + rows, :, None] + b[None], 1)
            for i in range(0, a.shape[0], rows)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def to_numpy(self, x: Any) -> Any:
        return x.numpy()


def _backends(names: Sequence[str]) -> list[Backend]:
    out: list[Backend] = []
    for name in dict.fromkeys(names):
        if name == "numpy":
            out.append(NumPy())
            continue
        try:
            out.append(Torch())
        except ImportError:
            print(f"(skipping {name}: not installed)")
    return out


# --- measurement ----------------------------------------------------------


def _medians(
    fns: Sequence[Callable[[], Any]],
    repeats: int,
    inner: Sequence[int] | None = None,
) -> tuple[list[float], list[Any]]:
    """Median seconds of each function, run in turn; warm-up outputs.

    Each of ``repeats`` rounds runs every function in turn, ``inner[i]``
    timed calls of function ``i`` back to back (1 by default): the cheap
    side of a slow comparison gets more samples for the same cost, which
    steadies its median on a busy machine.
    """
    outs = [fn() for fn in fns]
    counts = inner or [1] * len(fns)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t, count in zip(fns, times, counts, strict=True):
            for _ in range(count):
                start = time.perf_counter()
                fn()
                t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times], outs


def _uncertified(a: Any, b: Any) -> str:
    """Cells the fast path cannot certify (repaired exactly), if visible.

    Reads lsekit's private fast path; prints ``?`` if that has changed.
    """
    try:
        from array_api_compat import array_namespace

        from lsekit._linalg import _forward

        xp = array_namespace(a, b)
        with np.errstate(all="ignore"):
            _, saved = _forward(a, b, keep=True)
        return str(int(xp.sum(xp.astype(~saved.certified, xp.int64))))
    except Exception:
        return "?"


def _max_diff(x: Any, y: Any) -> float:
    """Largest |x - y|, with equal infinities counted as agreeing."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        d = np.where(x == y, 0.0, np.abs(x - y))
    return float(np.nanmax(np.where(np.isnan(d), np.inf, d)))


def _mem_available() -> int | None:
    """Bytes of memory available now (Linux), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _broadcast_rows(n: int, itemsize: int) -> tuple[int, str]:
    """Rows of ``a`` per broadcast chunk, and a line saying why."""
    per_row = BROADCAST_PEAK * n * n * itemsize
    need = per_row * n
    avail = _mem_available()
    gib = 1 << 30
    if avail is None or need <= avail // 2:
        have = "unknown" if avail is None else f"{avail / gib:.1f} GiB"
        return n, (
            f"whole: {n}^3 x {itemsize} B = {n**3 * itemsize / gib:.2f} GiB "
            f"broadcast, peak about {need / gib:.1f} GiB, available {have}"
        )
    rows = max(1, (avail // 2) // per_row)
    return rows, (
        f"chunked over rows of a, {rows} at a time (whole would peak about "
        f"{need / gib:.1f} GiB, available {avail / gib:.1f} GiB)"
    )


def _verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


# --- tables ---------------------------------------------------------------


def table_unstable(backends: list[Backend], n: int, repeats: int) -> None:
    print(
        f"\n### 1. lsekit / unstable `log(exp(a) @ exp(b))`, M = K = N = {n}, "
        f"median of {repeats} (target: ratio <= {TIME_TARGET:g})\n"
    )
    print(
        "| backend | input | dtype | repaired cells | lsekit ms | unstable ms "
        f"| ratio | <= {TIME_TARGET:g}x |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind in KINDS:
        a64, b64 = _inputs(kind, n, np.random.default_rng(0))
        for be in backends:
            for dtype in DTYPES:
                a, b = be.asarray(a64, dtype), be.asarray(b64, dtype)
                (t_ours, t_peer), _ = _medians(
                    [
                        lambda a=a, b=b: lsekit.logmatmulexp(a, b),
                        lambda a=a, b=b, be=be: be.unstable(a, b),
                    ],
                    repeats,
                )
                ratio = t_ours / t_peer
                print(
                    f"| {be.name} | {_describe(kind)} | {dtype} "
                    f"| {_uncertified(a, b)} | {1e3 * t_ours:.1f} "
                    f"| {1e3 * t_peer:.1f} | {ratio:.2f} "
                    f"| {_verdict(ratio <= TIME_TARGET)} |",
                    flush=True,
                )


def table_broadcast(backends: list[Backend], n: int, repeats: int, inner: int) -> None:
    print(
        f"\n### 2. lsekit / exact broadcast `logsumexp(a[:, :, None] + "
        f"b[None], axis=1)`, M = K = N = {n}, median of {repeats} rounds "
        f"(lsekit timed {inner}x per round) (target: lsekit >= "
        f"{SPEEDUP_TARGET:g}x faster)\n"
    )
    print("NumPy peer: `scipy.special.logsumexp`; torch peer: `torch.logsumexp`.")
    for dtype in DTYPES:
        print(f"{dtype} broadcast: {_broadcast_rows(n, np.dtype(dtype).itemsize)[1]}.")
    print(
        "\n| backend | input | dtype | lsekit ms | broadcast ms | ratio "
        f"| lsekit faster by | >= {SPEEDUP_TARGET:g}x | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in KINDS:
        a64, b64 = _inputs(kind, n, np.random.default_rng(0))
        for be in backends:
            for dtype in DTYPES:
                rows = _broadcast_rows(n, np.dtype(dtype).itemsize)[0]
                a, b = be.asarray(a64, dtype), be.asarray(b64, dtype)
                (t_ours, t_peer), (o_ours, o_peer) = _medians(
                    [
                        lambda a=a, b=b: lsekit.logmatmulexp(a, b),
                        lambda a=a, b=b, be=be, rows=rows: be.broadcast(a, b, rows),
                    ],
                    repeats,
                    (inner, 1),
                )
                diff = _max_diff(be.to_numpy(o_ours), be.to_numpy(o_peer))
                del o_ours, o_peer
                speedup = t_peer / t_ours
                print(
                    f"| {be.name} | {_describe(kind)} | {dtype} "
                    f"| {1e3 * t_ours:.1f} | {1e3 * t_peer:.1f} "
                    f"| {t_ours / t_peer:.4f} | {speedup:.3g}x "
                    f"| {_verdict(speedup >= SPEEDUP_TARGET)} | {diff:.1e} |",
                    flush=True,
                )


def table_memory(n: int, n_crossed: int) -> None:
    print(
        f"\n### 3. NumPy peak extra memory (tracemalloc) / bytes of a, b and "
        f"the output (target: lsekit <= {MEMORY_TARGET:g}x)\n"
    )
    print(f"| input | size | dtype | lsekit | unstable | <= {MEMORY_TARGET:g}x |")
    print("|---|---|---|---|---|---|")
    rows = [(kind, n, dtype) for kind in KINDS for dtype in DTYPES]
    rows.append(("crossed", n_crossed, "float64"))
    for kind, size, dtype in rows:
        a64, b64 = _inputs(kind, size, np.random.default_rng(0))
        a, b = a64.astype(dtype), b64.astype(dtype)
        base = a.nbytes + b.nbytes + size * size * np.dtype(dtype).itemsize
        ours = peak(lambda a=a, b=b: lsekit.logmatmulexp(a, b)) / base
        theirs = peak(lambda a=a, b=b: NumPy().unstable(a, b)) / base
        target = _verdict(ours <= MEMORY_TARGET) if kind != "crossed" else "no target"
        print(
            f"| {_describe(kind)} | {size} | {dtype} | {ours:.2f} | {theirs:.2f} "
            f"| {target} |",
            flush=True,
        )


def table_crossed(backends: list[Backend], n: int, repeats: int, inner: int) -> None:
    print(
        f"\n### 4. Crossed maxima (gap {GAP:g}, float64): every cell repaired "
        f"exactly; M = K = N = {n}, median of {repeats} rounds (unstable timed "
        f"{inner}x per round) (no target)\n"
    )
    print(
        "The unstable formula returns inf/nan here; it is timed only to show "
        "what the repair costs over one matrix product. Run at the broadcast "
        "size, not the main one, because the exact path is M K N work "
        "(minutes per call at 1024 on torch)."
    )
    print(
        "\n| backend | repaired cells | lsekit ms | unstable ms | ratio "
        "| broadcast ms | ratio | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    a64, b64 = _inputs("crossed", n, np.random.default_rng(0))
    rows = _broadcast_rows(n, 8)[0]
    for be in backends:
        a, b = be.asarray(a64, "float64"), be.asarray(b64, "float64")
        (t_ours, t_unst, t_bc), (o_ours, _, o_bc) = _medians(
            [
                lambda a=a, b=b: lsekit.logmatmulexp(a, b),
                lambda a=a, b=b, be=be: be.unstable(a, b),
                lambda a=a, b=b, be=be: be.broadcast(a, b, rows),
            ],
            repeats,
            (1, inner, 1),
        )
        diff = _max_diff(be.to_numpy(o_ours), be.to_numpy(o_bc))
        print(
            f"| {be.name} | {_uncertified(a, b)} | {1e3 * t_ours:.1f} "
            f"| {1e3 * t_unst:.1f} | {t_ours / t_unst:.1f} | {1e3 * t_bc:.1f} "
            f"| {t_ours / t_bc:.3f} | {diff:.1e} |",
            flush=True,
        )


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _header(backends: list[Backend]) -> None:
    versions = [
        f"python {platform.python_version()}",
        f"lsekit {lsekit.__version__}",
        f"numpy {np.__version__}",
        f"scipy {scipy.__version__}",
    ]
    for be in backends:
        if isinstance(be, Torch):
            versions.append(
                f"torch {be.torch.__version__} ({be.torch.get_num_threads()} threads)"
            )
    try:
        import array_api_compat

        versions.append(f"array-api-compat {array_api_compat.__version__}")
    except ImportError:
        pass
    cpu = platform.processor() or platform.machine()
    print(f"machine: {platform.platform()}, {cpu}, {os.cpu_count()} CPUs")
    print("versions: " + ", ".join(versions))
    print(f"load average at start: {_load()} (other processes skew the timings)")


ACCURACY_SIZE = 256  # M = K = N of the accuracy table
ACCURACY_CELLS = 400  # cells sampled per input, on top of those near 0


def _exact_cell(a_row: np.ndarray, b_col: np.ndarray) -> Any:
    """``log(sum(exp(a_row + b_col)))`` in mpmath, 40 digits, exact sums."""
    import mpmath

    with mpmath.workdps(40):
        terms = [
            mpmath.fadd(x, y, exact=True)
            for x, y in zip(a_row.tolist(), b_col.tolist(), strict=True)
            if x != -np.inf and y != -np.inf
        ]
        if not terms:
            return mpmath.mpf("-inf")
        top = max(terms)
        return top + mpmath.log(mpmath.fsum(mpmath.exp(t - top) for t in terms))


def table_accuracy(n: int) -> None:
    """Worst error per cell on the typical inputs, in ulps of max(|out|, 1),
    of lsekit (NumPy) and of SciPy's logsumexp of the broadcast, on the
    cells whose exact value is below 2 in magnitude and on a random sample
    of the others (mpmath, 40 digits)."""
    print(
        f"\n### 5. Error against mpmath, in ulps of max(|out|, 1), M = K = N = "
        f"{n}: the cells with |out| < 2 and {ACCURACY_CELLS} others at random "
        "(no target; lsekit keeps a cell's value where its error bound is at "
        "most 24 such ulps)\n"
    )
    print("| input | dtype | cells | lsekit worst | scipy broadcast worst |")
    print("|---|---|---|---|---|")
    import mpmath

    for kind in KINDS:
        for dtype in DTYPES:
            rng = np.random.default_rng(7)
            a64, b64 = _inputs(kind, n, rng)
            a, b = a64.astype(dtype), b64.astype(dtype)
            out = lsekit.logmatmulexp(a, b)
            finite = np.argwhere(np.isfinite(out))
            near = finite[np.abs(out[tuple(finite.T)]) < 2.0]
            pick = finite[rng.choice(len(finite), ACCURACY_CELLS, replace=False)]
            worst = [0.0, 0.0]
            for i, j in np.concatenate([near, pick]):
                exact = _exact_cell(a[i].astype(np.float64), b[:, j].astype(np.float64))
                unit = float(np.spacing(np.array(max(abs(float(exact)), 1.0), dtype)))
                with np.errstate(all="ignore"):
                    ref = special.logsumexp(a[i] + b[:, j])
                for slot, got in enumerate((out[i, j], ref)):
                    err = abs(mpmath.mpf(float(got)) - exact) / unit
                    worst[slot] = max(worst[slot], float(err))
            print(
                f"| {_describe(kind)} | {dtype} | {len(near) + len(pick)} "
                f"| {worst[0]:.2f} | {worst[1]:.2f} |"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, help="M = K = N (default 1024)")
    parser.add_argument(
        "--broadcast-size", type=int, help="size against the broadcast (512)"
    )
    parser.add_argument("--repeats", type=int, help="timed repeats (7)")
    parser.add_argument(
        "--broadcast-repeats", type=int, help="repeats of the slow cases (3)"
    )
    parser.add_argument(
        "--backend",
        action="append",
        choices=("numpy", "torch"),
        help="repeatable; default both",
    )
    parser.add_argument(
        "--no-accuracy", action="store_true", help="skip the accuracy table"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="size 256, broadcast 128, 3 repeats",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    size = args.size or (256 if quick else 1024)
    bsize = args.broadcast_size or (128 if quick else 512)
    repeats = args.repeats or (3 if quick else 7)
    brepeats = args.broadcast_repeats or 3
    backends = _backends(args.backend or ("numpy", "torch"))
    start = time.perf_counter()
    _header(backends)
    table_unstable(backends, size, repeats)
    inner = -(-repeats // brepeats)  # calls of the cheap side per round
    table_broadcast(backends, bsize, brepeats, inner)
    if any(be.name == "numpy" for be in backends):
        table_memory(size, bsize)
    table_crossed(backends, bsize, brepeats, inner)
    if not args.no_accuracy:
        table_accuracy(128 if quick else ACCURACY_SIZE)
    print(
        f"\ntotal {time.perf_counter() - start:.0f} s; load average at end: {_load()}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
