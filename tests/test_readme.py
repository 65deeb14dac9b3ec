"""The README's examples run as written (the docs' run in ``nox -s docs``).

Each python block of README.md runs on its own. A block does not depend on
the backend under test, so it runs in one session only, that of the array
library it is about, and skips in the others (every CPU backend is selected
by default, so a plain ``pytest`` runs them all): where its backend's
library is tested, NumPy's for a block that imports no other array library.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import importlib.util
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

import backends

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


BLOCKS = _blocks(README)


def _needs(code: str) -> list[str]:
    return re.findall(r"^(?:>>> )?(?:import|from)\s+(\w+)", code, re.M)


# The top-level module of each backend: torch for torch and torch_cuda.
LIBRARIES = {name: b.module.split(".")[0] for name, b in backends.load().items()}


def _libraries(code: str) -> list[str]:
    """The array libraries ``code`` is about, in order: those it imports, or
    NumPy where it imports no other."""
    found = dict.fromkeys(m for m in _needs(code) if m in LIBRARIES.values())
    return [m for m in found if m != "numpy"] or ["numpy"]


def _skip_unless_tested(request: pytest.FixtureRequest, libraries: list[str]) -> None:
    tested = {LIBRARIES[n] for n in request.getfixturevalue("session_backends")}
    if not tested & set(libraries):
        names = [n for n, m in LIBRARIES.items() if m in libraries]
        pytest.skip(
            f"an example about {', '.join(libraries)}: runs with "
            + " or ".join(f"--backend {n}" for n in names)
        )


def _missing(code: str) -> list[str]:
    return [m for m in _needs(code) if importlib.util.find_spec(m) is None]


def _gpu_missing(code: str) -> str | None:
    """Why a block that needs a CUDA device cannot run, or None."""
    if "cupy" not in _needs(code):
        return None
    if importlib.util.find_spec("cupy") is None:
        return "cupy is not installed"
    cupy = importlib.import_module("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device"
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        return f"no CUDA device: {exc}"
    return None


def _run(code: str, namespace: dict[str, Any], name: str) -> None:
    if code.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(code, namespace, name, None, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test, clear_globs=False)
        assert runner.failures == 0
        namespace.update(test.globs)  # the DocTest ran on a copy
    else:
        exec(compile(code, name, "exec"), namespace)


@contextlib.contextmanager
def _jax_x64_restored(source: str) -> Iterator[None]:
    """Undo a ``jax.config.update("jax_enable_x64", ...)`` of the examples.

    A reader's script sets it once at the top; in the test session it would
    change the dtypes of every later JAX test.
    """
    if "jax" not in source or importlib.util.find_spec("jax") is None:
        yield
        return
    jax = importlib.import_module("jax")
    before = bool(jax.config.jax_enable_x64)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(request, code):
    _skip_unless_tested(request, _libraries(code))
    for module in _missing(code):
        pytest.skip(f"{module} is not installed")
    reason = _gpu_missing(code)
    if reason:
        pytest.skip(reason)
    with _jax_x64_restored(code):
        _run(code, {}, "README.md")
