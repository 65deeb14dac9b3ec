"""``python -m lsekit demo`` and ``info``."""

from __future__ import annotations

import subprocess
import sys


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "lsekit", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_demo_on_numpy_shows_the_dominant_term():
    out = _run("demo", "--backend", "numpy")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    # The naive formula overflows on [1000]*3; lsekit gives 1000 + log 3.
    assert "1001.0986122886682" in out.stdout
    # log(1 + exp(-40)): lsekit keeps it, the naive formula prints 0.
    assert "4.2483542552915889e-18" in out.stdout
    assert "inf" in out.stdout
    # ... and so does the loss of class 0, the same quantity.
    block = out.stdout.split("[0, -40]")[1].splitlines()[:4]
    loss = next(line for line in block if "cross_entropy" in line)
    assert loss.split()[-2:] == ["0", "4.2483542552915889e-18"]


def test_demo_unknown_backend_fails_clearly():
    out = _run("demo", "--backend", "nope")
    assert out.returncode == 2
    assert "nope" in out.stderr


def test_info_lists_numpy():
    out = _run("info")
    assert out.returncode == 0, out.stderr
    assert "numpy" in out.stdout
    assert "lsekit" in out.stdout
    assert "C kernel" in out.stdout


def test_no_command_prints_usage():
    out = _run()
    assert out.returncode == 2
    assert "demo" in out.stderr
