"""The ``bk`` fixture: every test that takes it runs once per backend.

Backends come from the manifests in ``backends/``; ``--backend NAME`` (or
``LSEKIT_BACKEND=NAME[,NAME...]``) selects some, and by default every CPU
backend that is installed runs. GPU backends run only when named, and skip
with a reason where no GPU is present.

``--dask-cluster`` computes every Dask graph of the run on a
``dask.distributed.LocalCluster`` of worker processes instead of Dask's
default threaded scheduler: the graphs travel to other processes, as they
do on a real cluster (the ``dask_client`` fixture).
"""

from __future__ import annotations

import doctest
import importlib.util
import os
import pathlib
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import backends
from tests.support import Runtime, open_backend

# Worker processes of the session's LocalCluster, one thread each: two,
# as CI has two cores, and as many as it takes to send data between them.
CLUSTER_WORKERS = 2


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        default=None,
        help="backend manifest to test (repeatable); default: every CPU backend",
    )
    parser.addoption(
        "--dask-cluster",
        action="store_true",
        help="compute Dask graphs on a dask.distributed LocalCluster of "
        f"{CLUSTER_WORKERS} worker processes, started once for the session",
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


@pytest.fixture(scope="session")
def dask_client(request: pytest.FixtureRequest) -> Iterator[Any]:
    """With ``--dask-cluster``, the ``distributed.Client`` of a LocalCluster
    of worker processes, the default scheduler of every Dask computation
    until the session ends; None without it (Dask's default scheduler)."""
    if not request.config.getoption("--dask-cluster"):
        yield None
        return
    distributed = pytest.importorskip(
        "distributed", reason="--dask-cluster needs dask.distributed"
    )
    # No dashboard: its web server would need bokeh, and a fixed port.
    with (
        distributed.LocalCluster(
            n_workers=CLUSTER_WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(autouse=True)
def _dask_scheduler(request: pytest.FixtureRequest) -> None:
    # The cluster starts with the first test that could use it, not at
    # collection, and only where --dask-cluster asks for it.
    if request.config.getoption("--dask-cluster"):
        request.getfixturevalue("dask_client")
