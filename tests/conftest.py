"""The ``bk`` fixture: every test that takes it runs once per backend.

Backends come from the manifests in ``backends/``; ``--backend NAME`` (or
``LSEKIT_BACKEND=NAME[,NAME...]``) selects some, and by default every CPU
backend that is installed runs. GPU backends run only when named, and skip
with a reason where no GPU is present.
"""

from __future__ import annotations

import doctest
import importlib.util
import os
import pathlib
import re
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import backends
from tests.support import Runtime, open_backend


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        default=None,
        help="backend manifest to test (repeatable); default: every CPU backend",
    )


def _selected(config: pytest.Config) -> list[str]:
    names = config.getoption("--backend") or [
        n for n in os.environ.get("LSEKIT_BACKEND", "").split(",") if n
    ]
    known = backends.load()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise pytest.UsageError(
            f"unknown backend(s) {unknown}; manifests exist for {sorted(known)}"
        )
    return names or backends.names(gpu=False)


def pytest_configure(config: pytest.Config) -> None:
    # Environment switches (JAX's x64 mode) must be set before the library
    # is first imported.
    manifests = backends.load()
    for name in _selected(config):
        for key, value in manifests[name].env.items():
            os.environ.setdefault(key, value)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bk" in metafunc.fixturenames:
        names = _selected(metafunc.config)
        metafunc.parametrize("bk", names, indirect=True, ids=names)


def _missing(source: str) -> list[str]:
    names = re.findall(r"^(?:import|from)\s+(\w+)", source, re.M)
    return [n for n in names if importlib.util.find_spec(n) is None]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A docstring shows the same call on several libraries, each block
    # opening with its imports. A block whose library is not installed is
    # skipped; the other blocks of the docstring still run.
    for item in items:
        skip = False
        for example in getattr(getattr(item, "dtest", None), "examples", ()):
            if re.match(r"(?:import|from)\s", example.source):
                skip = bool(_missing(example.source))
            if skip:
                example.options[doctest.SKIP] = True


@pytest.fixture
def session_backends(request: pytest.FixtureRequest) -> list[str]:
    """The backends this run tests (``--backend``, or every CPU one)."""
    return _selected(request.config)


@pytest.fixture
def bk(request: pytest.FixtureRequest) -> Runtime:
    return open_backend(backends.load()[request.param])
