"""Worst error in ulps per backend, function and dtype, next to the peers.

Runs every input family of ``tests/families.py`` through lsekit on each
installed CPU backend and through the peers' own functions (SciPy, PyTorch,
JAX), against exact mpmath references, and prints a markdown table::

    python benchmarks/accuracy.py [--backend NAME ...]

The error of logsumexp is measured in ulps of max(|result|, |max(x)|) (the
scale of the terms it is computed from); those of log_softmax and softmax in
ulps of each entry (softmax entries below the dtype's smallest normal are
left out).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("JAX_ENABLE_X64", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import mpmath  # noqa: E402
import numpy as np  # noqa: E402

import backends  # noqa: E402
import lsekit  # noqa: E402
from tests.families import FAMILIES, rows  # noqa: E402
from tests.support import (  # noqa: E402
    _import,
    exact_log_softmax,
    exact_logsumexp,
    exact_softmax,
)

DTYPES = {"float32": np.float32, "float64": np.float64}
Fn = Callable[[Any], Any]


def _ulps(got: float, exact: Any, npdt: Any, scale: float | None = None) -> float:
    if mpmath.isinf(exact) or not np.isfinite(got):
        return 0.0 if got == float(exact) else float("inf")
    ref = abs(float(exact)) if scale is None else scale
    spacing = float(np.spacing(npdt(ref)))
    if spacing == 0:
        spacing = float(np.finfo(npdt).smallest_subnormal)
    return float(abs(mpmath.mpf(got) - exact) / spacing)


def measure(
    asarray: Callable[[np.ndarray, str], Any],
    to_numpy: Callable[[Any], np.ndarray],
    funcs: dict[str, Fn],
    dtype: str,
) -> dict[str, float]:
    """Worst ulps of each function over every family."""
    npdt = DTYPES[dtype]
    tiny = float(np.finfo(npdt).smallest_normal)
    worst = dict.fromkeys(funcs, 0.0)
    for family in FAMILIES:
        for row in rows(family, npdt):
            a = asarray(row, dtype)
            if "logsumexp" in funcs:
                got = float(to_numpy(funcs["logsumexp"](a)))
                ex = exact_logsumexp(row)
                scale = max(abs(float(ex)), abs(float(row.max())))
                worst["logsumexp"] = max(
                    worst["logsumexp"], _ulps(got, ex, npdt, scale)
                )
            if "log_softmax" in funcs:
                got_v = to_numpy(funcs["log_softmax"](a)).astype(np.float64)
                for g, e in zip(got_v, exact_log_softmax(row), strict=True):
                    worst["log_softmax"] = max(
                        worst["log_softmax"], _ulps(float(g), e, npdt)
                    )
            if "softmax" in funcs:
                got_v = to_numpy(funcs["softmax"](a)).astype(np.float64)
                for g, e in zip(got_v, exact_softmax(row), strict=True):
                    if e >= tiny:
                        worst["softmax"] = max(
                            worst["softmax"], _ulps(float(g), e, npdt)
                        )
    return worst


def _lsekit_funcs() -> dict[str, Fn]:
    return {
        "logsumexp": lsekit.logsumexp,
        "log_softmax": lsekit.log_softmax,
        "softmax": lsekit.softmax,
    }


def _runtime(name: str) -> tuple[Callable[..., Any], Callable[[Any], np.ndarray]]:
    from tests.support import Runtime

    module, device = _import(name)
    rt = Runtime(backends.load()[name], module, device)
    return rt.asarray, rt.to_numpy


def _peers() -> list[
    tuple[str, Callable[..., Any], Callable[[Any], Any], dict[str, Fn]]
]:
    out = []
    try:
        from scipy import special

        out.append(
            (
                "SciPy",
                lambda r, d: np.asarray(r, dtype=d),
                np.asarray,
                {
                    "logsumexp": special.logsumexp,
                    "log_softmax": special.log_softmax,
                    "softmax": special.softmax,
                },
            )
        )
    except ImportError:
        pass
    try:
        import torch

        out.append(
            (
                "PyTorch",
                lambda r, d: torch.asarray(r.astype(d)),
                lambda t: t.numpy(),
                {
                    "logsumexp": lambda t: torch.logsumexp(t, 0),
                    "log_softmax": lambda t: torch.log_softmax(t, 0),
                    "softmax": lambda t: torch.softmax(t, 0),
                },
            )
        )
    except ImportError:
        pass
    try:
        import jax
        import jax.numpy as jnp

        out.append(
            (
                "JAX",
                lambda r, d: jnp.asarray(r.astype(d)),
                np.asarray,
                {
                    "logsumexp": jax.nn.logsumexp,
                    "log_softmax": jax.nn.log_softmax,
                    "softmax": jax.nn.softmax,
                },
            )
        )
    except ImportError:
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", help="lsekit backend(s)")
    args = parser.parse_args(argv)
    names = args.backend or backends.names(gpu=False)
    print("| implementation | dtype | logsumexp | log_softmax | softmax |")
    print("|---|---|---|---|---|")
    for name in names:
        try:
            asarray, to_numpy = _runtime(name)
        except ImportError as exc:
            print(f"| lsekit on {name} | not installed ({exc}) | | | |")
            continue
        for dtype in DTYPES:
            w = measure(asarray, to_numpy, _lsekit_funcs(), dtype)
            cells = " | ".join(f"{w[k]:.2f}" for k in _lsekit_funcs())
            print(f"| lsekit on {name} | {dtype} | {cells} |", flush=True)
    for title, asarray_p, to_numpy_p, funcs in _peers():
        for dtype in DTYPES:
            w = measure(asarray_p, to_numpy_p, funcs, dtype)
            cells = " | ".join(f"{w[k]:.2f}" for k in _lsekit_funcs())
            print(f"| {title} | {dtype} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
