"""``python -m lsekit bench``: the command, its files, and its arithmetic.

No timing is asserted: only that the suite runs end to end on tiny shapes,
writes what it says, refuses what it should, and computes its ratios,
medians and targets right from given timings.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from lsekit._bench import backends, report, runner, timing
from lsekit._bench.case import BANDWIDTH, LIBRARY, MAX_SHIFT, Case, Peer, Setup
from lsekit._bench.progress import Progress
from lsekit._bench.sizes import QUICK
from lsekit._bench.targets import target_for
from lsekit._cli import main

TINY = ["--shapes", "4x8", "--matmul-sizes", "4", "--repeats", "2"]
REQUIRED = (
    "backend",
    "function",
    "peer",
    "shape",
    "dtype",
    "lsekit_ms",
    "peer_ms",
    "ratio",
    "target",
    "met",
    "lsekit_mem_x",
    "peer_mem_x",
)


def _unused() -> Setup:
    raise AssertionError("this case is not run")


def _bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["bench", *args])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_numpy_end_to_end(tmp_path, capsys):
    status, out, err = _bench(
        capsys, "--backend", "numpy", *TINY, "--output", str(tmp_path)
    )
    assert status == 0, err
    with (tmp_path / "bench.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert set(REQUIRED) <= set(reader.fieldnames or ())
        rows = list(reader)
    # Per dtype (float32, float64): three reductions against SciPy and
    # max-shift, the loss against max-shift; then the matrix product.
    assert len(rows) == 2 * (3 * 2 + 1) + 1
    assert {r["backend"] for r in rows} == {"numpy"}
    assert {r["shape"] for r in rows} == {"4x8", "4x4"}
    assert {r["dtype"] for r in rows} == {"float32", "float64"}
    peers = {(r["function"], r["peer"]) for r in rows}
    assert ("logsumexp", "scipy.special.logsumexp") in peers
    assert ("cross_entropy", "max-shift by hand") in peers
    assert ("logmatmulexp", "max-shift matmul") in peers
    for r in rows:
        ours, theirs, ratio = (float(r[k]) for k in ("lsekit_ms", "peer_ms", "ratio"))
        assert ours > 0
        assert theirs > 0
        assert ratio == pytest.approx(ours / theirs, rel=1e-2)
        assert float(r["lsekit_mem_x"]) >= 0
        assert float(r["peer_mem_x"]) >= 0
        if r["function"] == "logmatmulexp":
            assert (r["target"], r["met"]) == ("", "")
        else:
            assert r["target"] in ("<= 1", "<= 1.2")
            assert r["met"] in ("yes", "no")
    md = (tmp_path / "bench.md").read_text(encoding="utf-8")
    assert md == out
    assert "### numpy" in md
    assert "| logsumexp | scipy.special.logsumexp | 4x8 |" in md
    env = json.loads((tmp_path / "environment.json").read_text(encoding="utf-8"))
    assert env["versions"]["numpy"] == np.__version__
    assert {"cpu", "python", "lsekit"} <= set(env["machine"])
    # One progress line per case off a terminal, and the plot either drawn
    # or said to be skipped.
    assert "[9/9" in err
    assert (tmp_path / "bench.png").exists() != ("plot skipped" in err)


def test_other_backends_end_to_end(session_backends, tmp_path):
    # The backends of this test session that the suite has, each timed on
    # tiny shapes in a fresh process (JAX's x64 switch is process-wide).
    names = [n for n in session_backends if n in backends.NAMES and n != "numpy"]
    # Training steps, on the same libraries: their gradients must agree.
    names += [f"{n}_train" for n in names if f"{n}_train" in backends.NAMES]
    names = [n for n in names if backends.load(n).available() is None]
    if not names:
        pytest.skip("no backend of the suite but numpy in this run")
    command = ["bench", "--backend", *names, *TINY, "--output", str(tmp_path)]
    out = subprocess.run(
        [sys.executable, "-m", "lsekit", *command],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    with (tmp_path / "bench.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["backend"] for r in rows} == set(names)
    for r in rows:
        assert float(r["ratio"]) > 0, r


def test_bandwidth_cases_on_a_host_copy():
    # The GPU cases' arithmetic, run on NumPy with a host copy standing in
    # for the device's.
    import lsekit._bench.numpy as numpy_backend
    from lsekit._bench import bandwidth, suite

    def copier(src):
        dst = np.empty_like(src)
        return lambda: np.copyto(dst, src)

    lib = dataclasses.replace(numpy_backend._library(), copier=copier)
    sizes = dataclasses.replace(QUICK, bandwidth_shape=(8, 16))
    cases = bandwidth.cases("cupy", sizes, lambda: lib)
    assert [c.function for c in cases] == ["logsumexp", "log_softmax"]
    for case in cases:
        own, copy = runner.run_case(case, 2)
        assert (own.kind, own.failed, own.target) == (LIBRARY, False, None)
        assert (copy.kind, copy.peer, copy.failed) == (BANDWIDTH, "device copy", False)
        assert str(copy.target) == ">= 0.8"
        assert copy.ratio > 0
        assert copy.note.startswith("lsekit ")
    with pytest.raises(TypeError, match="copier"):
        bandwidth.cases("cupy", sizes, numpy_backend._library)[0].setup()
    assert suite.lsekit_call("log_softmax")(np.zeros(2)).shape == (2,)


def test_unknown_backend_is_refused(tmp_path, capsys):
    out_dir = tmp_path / "out"
    status, out, err = _bench(
        capsys, "--backend", "numpy", "nope", *TINY, "--output", str(out_dir)
    )
    assert status == 2
    assert "unknown backend 'nope'" in err
    assert "numpy" in err  # the known ones are listed
    assert out == ""
    assert not out_dir.exists()


def test_unavailable_backend_is_skipped(tmp_path, capsys, monkeypatch):
    import lsekit._bench.cupy

    monkeypatch.setattr(lsekit._bench.cupy, "available", lambda: "no GPU here")
    status, out, err = _bench(
        capsys, "--backend", "numpy", "cupy", *TINY, "--output", str(tmp_path)
    )
    assert status == 0, err
    assert "skipped cupy: no GPU here" in err
    assert "Skipped: cupy (no GPU here)." in out


def test_nothing_to_run_is_an_error(tmp_path, capsys, monkeypatch):
    import lsekit._bench.cupy

    monkeypatch.setattr(lsekit._bench.cupy, "available", lambda: "no GPU here")
    status, _, err = _bench(capsys, "--backend", "cupy", "--output", str(tmp_path))
    assert status == 2
    assert "no backend can run here" in err


@pytest.mark.parametrize(
    "args", [["--repeats", "0"], ["--shapes", "4by8"], ["--matmul-sizes", "x"]]
)
def test_bad_options_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--backend", "numpy", *args])
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_alternate_interleaves_and_divides_by_inner():
    order: list[str] = []
    calls = [lambda: order.append("ours"), lambda: order.append("peer")]
    # Readings of a fake clock, two per batch: ours takes 2, 4, 6 s a batch
    # of two calls, the peer 1, 1, 4 s.
    readings = iter([0, 2, 2, 3, 3, 7, 7, 8, 8, 14, 14, 18])
    times = timing.alternate(calls, repeats=3, inner=2, clock=lambda: next(readings))
    assert order == ["ours", "ours", "peer", "peer"] * 3
    assert times == [[1.0, 2.0, 3.0], [0.5, 0.5, 2.0]]
    ours, peer = (timing.median(t) for t in times)
    assert (ours, peer) == (2.0, 0.5)
    assert timing.ratio(ours, peer) == 4.0


def test_alternate_with_a_batch_size_per_call():
    order: list[str] = []
    calls = [lambda: order.append("ours"), lambda: order.append("peer")]
    readings = iter([0, 3, 3, 4, 4, 10, 10, 11])
    times = timing.alternate(
        calls, repeats=2, inner=[3, 1], clock=lambda: next(readings)
    )
    assert order == ["ours"] * 3 + ["peer"] + ["ours"] * 3 + ["peer"]
    assert times == [[1.0, 2.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="one inner count per call"):
        timing.alternate(calls, repeats=1, inner=[1])


def test_row_arithmetic_and_targets():
    case = Case("numpy", "logsumexp", (4, 8), "float32", setup=_unused)
    scipy_peer = Peer("scipy.special.logsumexp", LIBRARY, call=lambda: None)
    by_hand = Peer("max-shift by hand", MAX_SHIFT, call=lambda: None)
    r = runner.row(case, scipy_peer, 0.004, 0.005, repeats=3)
    assert (r.lsekit_ms, r.peer_ms, r.ratio) == pytest.approx((4.0, 5.0, 0.8))
    assert (str(r.target), r.met) == ("<= 1", True)
    r = runner.row(case, by_hand, 0.0125, 0.01)
    assert (r.ratio, str(r.target), r.met) == (pytest.approx(1.25), "<= 1.2", False)
    # Bandwidth: lsekit reads 1 GB in 0.5 s, the copy moves 2 GB in 0.8 s.
    gpu = Case("cupy", "logsumexp", (4, 8), "float32", setup=_unused)
    copy = Peer("device copy", BANDWIDTH, call=lambda: None, bytes_moved=2 * 10**9)
    r = runner.row(gpu, copy, 0.5, 0.8, ours_bytes=10**9)
    assert r.ratio == pytest.approx(0.8)
    assert (str(r.target), r.met) == (">= 0.8", True)
    assert r.note == "lsekit 2 GB/s, copy 2.5 GB/s"


def test_target_table():
    assert str(target_for("numpy", LIBRARY, "softmax")) == "<= 1"
    assert str(target_for("numpy", MAX_SHIFT, "cross_entropy")) == "<= 1.2"
    assert str(target_for("torch", LIBRARY, "log_softmax")) == "<= 1.25"
    assert str(target_for("torch_compile", LIBRARY, "logsumexp")) == "<= 1.1"
    assert str(target_for("jax", LIBRARY, "cross_entropy")) == "<= 1.1"
    assert str(target_for("torch_cuda", BANDWIDTH, "log_softmax")) == ">= 0.8"
    assert target_for("numpy", MAX_SHIFT, "logmatmulexp") is None
    assert target_for("torch", MAX_SHIFT, "logsumexp") is None
    assert target_for("dask", MAX_SHIFT, "logsumexp") is None


def _case(ours: object, peer: object) -> Case:
    def setup() -> Setup:
        return Setup(
            ours=lambda: ours,
            peers=(Peer("peer", LIBRARY, call=lambda: peer),),
            input_bytes=8,
        )

    return Case("numpy", "logsumexp", (1, 2), "float32", setup=setup)


def test_disagreeing_peer_gets_no_ratio():
    (r,) = runner.run_case(_case(np.array([1.0, 2.0]), np.array([1.0, 3.0])), 2)
    assert r.failed
    assert math.isnan(r.ratio)
    assert r.met is False
    assert "disagree" in r.note
    (r,) = runner.run_case(_case(np.array([1.0, 2.0]), np.array([1.0, 2.0])), 2)
    assert not r.failed
    assert r.ratio > 0


def test_failing_case_is_reported_not_raised():
    def broken() -> Setup:
        raise RuntimeError("no such kernel")

    case = Case("numpy", "softmax", (1, 2), "float32", setup=broken)
    (r,) = runner.run_case(case, 2)
    assert r.failed
    assert r.note == "setup failed: RuntimeError: no such kernel"
    outcome = runner.Outcome([r], {}, {}, QUICK, "quick", backends=["numpy"])
    assert "| softmax | — | 1x2 | float32 | — | — | failed |" in report.markdown(
        outcome, _machine()
    )


def _machine() -> dict[str, str]:
    keys = ("platform", "cpu", "cpus", "memory", "load average", "python")
    return {**dict.fromkeys(keys, "?"), "lsekit": "0", "array-api-compat": "0"}


def test_ctrl_c_still_writes_what_was_measured(tmp_path, capsys, monkeypatch):
    real = runner.run_case
    calls = []

    def stop_at_the_third(case, repeats):
        calls.append(case)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(case, repeats)

    monkeypatch.setattr(runner, "run_case", stop_at_the_third)
    status, out, err = _bench(
        capsys, "--backend", "numpy", *TINY, "--output", str(tmp_path)
    )
    assert status == 130
    assert "interrupted after 2 of 9 cases" in err
    assert "(interrupted after 2 of 9 cases)" in out
    with (tmp_path / "bench.csv").open(newline="") as f:
        assert len(list(csv.DictReader(f))) == 2 * 2  # logsumexp, softmax


def test_untargeted_cases_run_last(monkeypatch):
    """The cases without a target (logmatmulexp's) run after every other
    backend's cases, each backend's order kept: a matrix product leaves
    BLAS threads busy for a while after it."""
    order = []

    def record(case, repeats):
        order.append(case.label)
        return []

    def backend(name):
        functions = ("logsumexp", "logmatmulexp", "softmax")
        cases = [Case(name, f, (2, 3), "float32", setup=dict) for f in functions]
        return backends.Backend(name, lambda: None, dict, lambda sizes: cases)

    monkeypatch.setattr(runner, "run_case", record)
    runner.run([backend("numpy"), backend("torch")], QUICK)
    assert order == [
        "numpy logsumexp 2x3 float32",
        "numpy softmax 2x3 float32",
        "torch logsumexp 2x3 float32",
        "torch softmax 2x3 float32",
        "numpy logmatmulexp 2x3 float32",
        "torch logmatmulexp 2x3 float32",
    ]


def test_plot_is_skipped_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = runner.row(
        Case("numpy", "logsumexp", (4, 8), "float32", setup=_unused),
        Peer("scipy.special.logsumexp", LIBRARY, call=lambda: None),
        0.002,
        0.001,
    )
    outcome = runner.Outcome([r], {}, {}, QUICK, "quick", backends=["numpy"])
    why = report.plot(outcome, tmp_path / "bench.png")
    assert why is not None
    assert "matplotlib" in why
    assert not (tmp_path / "bench.png").exists()


def test_plot_is_drawn_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    case = Case("numpy", "logsumexp", (4, 8), "float32", setup=_unused)
    rows = [
        runner.row(case, Peer("scipy.special.logsumexp", LIBRARY, lambda: 0), 2, 1),
        runner.row(case, Peer("max-shift by hand", MAX_SHIFT, lambda: 0), 1, 2),
        runner.run_case(_case(np.zeros(2), np.ones(2)), 1)[0],
    ]
    assert rows[-1].failed
    outcome = runner.Outcome(rows, {}, {}, QUICK, "quick", backends=["numpy"])
    assert report.plot(outcome, tmp_path / "bench.png") is None
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(stream, total=4)
    progress.start("numpy logsumexp")
    progress.start("numpy softmax")
    progress.close()
    text = stream.getvalue()
    assert text.startswith("\r[------------------------] 1/4")
    assert "\r[######------------------] 2/4" in text
    assert "\r[########################] 2/4 0s done" in text
    assert text.endswith("\n")
    assert text.count("\n") == 1


def test_every_backend_module_has_the_same_names():
    # Loading a backend imports no array library: only available() does.
    for name in backends.NAMES:
        backend = backends.load(name)
        assert backend.name == name
        assert all(map(callable, (backend.available, backend.versions, backend.cases)))
    assert backends.load("numpy").available() is None


def test_bench_is_not_imported_with_lsekit():
    code = (
        "import sys, lsekit, lsekit._bench.backends; "
        "print(sorted(m for m in sys.modules if m.startswith('lsekit._bench') "
        "or m in ('numpy', 'torch', 'jax', 'scipy')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "['lsekit._bench', 'lsekit._bench.backends', " + (
        "'lsekit._bench.case', 'lsekit._bench.sizes']"
    )
