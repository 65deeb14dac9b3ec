"""Worst error in ulps per backend, function and dtype, next to the peers.

Runs every input family of ``tests/families.py`` through lsekit on each
installed CPU backend and through the peers' own functions (SciPy, PyTorch,
JAX), against exact mpmath references, and prints a markdown table (with
the float32 rows of NumPy's, PyTorch's and JAX's other kernels, which take
float32 arrays where lsekit's C kernel was not built)::

    python benchmarks/accuracy.py [--backend NAME ...]

The error of logsumexp is measured in ulps of max(|result|, |max(x)|) (the
scale of the terms it is computed from); those of log_softmax and softmax in
ulps of each entry (softmax entries below the dtype's smallest normal are
left out). cross_entropy (per example, ``reduction="none"``) is measured in
ulps of each loss, for the targets at each row's maximum (the tiny loss of a
confident, correct prediction), its minimum and a middle entry.
"""

from __future__ import annotations

import argparse
import importlib
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
    Runtime,
    _import,
    exact_log_softmax,
    exact_logsumexp,
    exact_softmax,
)

DTYPES = {"float32": np.float32, "float64": np.float64}
# The backends whose eager kernels take small float32 arrays in float64.
BLOCKED = ("numpy", "torch")
COLUMNS = ("logsumexp", "log_softmax", "softmax", "cross_entropy")
Fn = Callable[..., Any]


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
            if "cross_entropy" in funcs:
                targets = np.array([np.argmax(row), np.argmin(row), row.size // 2])
                batch = asarray(np.stack([row] * targets.size), dtype)
                got_v = to_numpy(funcs["cross_entropy"](batch, targets))
                exact = exact_log_softmax(row)
                for g, t in zip(got_v.astype(np.float64), targets, strict=True):
                    worst["cross_entropy"] = max(
                        worst["cross_entropy"], _ulps(float(g), -exact[t], npdt)
                    )
    return worst


def _lsekit_funcs(rt: Runtime) -> dict[str, Fn]:
    return {
        "logsumexp": lsekit.logsumexp,
        "log_softmax": lsekit.log_softmax,
        "softmax": lsekit.softmax,
        "cross_entropy": lambda x, y: lsekit.cross_entropy(
            x, rt.asarray(y, None), reduction="none"
        ),
    }


def _runtime(name: str) -> Runtime:
    module, device = _import(name)
    return Runtime(backends.load()[name], module, device)


def _peers() -> list[
    tuple[str, Callable[..., Any], Callable[[Any], Any], dict[str, Fn]]
]:
    out = []
    try:
        import scipy
        from scipy import special

        out.append(
            (
                f"SciPy {scipy.__version__}",
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
                f"PyTorch {torch.__version__.split('+')[0]}",
                lambda r, d: torch.asarray(r.astype(d)),
                lambda t: t.numpy(),
                {
                    "logsumexp": lambda t: torch.logsumexp(t, 0),
                    "log_softmax": lambda t: torch.log_softmax(t, 0),
                    "softmax": lambda t: torch.softmax(t, 0),
                    "cross_entropy": lambda t, y: torch.nn.functional.cross_entropy(
                        t, torch.asarray(y), reduction="none"
                    ),
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
                f"JAX {jax.__version__}",
                lambda r, d: jnp.asarray(r.astype(d)),
                np.asarray,
                {
                    "logsumexp": jax.nn.logsumexp,
                    "log_softmax": jax.nn.log_softmax,
                    "softmax": jax.nn.softmax,
                    # The integer-label loss as optax writes it.
                    "cross_entropy": lambda t, y: (
                        -jnp.take_along_axis(
                            jax.nn.log_softmax(t, axis=-1), jnp.asarray(y)[:, None], -1
                        )[:, 0]
                    ),
                },
            )
        )
    except ImportError:
        pass
    return out


def _cells(worst: dict[str, float]) -> str:
    return " | ".join(f"{worst[k]:.2f}" if k in worst else "n/a" for k in COLUMNS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", help="lsekit backend(s)")
    args = parser.parse_args(argv)
    names = args.backend or backends.names(gpu=False)
    print("| implementation | dtype | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for name in names:
        try:
            rt = _runtime(name)
        except ImportError as exc:
            print(f"| lsekit on {name} | not installed ({exc}) |" + " |" * 4)
            continue
        for dtype in DTYPES:
            w = measure(rt.asarray, rt.to_numpy, _lsekit_funcs(rt), dtype)
            print(f"| lsekit on {name} | {dtype} | {_cells(w)} |", flush=True)
        if name in BLOCKED:
            # Each row here is a small array, which the C kernel of
            # lsekit._fast._fused takes where it was built. Without it, such
            # arrays take the float64 kernels of lsekit._fast._widened, and
            # larger ones the blocked kernels, measured by lowering the
            # threshold.
            kernels = importlib.import_module(f"lsekit._fast.{name}")
            fused = importlib.import_module("lsekit._fast._fused")
            small, fused.ENABLED = kernels.SMALL, False
            for label, size in (("small arrays", small), ("blocked kernels", 0)):
                kernels.SMALL = size
                w = measure(rt.asarray, rt.to_numpy, _lsekit_funcs(rt), "float32")
                print(
                    f"| lsekit on {name}, no C kernel, {label} | float32 "
                    f"| {_cells(w)} |"
                )
            kernels.SMALL, fused.ENABLED = small, True
        if name == "jax":
            # JAX's log_softmax and softmax call the C kernel from XLA on the
            # CPU, where it was built; without it, the traced kernels.
            fused = importlib.import_module("lsekit._fast._fused")
            fused.ENABLED = False
            w = measure(rt.asarray, rt.to_numpy, _lsekit_funcs(rt), "float32")
            print(f"| lsekit on jax, no C kernel | float32 | {_cells(w)} |")
            fused.ENABLED = True
            # Without x64 mode, the kernel takes every function, and the
            # standard-only path computes in compensated float32.
            jax = importlib.import_module("jax")
            if hasattr(jax, "enable_x64"):
                with jax.enable_x64(False):
                    for label, on in (("", True), (", no C kernel", False)):
                        fused.ENABLED = on
                        w = measure(
                            rt.asarray, rt.to_numpy, _lsekit_funcs(rt), "float32"
                        )
                        print(
                            f"| lsekit on jax, x64 mode off{label} | float32 "
                            f"| {_cells(w)} |"
                        )
                fused.ENABLED = True
    for title, asarray_p, to_numpy_p, funcs in _peers():
        for dtype in DTYPES:
            w = measure(asarray_p, to_numpy_p, funcs, dtype)
            print(f"| {title} | {dtype} | {_cells(w)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
