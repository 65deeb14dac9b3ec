"""Command line interface: ``python -m lsekit {demo,info,bench}``.

``demo`` sets the naive formulas next to lsekit on inputs where they fail, in
every array library that is installed; ``info`` reports the versions and
devices those libraries see; ``bench`` times lsekit against each library's
own functions (the suite lives in ``lsekit._bench``; only its list of backend
names is imported before the command runs).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import platform
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy

from . import __version__, cross_entropy, log_softmax, logsumexp, softmax
from ._bench.backends import NAMES as _BENCH_BACKENDS

__all__ = ["main"]

# Dominant terms, ties, terms far below the maximum: each defeats the naive
# formulas in float64 one way or another.
_INPUTS: tuple[tuple[float, ...], ...] = (
    (1000, 1000, 1000),
    (-1000, -1000, -1000),
    (1, 1, 1),
    (1000, 1, 2, 3),
    (-1000, 1, 2, 3),
    (1000, 1e-5, 1e-10),
    (1000, 1001, 1002),
    (-1000, -999, -998),
    (-1000, 1000, -1000, 5, 10, 0.001),
    (11, 12, -1000, 5, 10, 0.001),
    (0, -40),
    (0, 0, 0),
    (1, 2, 3),
)


class _Unavailable(Exception):
    """A backend cannot be used; the message says why."""


@dataclass(frozen=True)
class _Backend:
    name: str
    version: str
    devices: str
    asarray: Callable[[Sequence[float]], Any]
    to_float: Callable[[Any], float]
    # Set when the library imports but cannot run the demo (CuPy without a
    # GPU), so that ``info`` can still report it.
    unusable: str | None = None


def _numpy() -> _Backend:
    return _Backend(
        name="numpy",
        version=numpy.__version__,
        devices="cpu",
        asarray=lambda v: numpy.asarray(v, dtype=numpy.float64),
        to_float=float,
    )


def _import(name: str) -> Any:
    # Typed as Any: the optional libraries' annotations differ from version to
    # version, and are missing altogether where the library is not installed.
    return importlib.import_module(name)


def _torch() -> _Backend:
    torch = _import("torch")
    devices = "cpu"
    if torch.cuda.is_available():
        devices += f", {torch.cuda.device_count()} CUDA device(s)"
    return _Backend(
        name="torch",
        version=str(torch.__version__),
        devices=devices,
        asarray=lambda v: torch.tensor(v, dtype=torch.float64, device="cpu"),
        to_float=lambda x: float(x.item()),
    )


def _jax() -> _Backend:
    jax = _import("jax")
    # Without this, JAX turns every float64 request into float32.
    jax.config.update("jax_enable_x64", True)
    jnp = _import("jax.numpy")
    return _Backend(
        name="jax",
        version=str(jax.__version__),
        devices=", ".join(str(d) for d in jax.devices()),
        asarray=lambda v: jnp.asarray(v, dtype=jnp.float64),
        to_float=float,
    )


def _dask() -> _Backend:
    dask = _import("dask")
    da = _import("dask.array")

    def asarray(v: Sequence[float]) -> Any:
        # Several chunks, so that the reductions cross chunk boundaries.
        return da.from_array(numpy.asarray(v, dtype=numpy.float64), chunks=2)

    def to_float(x: Any) -> float:
        # numpy.errstate is per thread: the default threaded scheduler would
        # run the chunks outside the caller's errstate block.
        return float(x.compute(scheduler="synchronous"))

    return _Backend(
        name="dask",
        version=str(dask.__version__),
        devices="cpu",
        asarray=asarray,
        to_float=to_float,
    )


def _array_api_strict() -> _Backend:
    xp = _import("array_api_strict")
    return _Backend(
        name="array_api_strict",
        version=str(xp.__version__),
        devices="cpu",
        asarray=lambda v: xp.asarray(v, dtype=xp.float64),
        to_float=float,
    )


def _cupy() -> _Backend:
    cupy = _import("cupy")
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:
        # Without a driver or a GPU, CUDA reports through whatever exception
        # the installed CuPy build raises.
        count, why = 0, f"no CUDA device: {type(exc).__name__}: {exc}"
    else:
        why = "no CUDA device"
    return _Backend(
        name="cupy",
        version=str(cupy.__version__),
        devices=f"{count} GPU(s)",
        asarray=lambda v: cupy.asarray(v, dtype=cupy.float64),
        to_float=lambda x: float(x.item()),
        unusable=None if count > 0 else why,
    )


_LOADERS: dict[str, Callable[[], _Backend]] = {
    "numpy": _numpy,
    "torch": _torch,
    "jax": _jax,
    "dask": _dask,
    "array_api_strict": _array_api_strict,
    "cupy": _cupy,
}


def _load(name: str) -> _Backend:
    """Import a backend, or raise `_Unavailable` saying why it cannot be."""
    try:
        return _LOADERS[name]()
    except ModuleNotFoundError as exc:
        top = name.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] == top:
            raise _Unavailable("not installed") from None
        raise _Unavailable(f"import failed: {exc}") from None
    except Exception as exc:
        # A broken install fails in its own way (OSError for a missing shared
        # library, RuntimeError for a mismatched jaxlib); none should stop the
        # other backends.
        raise _Unavailable(f"import failed: {type(exc).__name__}: {exc}") from None


def _fmt(v: float) -> str:
    return f"{v:.17g}"


def _fmt_input(values: Sequence[float]) -> str:
    return "[" + ", ".join(repr(v) for v in values) + "]"


def _rows(backend: _Backend, values: Sequence[float]) -> list[tuple[str, str, str]]:
    """(quantity, naive, lsekit) for one input, all computed in ``backend``."""
    x = backend.asarray(values)
    xp = array_api_compat.array_namespace(x)
    f = backend.to_float
    # Overflow and 0/0 are the very point of the naive column; lazy backends
    # only evaluate in ``to_float``, so that belongs inside the block too.
    with numpy.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = xp.exp(x)
        s = xp.sum(e)
        log_p = xp.log(e / s)
        naive = (
            f(xp.log(s)),
            f(log_p[0]),
            f((e / s)[0]),
            f(0.0 - log_p[0]),
        )  # 0 - x: no -0 on display
    target = xp.zeros((1,), dtype=xp.int64, device=array_api_compat.device(x))
    ours = (
        f(logsumexp(x)),
        f(log_softmax(x)[0]),
        f(softmax(x)[0]),
        f(cross_entropy(xp.reshape(x, (1, -1)), target)),
    )
    labels = ("logsumexp", "log_softmax[0]", "softmax[0]", "cross_entropy, class 0")
    return [(q, _fmt(n), _fmt(o)) for q, n, o in zip(labels, naive, ours, strict=True)]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns; a row may stop short, its missing cells blank."""
    n = len(header)
    full = [[*r, *[""] * (n - len(r))] for r in (header, *rows)]
    widths = [max(len(r[i]) for r in full) for i in range(n)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) for c, w in zip(cells, widths, strict=True)
        ).rstrip()

    return [
        line(full[0]),
        line(["-" * w for w in widths]),
        *map(line, full[1:]),
    ]


def _demo_backend(backend: _Backend) -> list[str]:
    rows: list[tuple[str, str, str, str]] = []
    for values in _INPUTS:
        label = _fmt_input(values)
        for quantity, naive, ours in _rows(backend, values):
            rows.append((label, quantity, naive, ours))
            label = ""
    title = f"{backend.name} {backend.version} (float64)"
    return [title, *_table(("input", "quantity", "naive", "lsekit"), rows)]


def _resolve(names: Sequence[str]) -> tuple[list[_Backend], str | None]:
    """Load the named backends; on failure return the error message instead."""
    backends: list[_Backend] = []
    for raw in dict.fromkeys(n.lower().replace("-", "_") for n in names):
        if raw not in _LOADERS:
            known = ", ".join(_LOADERS)
            return [], f"unknown backend {raw!r} (known: {known})"
        try:
            backend = _load(raw)
        except _Unavailable as exc:
            return [], f"backend {raw!r} is not available: {exc}"
        if backend.unusable is not None:
            return [], f"backend {raw!r} is not available: {backend.unusable}"
        backends.append(backend)
    return backends, None


def _demo(parser: argparse.ArgumentParser, names: Sequence[str] | None) -> int:
    skipped: list[str] = []
    if names:
        backends, error = _resolve(names)
        if error is not None:
            parser.print_usage(sys.stderr)
            print(f"{parser.prog}: error: {error}", file=sys.stderr)
            return 2
    else:
        backends = []
        for name in _LOADERS:
            try:
                backend = _load(name)
            except _Unavailable as exc:
                skipped.append(f"{name} ({exc})")
                continue
            if backend.unusable is not None:
                skipped.append(f"{name} ({backend.unusable})")
                continue
            backends.append(backend)

    out = [
        "naive: log(sum(exp(x))), log(exp(x)/sum(exp(x))), exp(x)/sum(exp(x)),",
        "-log(exp(x)/sum(exp(x)))[0], computed in the same library as lsekit",
    ]
    for backend in backends:
        out += ["", "", *_demo_backend(backend)]
    if skipped:
        out += ["", "skipped: " + ", ".join(skipped)]
    print("\n".join(out))
    return 0


def _info() -> int:
    from ._fast import _fused

    print(f"lsekit {__version__} ({_fused.status()})")
    print(f"Python {platform.python_version()} ({platform.python_implementation()})")
    print(f"array-api-compat {array_api_compat.__version__}")
    print()
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for name in _LOADERS:
        try:
            backend = _load(name)
        except _Unavailable as exc:
            reason = str(exc)
            if reason == "not installed":
                rows.append((name, reason))
            else:
                # Kept out of the table: an error message would widen it.
                rows.append((name, "unavailable"))
                notes.append(f"{name}: {reason}")
            continue
        rows.append((name, "installed", backend.version, backend.devices))
    header = ("backend", "status", "version", "devices")
    print("\n".join([*_table(header, rows), *notes]))
    return 0


def _bench(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import dataclasses

    from ._bench import machine, report, runner
    from ._bench.progress import Progress
    from ._bench.sizes import FULL, QUICK

    sizes = QUICK if args.quick else FULL
    mode = "quick" if args.quick else "full"
    if args.shapes is not None or args.matmul_sizes is not None:
        shapes = sizes.shapes if args.shapes is None else args.shapes
        matmul = sizes.matmul if args.matmul_sizes is None else args.matmul_sizes
        sizes = dataclasses.replace(
            sizes,
            shapes=shapes,
            compiled_shapes=shapes,
            float64_shape=shapes[-1],
            matmul=matmul,
            compiled_matmul=matmul,
        )
        mode += ", custom sizes"
    if args.repeats is not None:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    try:
        backends, skipped = runner.select(args.backends)
    except ValueError as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", file=sys.stderr)
    if not backends:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: no backend can run here", file=sys.stderr)
        return 2
    outcome = runner.run(
        backends, sizes, mode=mode, skipped=skipped, progress=Progress(sys.stderr)
    )
    about = machine.describe()
    paths, no_plot = report.write(outcome, pathlib.Path(args.output), about)
    print(report.markdown(outcome, about), end="")
    if no_plot is not None:
        print(f"plot skipped: {no_plot}", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    if outcome.interrupted is not None:
        print(f"{outcome.interrupted}: the files hold those", file=sys.stderr)
        return 130
    failed = sum(1 for r in outcome.rows if r.failed)
    if failed:
        print(f"{failed} row(s) failed: see their notes", file=sys.stderr)
        return 1
    return 0


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return n


def _shapes(text: str) -> tuple[tuple[int, int], ...]:
    from ._bench.sizes import parse_shapes

    try:
        return parse_shapes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(_positive(t.strip()) for t in text.split(",") if t.strip())


def _backend_option(
    parser: argparse.ArgumentParser, names: Sequence[str], default: str
) -> None:
    parser.add_argument(
        "--backend",
        dest="backends",
        nargs="+",
        action="extend",
        metavar="NAME",
        help=f"run only these backends (of: {', '.join(names)}); default: {default}",
    )


def _prog() -> str:
    # argparse would name ``python -m lsekit`` after its __main__.py; any other
    # caller is the ``lsekit`` console script or Python code calling main().
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    return "python -m lsekit" if name == "__main__.py" else "lsekit"


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description=(
            "lsekit: accurate log-sum-exp, softmax, log_softmax and "
            "cross-entropy for every Array API library."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="{demo,info,bench}")
    demo = sub.add_parser(
        "demo",
        help="compare the naive formulas with lsekit on hard inputs",
        description=(
            "Compare log(sum(exp(x))) and friends with lsekit on inputs that "
            "overflow, underflow or lose digits, in each installed array library."
        ),
    )
    _backend_option(demo, list(_LOADERS), "every installed one")
    sub.add_parser(
        "info",
        help="show versions and the devices of each backend",
        description="Show lsekit's version and each backend's version and devices.",
    )
    bench = sub.add_parser(
        "bench",
        help="time lsekit against each library's own functions",
        description=(
            "Time lsekit against each array library's own functions and a "
            "max-shift version written in that library, on the same inputs, "
            "in the same run. Prints the ratios as markdown and writes "
            "bench.csv, bench.md, environment.json and bench.png (with "
            "matplotlib) into the output folder."
        ),
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="small shapes and few repeats: a first look, in about a minute or two",
    )
    _backend_option(bench, _BENCH_BACKENDS, "every one that can run here")
    bench.add_argument(
        "--output",
        default="bench-results",
        metavar="DIR",
        help="folder for the result files (default: bench-results)",
    )
    bench.add_argument(
        "--repeats",
        type=_positive,
        metavar="N",
        help="timed calls of each side per case (default: 5, or 3 with --quick)",
    )
    # For tests and quick experiments: shapes as ROWSxCOLS[,ROWSxCOLS...] and
    # logmatmulexp sizes as N[,N...], in place of the run's own.
    bench.add_argument("--shapes", type=_shapes, help=argparse.SUPPRESS)
    bench.add_argument("--matmul-sizes", type=_sizes, help=argparse.SUPPRESS)
    return parser, {"demo": demo, "bench": bench}


def main(argv: list[str] | None = None) -> int:
    """Run the ``python -m lsekit`` command line.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name. By default, ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 on success, 2 for a usage error (no subcommand,
        an unknown or unavailable backend), 1 where a benchmark case failed,
        130 where Ctrl-C stopped the benchmarks (after writing their files).

    Examples
    --------
    >>> from lsekit._cli import main
    >>> main(["demo", "--backend", "numpy"])  # doctest: +ELLIPSIS
    naive: ...
    0
    """
    parser, commands = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(commands["demo"], args.backends)
    if args.command == "info":
        return _info()
    if args.command == "bench":
        return _bench(commands["bench"], args)
    parser.print_help(sys.stderr)
    return 2
