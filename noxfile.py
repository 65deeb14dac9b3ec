"""The test matrix: a ``tests`` session per backend manifest, lint, types and docs.

``nox`` runs every CPU backend's tests, lint, types and the documentation
build; the GPU backends' sessions (``nox -s "tests_gpu(cupy)"``) and the
benchmarks (``nox -s bench``) run only when named.
"""

from __future__ import annotations

import pathlib
import shutil
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


# pytest-xdist: one worker per CPU. Each worker runs single-threaded, as
# the tests' arrays are small and threads would only compete for the same
# cores. ``nox -- -n 0`` runs the tests in one process.
XDIST = ["-n", "auto", "--dist", "worksteal"]
SINGLE_THREADED = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def _install(session: nox.Session, *packages: str) -> None:
    """pip install, each package once, without byte-compiling every module
    of the packages (torch's take 30 s of a 45 s install); Python compiles
    those it imports."""
    session.install("--no-compile", *dict.fromkeys(packages))


def _run_tests(session: nox.Session, backend: str) -> None:
    manifest = MANIFESTS[backend]
    _install(session, ".[test]", "setuptools", *REFERENCE, *manifest.install)
    # The tests import lsekit from this tree (tests/conftest.py puts it
    # first on the path), so its C kernel is built here too; where a C
    # compiler is found, a test fails if it was not.
    session.run("python", "setup.py", "-q", "build_ext", "--inplace")
    if shutil.which("cc") or shutil.which("gcc"):
        session.env["LSEKIT_REQUIRE_KERNEL"] = "1"
    session.env.update(SINGLE_THREADED)
    session.env.update(manifest.env)
    session.run(
        "pytest",
        "tests",
        "lsekit",
        f"--backend={backend}",
        *XDIST,
        *session.posargs,
    )
    if manifest.cluster_tests:
        # In one pytest process, which starts one cluster for them all.
        session.run(
            "pytest",
            *manifest.cluster_tests,
            f"--backend={backend}",
            "--dask-cluster",
            "-n",
            "0",
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


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """The benchmark suite on every CPU backend (``nox -s bench -- --quick``)."""
    installs = [pkg for name in CPU for pkg in MANIFESTS[name].install]
    _install(session, ".[bench]", *installs)
    session.run("python", "-m", "lsekit", "bench", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    _install(session, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def types(session: nox.Session) -> None:
    """mypy over the package."""
    _install(session, "mypy", ".")
    session.run("mypy")


# The worked examples run on these libraries, installed and configured as
# their test sessions install them (torch pinned to its CPU wheel, JAX in
# x64 mode on the CPU).
DOCS_LIBRARIES = ("torch", "jax", "dask")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation (warnings are errors) and run its examples."""
    installs = [pkg for name in DOCS_LIBRARIES for pkg in MANIFESTS[name].install]
    _install(session, ".[docs]", *installs)
    for name in DOCS_LIBRARIES:
        session.env.update(MANIFESTS[name].env)
    # A fresh build every time: Sphinx reports a warning only when it reads
    # the page, and the figures depend on lsekit, which Sphinx does not track.
    build = pathlib.Path("docs/_build")
    shutil.rmtree(build, ignore_errors=True)
    shutil.rmtree("docs/generated", ignore_errors=True)
    common = ["-W", "--keep-going", "-d", str(build / "doctrees"), "docs"]
    session.run("sphinx-build", "-b", "html", *common, str(build / "html"))
    # The doctest builder reuses the doctrees read above: it runs every
    # docstring's Examples and every page's examples without reading again.
    session.run("sphinx-build", "-b", "doctest", *common, str(build / "doctest"))
