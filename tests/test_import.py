"""``import lsekit`` stays cheap: no array library is imported with it."""

from __future__ import annotations

import subprocess
import sys

import lsekit

HEAVY = ("numpy", "torch", "jax", "cupy", "dask", "array_api_strict", "scipy")


def test_import_loads_no_array_library():
    code = (
        f"import sys, lsekit; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"imported with lsekit: {out.stdout.strip()}"
    assert out.stderr == ""


def test_public_surface():
    assert sorted(lsekit.__all__) == [
        "__version__",
        "cross_entropy",
        "log_softmax",
        "logmatmulexp",
        "logsumexp",
        "softmax",
    ]
    for name in lsekit.__all__:
        assert hasattr(lsekit, name)
