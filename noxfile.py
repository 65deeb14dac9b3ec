"""The test matrix: one ``tests`` session per backend manifest, plus lint and types.

``nox`` runs every CPU backend's tests, lint and types; the GPU backends'
sessions (``nox -s "tests_gpu(cupy)"``) run only when named.
"""

from __future__ import annotations

import pathlib
import sys

import nox

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import backends

nox.options.default_venv_backend = "virtualenv"
nox.options.error_on_missing_interpreters = True

MANIFESTS = backends.load()
CPU = [name for name, b in MANIFESTS.items() if not b.gpu]
GPU = [name for name, b in MANIFESTS.items() if b.gpu]
# PyTorch is the independent reference of the cross-entropy tests, so it is
# installed in every session, whatever the backend under test.
REFERENCE = MANIFESTS["torch"].install


def _run_tests(session: nox.Session, backend: str) -> None:
    manifest = MANIFESTS[backend]
    session.install(".[test]", *dict.fromkeys([*REFERENCE, *manifest.install]))
    session.env.update(manifest.env)
    session.run(
        "pytest",
        "tests",
        "lsekit",
        f"--backend={backend}",
        *session.posargs,
    )


@nox.session
@nox.parametrize("backend", CPU, ids=CPU)
def tests(session: nox.Session, backend: str) -> None:
    """Run the test suite on one CPU backend."""
    _run_tests(session, backend)


@nox.session(default=False)
@nox.parametrize("backend", GPU, ids=GPU)
def tests_gpu(session: nox.Session, backend: str) -> None:
    """Run the test suite on one GPU backend (needs a CUDA device)."""
    _run_tests(session, backend)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def types(session: nox.Session) -> None:
    """mypy over the package."""
    session.install("mypy", ".")
    session.run("mypy")
