"""The C kernel of float32 rows on NumPy, eager PyTorch and JAX's CPU
(``lsekit._fast._fused``, ``_kernel.c``), against exact references (mpmath,
60 digits).

The other tests run it wherever it was built (every float32 array on
NumPy and PyTorch takes it, JAX's ``log_softmax`` and ``softmax``, and
without x64 mode JAX's ``logsumexp`` and loss too);
here: its terms at float64's precision, its narrower paths (AVX2 on CPUs
with AVX-512; the scalar one, for a row's last entries and CPUs without
AVX2), its threads, the library without it, and
its XLA custom calls.
"""

from __future__ import annotations

import importlib
import os

import mpmath
import numpy as np
import pytest

from lsekit import cross_entropy, log_softmax, logsumexp, softmax
from lsekit._fast import _fused
from tests.families import FAMILIES
from tests.support import (
    assert_float32_family,
    exact_log_softmax,
    exact_logsumexp,
    exact_softmax,
    jax_x64,
    require_kernel,
    ulp_error,
)

EAGER = {"numpy": "lsekit._fast.numpy", "torch": "lsekit._fast.torch"}

PUBLIC = {
    "logsumexp": lambda x: logsumexp(x, axis=1),
    "log_softmax": lambda x: log_softmax(x, axis=1),
    "softmax": lambda x: softmax(x, axis=1),
}


@pytest.fixture
def ops(bk):
    """The eager kernel module of ``bk``, where the C kernel is built."""
    if bk.name not in EAGER:
        pytest.skip(f"{bk.name} has no eager kernels")
    require_kernel()
    return importlib.import_module(EAGER[bk.name])


# The kernel's paths, by the level its ``vector`` takes, and what a CPU
# needs for each.
PATHS = {"avx512": (2, "AVX-512"), "avx2": (1, "AVX2 and FMA"), "scalar": (0, "")}


def _take_path(name: str) -> None:
    """Send every row through the path ``name`` of ``PATHS``, or skip where
    the CPU lacks it."""
    level, needs = PATHS[name]
    if _fused._load().vector(level) != level:
        _fused._load().vector(99)
        pytest.skip(f"this CPU has no {needs}")


@pytest.fixture(params=list(PATHS))
def path(request, ops):
    """One of the kernel's paths (``PATHS``) for the test; the best the CPU
    has again after it."""
    _take_path(request.param)
    yield request.param
    _fused._load().vector(99)


def _split(bk, ops, x):
    """The kernel's ``(m, t, ok)`` of the float32 rows ``x``."""
    _, m, t, ok, _ = _fused.rows(ops, bk.asarray(x, "float32"), "logsumexp", False)
    return m, t, ok


def test_terms(bk, ops, path):
    """Each term ``exp(x - m)`` is within ``2**-32`` of its own, relative,
    down to ``x - m = -708``; from about -708.7 down, it is 0, and so is
    ``-inf``'s.
    Rows ``[0, d]`` in both orders: ``t = exp(d)``; ``[0, 0, d]``: a tie
    adds exactly 1. The rows are 9, 17 and 25 entries long (the rest
    ``-inf``), so that the vector loops (both halves of AVX-512's 16
    entries) and the scalar tail meet each term."""
    d = np.concatenate(
        [
            -np.logspace(-7, np.log10(700.0), 700),
            -np.linspace(0.0, 1.0, 101)[1:],
            [-707.5, -708.0, -720.0, -745.0, -800.0],
        ]
    ).astype(np.float32)
    for width, at in ((9, 8), (17, 3), (25, 12)):
        x = np.full((d.size, width), -np.inf, dtype=np.float32)
        x[:, 0] = 0.0
        x[:, at] = d
        m, t, ok = _split(bk, ops, x)
        assert ok.all()
        assert (m == 0.0).all()
        for di, ti in zip(d.astype(np.float64), t, strict=True):
            if di >= -708.0:
                exact = mpmath.exp(mpmath.mpf(float(di)))
                assert abs(mpmath.mpf(float(ti)) / exact - 1) <= 2.0**-32, (di, ti)
            else:
                assert ti == 0.0, (di, ti)
    x = np.full((d.size, 9), -np.inf, dtype=np.float32)
    x[:, 4] = d
    x[:, 1] = 0.0
    lone = _split(bk, ops, x)[1]
    x[:, 6] = 0.0
    assert np.array_equal(_split(bk, ops, x)[1], 1.0 + lone)


def test_slope(bk, ops, path):
    """The gradients' rows ``exp(x - m) scale`` (``_fused.slope``), through
    each path: within an ulp of float64's ``exp`` of the exact shift,
    rounded to float32, where a float32 shift would be off by up to ``|x
    - m|`` ulps; 0 for ``-inf``. Rows of 29 entries meet each vector loop
    and the scalar tail."""
    rng = np.random.default_rng(5)
    x = rng.normal(0.0, 30.0, size=(7, 29)).astype(np.float32)
    x[2, 5] = -np.inf
    m = x.max(axis=1).astype(np.float64)
    scale = rng.uniform(0.5, 2.0, size=7) * 10.0 ** rng.integers(-3, 3, size=7)
    got = bk.to_numpy(_fused.slope(ops, bk.asarray(x, "float32"), m, scale))
    assert got.dtype == np.float32
    exact = np.exp(x.astype(np.float64) - m[:, None]) * scale[:, None]
    rounded = exact.astype(np.float32)
    assert got[2, 5] == 0.0
    assert (np.abs(got - rounded) <= np.spacing(rounded)).all()


def test_rows_left(bk, ops, path):
    """Rows whose maximum is not finite (an ``inf``, a NaN, every entry
    ``-inf``) are left to the caller, the others done, in one array."""
    x = np.random.default_rng(3).normal(0.0, 3.0, size=(6, 21)).astype(np.float32)
    x[1, 20] = np.inf
    x[2, 5] = np.nan
    x[3] = -np.inf
    x[4, :20] = -np.inf
    _, _, ok = _split(bk, ops, x)
    assert ok.tolist() == [True, False, False, False, True, True]


@pytest.mark.parametrize("name", ["avx2", "scalar"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_other_paths_families(bk, ops, family, name):
    """The accuracy tests' families, which reach the best vector path the
    CPU has, through the narrower ones, to the same bounds."""
    _take_path(name)
    try:
        assert_float32_family(bk, family)
    finally:
        _fused._load().vector(99)


def _logits(rows: int, n: int) -> np.ndarray:
    x = np.random.default_rng(rows + n).normal(0.0, 3.0, size=(rows, n))
    x[0, 1] = x[0, 0] = x.max() + 1.0  # a tie at the maximum
    x[1, :] -= 40.0  # a negative maximum
    x[2, 3] += 30.0  # a dominant term
    return x.astype(np.float32)


@pytest.mark.parametrize("team", [True, False], ids=["library", "own"])
def test_threads(bk, ops, monkeypatch, team):
    """Rows split among threads (PyTorch's OpenMP team, or threads of the
    kernel's own) give the one thread's results, bit for bit, the losses'
    too."""
    x = _logits(37, 129)
    y = bk.asarray(np.arange(37) * 3, "int64")
    funcs = {
        **PUBLIC,
        "cross_entropy": lambda v: cross_entropy(v, y, reduction="none"),
        "smoothed": lambda v: cross_entropy(
            v, y, reduction="none", label_smoothing=0.1
        ),
    }
    single = {k: bk.to_numpy(f(bk.asarray(x, "float32"))) for k, f in funcs.items()}
    own = ops.threads()
    if team and own[1] is None:
        pytest.skip(f"{bk.name} has no OpenMP team of its own")
    monkeypatch.setattr(_fused, "PARALLEL", 0)
    monkeypatch.setattr(ops, "threads", lambda: (3, own[1] if team else None))
    if bk.name == "torch":
        before = bk.xp.get_num_threads()
        bk.xp.set_num_threads(3)
    try:
        for k, f in funcs.items():
            got = bk.to_numpy(f(bk.asarray(x, "float32")))
            assert np.array_equal(got, single[k]), k
    finally:
        if bk.name == "torch":
            bk.xp.set_num_threads(before)


def test_without_kernel(bk, ops, monkeypatch):
    """Where the kernel was not built the float32 rows take the other
    kernels, to the same results within their bounds."""
    x = _logits(5, 33)
    with_kernel = bk.to_numpy(logsumexp(bk.asarray(x, "float32"), axis=1))
    monkeypatch.setattr(_fused, "_kernel", None)
    monkeypatch.setattr(_fused, "_loaded", True)
    assert not _fused.fits(ops, bk.asarray(x, "float32"))
    without = bk.to_numpy(logsumexp(bk.asarray(x, "float32"), axis=1))
    for row, a, b in zip(x.astype(np.float64), with_kernel, without, strict=True):
        exact = exact_logsumexp(row)
        assert ulp_error(a, exact, np.float32) <= 1.0
        assert ulp_error(b, exact, np.float32) <= 1.0
    y = bk.asarray(np.arange(5) % 33, "int64")
    loss = float(bk.to_numpy(cross_entropy(bk.asarray(x, "float32"), y)))
    assert np.isfinite(loss)


def _exact_loss(row: np.ndarray, c: int, smoothing: float) -> mpmath.mpf:
    """The cross-entropy of the float64 ``row`` and class ``c``, smoothed."""
    mean = mpmath.fsum(mpmath.mpf(float(u)) for u in row) / row.size
    lse = exact_logsumexp(row)
    return lse - (1 - smoothing) * mpmath.mpf(float(row[c])) - smoothing * mean


@pytest.mark.parametrize("smoothing", [0.0, 0.25])
def test_eager_losses(bk, ops, path, monkeypatch, smoothing):
    """The loss finished in C (the eager libraries' float32 rows): within
    an ulp of mpmath's, plain and smoothed, 0 where the target is ignored,
    a confident prediction's tiny loss included; the rows that it leaves
    (a maximum that is not finite) as the library without the kernel gives
    them, and on PyTorch the gradients too."""
    x = _logits(9, 40)
    x[3, 7] = 60.0  # a loss of about exp(-50)
    x[4, 2] = np.inf
    x[5, 11] = np.nan
    x[6] = -np.inf
    x[7, 5] = np.inf
    targets = np.array([0, 1, 2, 7, 2, 0, 3, -100, 39], np.int64)

    def run():
        v = bk.asarray(x, "float32")
        if bk.name == "torch":
            v.requires_grad_(True)
        loss = cross_entropy(
            v,
            bk.asarray(targets, "int64"),
            reduction="none",
            ignore_index=-100,
            label_smoothing=smoothing,
        )
        out = {"loss": bk.to_numpy(loss)}
        if bk.name == "torch":
            finite = bk.xp.where(bk.xp.isfinite(loss), loss, 0.0)
            finite.sum().backward()
            out["gradient"] = bk.to_numpy(v.grad)
        return out

    native = run()
    got = native["loss"]
    assert got.dtype == np.float32
    rows = x.astype(np.float64)
    for i in (0, 1, 2, 3, 8):
        exact = _exact_loss(rows[i], targets[i], smoothing)
        assert ulp_error(got[i], exact, np.float32) <= 1.0, (i, got[i], exact)
    assert smoothing or got[3] < 1e-20
    assert got[7] == 0.0
    monkeypatch.setattr(_fused, "ENABLED", False)
    _assert_same_results(native, run())


def _spy(at_once):
    """A list, and a stand-in for ``at_once`` (``_fast.rows_at_once`` or
    ``loss_at_once``) that appends to it whether it took the call."""
    taken = []

    def spy(*args):
        found = at_once(*args)
        taken.append(found is not None)
        return found

    return taken, spy


def _assert_same_gradients(monkeypatch, fast, name, spy, taken, f, x):
    """On PyTorch, ``f`` of float32 rows ``x`` that autograd records is the
    at-once path's (``spy``, which stands in for ``fast.<name>``): its
    values and gradient, first and second, the general path's bit for
    bit."""
    import torch

    def run():
        v = torch.asarray(x, dtype=torch.float32).requires_grad_(True)
        out = f(v)
        seed = torch.Generator().manual_seed(1)
        g = torch.randn(out.shape, generator=seed, dtype=out.dtype)
        (dx,) = torch.autograd.grad(out, v, g, retain_graph=True)
        (again,) = torch.autograd.grad(out, v, g, create_graph=True)
        (ddx,) = torch.autograd.grad(again, v, dx)
        return [t.detach().numpy() for t in (out, dx, ddx)]

    taken.clear()
    monkeypatch.setattr(fast, name, spy)
    found = run()
    assert taken == [True]
    monkeypatch.setattr(fast, name, lambda *args: None)
    for a, b in zip(found, run(), strict=True):
        assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("kind", list(PUBLIC))
def test_rows_at_once(bk, ops, path, monkeypatch, kind):
    """float32 reduced over the last axis, computed eagerly, is the
    kernel's at once (``_fast.rows_at_once``): the same results as the
    general path's, bit for bit, in 1-D, 2-D and 3-D. Another axis,
    ``keepdims``, float64 and rows that the kernel leaves (an ``inf``, a
    NaN, and for ``logsumexp`` a result near 0 by cancellation) take the
    general path. On PyTorch, tensors that autograd records take the
    kernel at once too, with the general path's gradients."""
    import lsekit
    import lsekit._fast as fast

    taken, spy = _spy(fast.rows_at_once)

    def run(x, dtype="float32", **options):
        return bk.to_numpy(getattr(lsekit, kind)(bk.asarray(x, dtype), **options))

    x = _logits(6, 40)
    cases = [
        (x, {"axis": -1}),
        (x, {"axis": 1}),
        (x[0], {"axis": 0}),
        (x.reshape(2, 3, 40), {"axis": 2}),
    ]
    monkeypatch.setattr(fast, "rows_at_once", spy)
    found = [run(v, **options) for v, options in cases]
    assert taken == [True] * len(cases)
    monkeypatch.setattr(fast, "rows_at_once", lambda *args: None)
    for (v, options), got in zip(cases, found, strict=True):
        assert np.array_equal(got, run(v, **options), equal_nan=True), options
    monkeypatch.setattr(fast, "rows_at_once", spy)

    taken.clear()
    special = x.copy()
    special[1, 3] = np.inf
    special[2, 4] = np.nan
    run(x, axis=0)
    run(special, axis=-1)
    run(x, "float64", axis=-1)
    if kind == "logsumexp":
        run(x, axis=-1, keepdims=True)
        # Two terms of -log(2) rounded: a result near 0, whose rounding
        # the kernel's sum could reach.
        near_zero = np.full((2, 40), -np.inf, np.float32)
        near_zero[:, :2] = np.float32(-np.log(2.0))
        run(near_zero, axis=-1)
    assert not any(taken)
    if bk.name == "torch":
        _assert_same_gradients(
            monkeypatch,
            fast,
            "rows_at_once",
            spy,
            taken,
            lambda v: getattr(lsekit, kind)(v, axis=-1),
            x,
        )


@pytest.mark.parametrize("ignore", [None, -100])
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
def test_losses_at_once(bk, ops, path, monkeypatch, smoothing, ignore):
    """The loss of ``(N, C)`` float32 logits and int64 class indices,
    computed eagerly, is the kernel's at once (``_fast.loss_at_once``):
    each example's within an ulp of mpmath's, the same as the general
    path's, and reduced as it reduces them (the sums within an ulp of its
    own; an all-ignored batch's mean 0). Rows that the kernel leaves take
    the general path. On PyTorch, tensors that autograd records take the
    kernel at once too, with the general path's gradients."""
    import lsekit._fast as fast

    x = _logits(9, 40)
    x[3, 7] = 60.0  # a loss of about exp(-50)
    targets = np.array([0, 1, 2, 7, 2, 0, 3, 39, 39], np.int64)
    if ignore is not None:
        targets[[1, 5]] = ignore
    taken, spy = _spy(fast.loss_at_once)

    def run(logits=x, classes=targets, reduction="none", **options):
        loss = cross_entropy(
            bk.asarray(logits, "float32"),
            bk.asarray(classes, "int64"),
            reduction=reduction,
            ignore_index=ignore,
            label_smoothing=smoothing,
            **options,
        )
        return np.asarray(bk.to_numpy(loss))

    monkeypatch.setattr(fast, "loss_at_once", spy)
    found = {r: run(reduction=r) for r in ("none", "mean", "sum")}
    assert taken == [True] * 3
    got = found["none"]
    assert got.dtype == np.float32
    rows = x.astype(np.float64)
    for i, c in enumerate(targets):
        if c == ignore:
            assert got[i] == 0.0
            continue
        exact = _exact_loss(rows[i], c, smoothing)
        assert ulp_error(got[i], exact, np.float32) <= 1.0, (i, got[i], exact)
    assert smoothing or got[3] < 1e-20
    none = np.full_like(targets, -100)
    if ignore is not None:
        assert run(classes=none, reduction="mean") == 0.0
    # A row whose maximum is not finite, a class out of range: the
    # general path.
    special = x.copy()
    special[4, 2] = np.inf
    run(logits=special)
    if ignore is None:
        with pytest.raises(ValueError, match="class index -100"):
            run(classes=none)
    assert taken[-2:] == ([False, False] if ignore is None else [True, False])

    monkeypatch.setattr(fast, "loss_at_once", lambda *args: None)
    general = {r: run(reduction=r) for r in found}
    assert np.array_equal(found["none"], general["none"])
    for r in ("mean", "sum"):
        assert abs(found[r] - general[r]) <= np.spacing(general[r]), r
    if bk.name == "torch":
        classes = bk.asarray(targets, "int64")
        for r in ("none", "mean", "sum"):

            def loss(v, r=r):
                return cross_entropy(
                    v,
                    classes,
                    reduction=r,
                    ignore_index=ignore,
                    label_smoothing=smoothing,
                )

            _assert_same_gradients(
                monkeypatch, fast, "loss_at_once", spy, taken, loss, x
            )


def test_buffers(ops):
    """The kernel checks its buffers' sizes, and says which is wrong."""
    kernel = _fused._load()
    x = np.zeros((3, 4), dtype=np.float32)
    m, t = np.empty(3), np.empty(3)
    # The rows are as many as m has entries.
    with pytest.raises(ValueError, match="x holds 48 bytes, not 60"):
        kernel.rows(x, None, m, t, None, 5, 0, 1, False)
    with pytest.raises(ValueError, match="x holds 48 bytes, not 32"):
        kernel.rows(x, None, np.empty(2), t, None, 4, 0, 1, False)
    with pytest.raises(ValueError, match="no kernel of kind 0 over rows of 0"):
        kernel.rows(x, None, m, t, None, 0, 0, 1, False)
    with pytest.raises(ValueError, match="out holds 40 bytes, not 48"):
        kernel.rows(x, np.empty(10, dtype=np.float32), m, t, None, 4, 1, 1, False)
    assert kernel.rows(x, None, m, t, None, 4, 0, 1, False) == 0
    assert m.tolist() == [0.0] * 3
    assert t.tolist() == [3.0] * 3
    # Memory given by its address (PyTorch's tensors): as many rows as m
    # has entries. The rows whose maximum is not finite are counted.
    y = np.arange(12, dtype=np.float32).reshape(3, 4)
    y[1, 2] = np.nan
    out, m2, t2 = np.empty_like(y), np.empty(2), np.empty(2)
    at = y.__array_interface__["data"][0]
    where = out.__array_interface__["data"][0]
    assert kernel.rows(at, where, m2, t2, None, 4, 1, 1, False) == 1
    assert np.isnan(m2[1])
    np.testing.assert_allclose(out[0], y[0] - np.log(np.exp(y[0]).sum()), rtol=1e-6)
    assert kernel.rows(at, None, m, t, None, 4, 0, 1, False) == 1
    with pytest.raises(ValueError, match="t holds 16 bytes, not 24"):
        kernel.rows(at, None, m, t2, None, 4, 0, 1, False)
    with pytest.raises(ValueError, match="no kernel of kind 4"):
        kernel.rows(x, None, m, t, None, 4, 4, 1, False)
    c, ok = np.array([0, 1, 5]), np.empty(3, dtype=bool)
    loss, low = np.empty(3), np.empty(3)
    with pytest.raises(ValueError, match="target holds 16 bytes, not 24"):
        kernel.loss(x, c[:2], loss, m, low, ok, None, 4, None, 0.0, 1, False)
    with pytest.raises(ValueError, match="ok holds 2 bytes, not 3"):
        kernel.loss(x, c, loss, m, low, ok[:2], None, 4, None, 0.0, 1, False)
    with pytest.raises(ValueError, match="smoothing takes each row's total"):
        kernel.loss(x, c, loss, m, low, ok, None, 4, None, 0.5, 1, False)
    # The class out of range is left; the ignored one is 0.
    assert kernel.loss(x, c, loss, m, low, ok, None, 4, 1, 0.0, 1, False) == 1
    assert ok.tolist() == [True, True, False]
    assert loss[1] == 0.0
    assert np.isnan(loss[2])
    assert np.allclose(loss[0], np.log(4.0))
    assert np.allclose(low, np.log(4.0))
    # By address: as many rows as losses.
    at = x.__array_interface__["data"][0]
    assert (
        kernel.loss(
            at, c[:2], loss[:2], m[:2], low[:2], ok[:2], None, 4, None, 0.0, 1, False
        )
        == 0
    )
    with pytest.raises(ValueError, match="m holds 24 bytes, not 16"):
        kernel.loss(
            at, c[:2], loss[:2], m, low[:2], ok[:2], None, 4, None, 0.0, 1, False
        )
    with pytest.raises(ValueError, match="x holds 48 bytes, not 36"):
        kernel.loss(x, c, loss, m, low, ok, None, 3, None, 0.0, 1, False)


# Forward-mode AD warns about PyTorch's own use of torch.jit.script.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torch_views_and_duals(bk, ops):
    """PyTorch tensors whose memory is not their values take the general
    path: a negative view (its memory holds the values' negatives) and,
    under forward-mode AD, a dual tensor (whose tangent the kernels would
    drop); a dual tensor's result carries the tangent of PyTorch's own
    function, and lsekit's value. The others take the kernels however many
    dual levels have come and gone."""
    if bk.name != "torch":
        pytest.skip(f"{bk.name} has no negative views or dual tensors")
    import torch

    fwd = torch.autograd.forward_ad
    f = torch.nn.functional
    rng = np.random.default_rng(3)
    x = torch.asarray(rng.normal(scale=3.0, size=(5, 7)), dtype=torch.float32)
    v = torch.asarray(rng.normal(size=(5, 7)), dtype=torch.float32)
    t = torch.asarray(rng.integers(7, size=5))
    pairs = {
        "logsumexp": (
            lambda a: logsumexp(a, axis=-1),
            lambda a: torch.logsumexp(a, -1),
        ),
        "softmax": (lambda a: softmax(a, axis=-1), lambda a: f.softmax(a, -1)),
        "log_softmax": (
            lambda a: log_softmax(a, axis=-1),
            lambda a: f.log_softmax(a, -1),
        ),
        "cross_entropy": (
            lambda a: cross_entropy(a, t, reduction="none"),
            lambda a: f.cross_entropy(a, t, reduction="none"),
        ),
    }
    neg = torch._neg_view(-x)
    assert neg.is_neg()
    assert torch.equal(neg, x)
    for name, (ours, theirs) in pairs.items():
        np.testing.assert_allclose(
            ours(neg).numpy(), ours(x).numpy(), rtol=4e-7, atol=1e-7, err_msg=name
        )
        with fwd.dual_level():
            dual = fwd.make_dual(x, v)
            got = fwd.unpack_dual(ours(dual))
            want = fwd.unpack_dual(theirs(dual))
        assert got.tangent is not None, name
        np.testing.assert_allclose(
            got.primal.numpy(), ours(x).numpy(), rtol=4e-7, atol=1e-7, err_msg=name
        )
        np.testing.assert_allclose(
            got.tangent.numpy(),
            want.tangent.numpy(),
            rtol=1e-4,
            atol=1e-5,
            err_msg=name,
        )
        assert ops.eligible(x, name), name


# Inductor's and Dynamo's own DeprecationWarnings, as in test_traced.py.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")
@pytest.mark.filterwarnings(
    "ignore:<class 'torch\\.autograd\\.function\\.Function'> should not be"
    " instantiated:DeprecationWarning"
)
def test_compiled(bk, ops, monkeypatch):
    """Under ``torch.compile`` the loss, ``log_softmax`` and ``softmax`` of
    float32 rows take the kernel too, as the operator ``lsekit::rows`` that
    the graph calls: within an ulp of the eager results, and the loss's
    gradient; ``logsumexp`` takes the traced kernel. Every result within 4
    ulps of float64's, rounded; rows whose maximum is not finite as the
    eager functions give them."""
    if bk.name != "torch":
        pytest.skip(f"{bk.name} has no torch.compile")
    torch = bk.xp
    kinds = []
    original = _fused.run

    def run(ops_, x2, kind, sums=False):
        kinds.append(kind)
        return original(ops_, x2, kind, sums)

    monkeypatch.setattr(_fused, "run", run)
    x = _logits(16, 40)
    y = torch.asarray(np.arange(16) % 40)
    funcs = {**PUBLIC, "cross_entropy": lambda v: cross_entropy(v, y)}
    for name, f in funcs.items():
        eager = bk.to_numpy(f(torch.asarray(x)))
        wide = bk.to_numpy(f(torch.asarray(x, dtype=torch.float64)))
        kinds.clear()
        got = bk.to_numpy(torch.compile(f, fullgraph=True)(torch.asarray(x)))
        assert bool(kinds) == (name != "logsumexp"), name
        np.testing.assert_array_max_ulp(got, wide.astype(np.float32), 4)
        if kinds:
            np.testing.assert_array_max_ulp(got, eager, 1)
    special = x.copy()
    special[0, 3] = np.inf
    special[1, [2, 6]] = np.inf
    special[2] = -np.inf
    special[3, 4] = np.nan
    special[5, [0, 1]] = [-np.inf, np.inf]
    for name in ("log_softmax", "softmax"):
        f = funcs[name]
        eager = bk.to_numpy(f(torch.asarray(special)))
        got = bk.to_numpy(torch.compile(f, fullgraph=True)(torch.asarray(special)))
        np.testing.assert_array_equal(got[:6], eager[:6], name)
        np.testing.assert_array_max_ulp(got[6:], eager[6:], 1)
    leaf = torch.asarray(x).requires_grad_(True)
    torch.compile(funcs["cross_entropy"], fullgraph=True)(leaf).backward()
    p = torch.softmax(torch.asarray(x, dtype=torch.float64), dim=1).numpy()
    p[np.arange(16), np.arange(16) % 40] -= 1.0
    np.testing.assert_allclose(leaf.grad.numpy(), p / 16, rtol=1e-5, atol=1e-7)


@pytest.fixture
def jax_kernel(bk):
    """JAX's module of the kernel's custom calls, where the kernel is built
    and JAX runs on the CPU."""
    if bk.name != "jax":
        pytest.skip(f"{bk.name} does not call the kernel through XLA")
    require_kernel()
    from lsekit._fast import jax as module

    if bk.xp.zeros(1).devices().pop().platform != "cpu":
        pytest.skip("JAX's arrays are not on the CPU")
    assert module._registered()
    return module


NORMALISED = {k: v for k, v in PUBLIC.items() if k != "logsumexp"}


def test_jax_custom_call(bk, jax_kernel):
    """Under ``jax.jit``, ``log_softmax`` and ``softmax`` of float32 rows
    call the kernel (their compiled program holds its custom call); within
    1 and 2 ulps of float64's, rounded."""
    import jax

    x = _logits(16, 40)
    for name, f in NORMALISED.items():
        text = jax.jit(f).lower(bk.asarray(x, "float32")).as_text()
        assert f"lsekit_{name}" in text, name
        got = bk.to_numpy(jax.jit(f)(bk.asarray(x, "float32")))
        wide = bk.to_numpy(f(bk.asarray(x, "float64"))).astype(np.float32)
        np.testing.assert_array_max_ulp(got, wide, 1 if name == "log_softmax" else 2)
    # softmax's gradient takes the kernel's rows with those whose maximum
    # is not finite 0, not a masked copy of them.
    step = jax.grad(lambda v: bk.xp.sum(NORMALISED["softmax"](v) * v))
    assert "zeroed" in jax.jit(step).lower(bk.asarray(x, "float32")).as_text()
    # The dominant entry's log-probability, below float32's normal range:
    # XLA's threads flush such numbers to 0, the kernel keeps them.
    row = np.array([[-2.5, -104.75, -102.5, -104.75, -104.75, -104.25]], np.float32)
    got = bk.to_numpy(jax.jit(PUBLIC["log_softmax"])(bk.asarray(row, "float32")))
    exact = float(exact_log_softmax(row[0].astype(np.float64))[0])
    assert -1e-38 < exact < 0.0
    assert abs(float(got[0, 0]) - exact) <= np.finfo(np.float32).smallest_subnormal


def _assert_same_results(native, expected):
    """The results (and gradients) by name, with the kernel and without:
    the same NaNs and infinities, the finite values close."""
    for key, want in expected.items():
        got = native[key]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), key)
        finite = np.isfinite(want)
        np.testing.assert_array_equal(got[~finite], want[~finite], key)
        np.testing.assert_allclose(
            got[finite], want[finite], rtol=1e-5, atol=1e-6, err_msg=key
        )


def test_jax_special_rows(bk, jax_kernel, monkeypatch):
    """Rows whose maximum is not finite come out of the kernel as the
    standard-only path gives them, and so do their derivatives: reverse,
    forward (with the value ``jax.jvp`` gives beside them) and second."""
    import jax

    x = np.random.default_rng(5).normal(0.0, 3.0, size=(7, 9)).astype(np.float32)
    x[0, 3] = np.inf
    x[1, [2, 6]] = np.inf
    x[2] = -np.inf
    x[3, 4] = np.nan
    x[4, [1, 2]] = [np.inf, np.nan]
    x[5, [0, 1]] = [-np.inf, np.inf]
    w = bk.asarray(np.random.default_rng(6).normal(size=x.shape), "float32")

    def results():
        out = {}
        for name, f in NORMALISED.items():
            arg = bk.asarray(x, "float32")
            out[name] = bk.to_numpy(f(arg))
            grad = jax.grad(lambda v, f=f: bk.xp.sum(bk.xp.where(w > 0, f(v), 0.0)))
            out[name + " gradient"] = bk.to_numpy(grad(arg))
            value, tangent = jax.jvp(f, (arg,), (w,))
            out[name + " jvp value"] = bk.to_numpy(value)
            out[name + " jvp"] = bk.to_numpy(tangent)
            _, second = jax.jvp(grad, (arg,), (w,))
            out[name + " second"] = bk.to_numpy(second)
        return out

    native = results()
    monkeypatch.setattr(_fused, "ENABLED", False)
    _assert_same_results(native, results())


def test_jax_vmap_threads(bk, jax_kernel):
    """A batch under ``jax.vmap`` is more rows for the kernel, and rows
    split among its threads give the one thread's results, bit for bit."""
    import jax

    x = bk.asarray(_logits(37, 129), "float32")
    batch = bk.xp.stack([x, x[::-1]])
    kernel = _fused._load()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    for name, f in NORMALISED.items():
        kernel.xla(1, 1 << 62)
        single = bk.to_numpy(f(x))
        mapped = bk.to_numpy(jax.jit(jax.vmap(f))(batch))
        kernel.xla(3, 0)
        try:
            split = bk.to_numpy(jax.jit(lambda v, f=f: f(v + 0.0))(x))
        finally:
            kernel.xla(cores, jax_kernel.XLA_PARALLEL)
        assert np.array_equal(split, single), name
        assert np.array_equal(mapped[0], single), name
        assert np.array_equal(mapped[1], single[::-1]), name


def test_jax_without_x64(bk, jax_kernel):
    """Without JAX's x64 mode, which the traced kernels need to sum in
    float64, ``log_softmax`` and ``softmax`` still call the kernel, which
    sums in float64 of its own: within 1 and 2 ulps of float64's, and
    their gradients."""
    import jax

    if not hasattr(jax, "enable_x64"):
        pytest.skip("this JAX has no jax.enable_x64 to switch x64 mode off")
    x = _logits(16, 40)
    rows = x.astype(np.float64)
    wide = {
        "log_softmax": np.array([exact_log_softmax(r) for r in rows], np.float64),
        "softmax": np.array([exact_softmax(r) for r in rows], np.float64),
    }
    p = wide["softmax"]
    with jax.enable_x64(False):
        v = bk.xp.asarray(x)
        for name, f in NORMALISED.items():
            assert f"lsekit_{name}" in jax.jit(f).lower(v).as_text(), name
            got = bk.to_numpy(jax.jit(f)(v))
            assert got.dtype == np.float32
            bound = 1 if name == "log_softmax" else 2
            np.testing.assert_array_max_ulp(got, wide[name].astype(np.float32), bound)
        grad = bk.to_numpy(jax.grad(lambda v: PUBLIC["log_softmax"](v)[:, 0].sum())(v))
    expected = -p
    expected[:, 0] += 1.0
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)


def test_jax_reductions_x64(bk, jax_kernel, monkeypatch):
    """In x64 mode the loss calls the kernel, and so does ``logsumexp`` on
    arrays of more than ``LARGE`` entries (made small here): within an ulp
    of mpmath's, and their gradients with float64's digits of the
    log-sum-exp (the kernel's two float32 parts), which logits near 1000
    would otherwise cost ``1000 2**-24`` relative."""
    monkeypatch.setattr(jax_kernel, "LARGE", 100)
    x = _logits(12, 40)
    x[3:] += 1000.0
    rows = x.astype(np.float64)
    targets = np.arange(12) % 40
    with jax_x64() as jax:
        v, y = bk.xp.asarray(x), bk.xp.asarray(targets)
        funcs = {
            "logsumexp": PUBLIC["logsumexp"],
            "cross_entropy": lambda a: cross_entropy(a, y, reduction="none"),
        }
        for name, f in funcs.items():
            assert f"lsekit_{name}" in jax.jit(f).lower(v).as_text(), name
        got = {k: bk.to_numpy(jax.jit(f)(v)) for k, f in funcs.items()}
        grads = {
            k: bk.to_numpy(jax.grad(lambda a, f=f: f(a).sum())(v))
            for k, f in funcs.items()
        }
    lse = [exact_logsumexp(r) for r in rows]
    for i, e in enumerate(lse):
        assert ulp_error(got["logsumexp"][i], e, np.float32) <= 1.0, i
        exact = e - mpmath.mpf(float(rows[i, targets[i]]))
        assert ulp_error(got["cross_entropy"][i], exact, np.float32) <= 1.0, i
    p = np.array([[float(u) for u in exact_softmax(r)] for r in rows])
    np.testing.assert_allclose(grads["logsumexp"], p, rtol=2e-6, atol=1e-9)
    p[np.arange(12), targets] -= 1.0
    np.testing.assert_allclose(grads["cross_entropy"], p, rtol=2e-6, atol=1e-9)


@pytest.fixture
def without_x64(jax_kernel):
    """JAX's x64 mode switched off for the test."""
    import jax

    if not hasattr(jax, "enable_x64"):
        pytest.skip("this JAX has no jax.enable_x64 to switch x64 mode off")
    with jax.enable_x64(False):
        yield jax


def test_jax_without_x64_reductions(bk, without_x64):
    """Without x64 mode, ``logsumexp`` and the loss call the kernel too
    (their compiled programs hold its custom calls), in float32: within an
    ulp of mpmath's, the smoothed loss and the ignored targets' too, and
    their gradients."""
    jax = without_x64
    x = _logits(16, 40)
    rows = x.astype(np.float64)
    targets = np.arange(16) % 40
    targets[5] = -100
    v, y = bk.xp.asarray(x), bk.xp.asarray(targets.astype(np.int32))

    def losses(a, smoothing=0.0):
        return cross_entropy(
            a, y, reduction="none", ignore_index=-100, label_smoothing=smoothing
        )

    funcs = {"logsumexp": PUBLIC["logsumexp"], "cross_entropy": losses}
    for name, f in funcs.items():
        assert f"lsekit_{name}" in jax.jit(f).lower(v).as_text(), name
    lse = [exact_logsumexp(r) for r in rows]
    got = bk.to_numpy(jax.jit(funcs["logsumexp"])(v))
    assert got.dtype == np.float32
    for a, e in zip(got, lse, strict=True):
        assert ulp_error(a, e, np.float32) <= 1.0, (a, e)
    for smoothing in (0.0, 0.25):
        got = bk.to_numpy(jax.jit(lambda a, s=smoothing: losses(a, s))(v))
        assert got.dtype == np.float32
        for i, (a, e, c) in enumerate(zip(got, lse, targets, strict=True)):
            if c == -100:
                assert a == 0.0
                continue
            mean = mpmath.fsum(mpmath.mpf(float(u)) for u in rows[i]) / rows.shape[1]
            exact = (
                e - (1 - smoothing) * mpmath.mpf(float(rows[i, c])) - smoothing * mean
            )
            assert ulp_error(a, exact, np.float32) <= 1.0, (smoothing, i, a, exact)
    p = np.array([[float(u) for u in exact_softmax(r)] for r in rows])
    grad = bk.to_numpy(jax.grad(lambda a: funcs["logsumexp"](a).sum())(v))
    np.testing.assert_allclose(grad, p, rtol=1e-5, atol=1e-7)
    grad = bk.to_numpy(jax.grad(lambda a: cross_entropy(a, y, ignore_index=-100))(v))
    counted = targets != -100
    expected = p.copy()
    expected[np.arange(16)[counted], targets[counted]] -= 1.0
    expected[~counted] = 0.0
    np.testing.assert_allclose(grad, expected / counted.sum(), rtol=1e-5, atol=1e-7)


def test_jax_without_x64_left(bk, without_x64, monkeypatch):
    """Without x64 mode, rows that the kernel leaves (a maximum that is not
    finite, a class out of range, a log-sum-exp near 0 that it does not
    certify) send the call to the standard-only path: the results, and
    their gradients under ``jax.jit``, as the library without the kernel
    gives them; under
    ``jax.vmap``, a batch's rows as the rows alone."""
    jax = without_x64
    x = np.random.default_rng(7).normal(0.0, 3.0, size=(7, 9)).astype(np.float32)
    x[0, 3] = np.inf
    x[2] = -np.inf
    x[3, 4] = np.nan
    x[5, [0, 1]] = [-np.inf, np.inf]
    near = np.full((2, 9), -np.inf, np.float32)
    near[:, :2] = np.float32(-np.log(2.0))  # log(2 exp(m)) = 1.9e-9
    targets = bk.xp.asarray(np.array([3, 0, 1, 4, 2, 0, 40], np.int32))

    # Compiled: an eager call refuses the class out of range.
    @jax.jit
    def loss(a):
        return cross_entropy(a, targets, reduction="none")

    def results():
        out = {}
        for name, f, rows in (
            ("logsumexp", PUBLIC["logsumexp"], x),
            ("logsumexp near 0", PUBLIC["logsumexp"], near),
            ("loss", loss, x),
        ):
            arg = bk.xp.asarray(rows)
            out[name] = bk.to_numpy(f(arg))
            # Compiled, where the standard-only path's gradient has the
            # closed forms' 0s in the rows holding a NaN.
            grad = jax.grad(
                lambda v, f=f: bk.xp.sum(bk.xp.where(v > 0, f(v)[:, None], 0))
            )
            out[name + " gradient"] = bk.to_numpy(jax.jit(grad)(arg))
        batch = bk.xp.asarray(np.stack([x[[1, 4, 6]], x[[6, 1, 4]]]))
        out["vmap"] = bk.to_numpy(jax.vmap(PUBLIC["logsumexp"])(batch))
        return out

    native = results()
    assert np.array_equal(native["vmap"][0], native["vmap"][1][[1, 2, 0]])
    monkeypatch.setattr(_fused, "ENABLED", False)
    _assert_same_results(native, results())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_jax_without_x64_families(bk, without_x64, family):
    """The accuracy tests' families without x64 mode, to the same bounds:
    the kernel's rows, and the standard-only path's where it leaves some."""
    assert_float32_family(bk, family)


def test_jax_refused(bk, jax_kernel, monkeypatch):
    """Where XLA refuses the custom calls (a JAX whose FFI no longer takes
    their version), the traced kernels run instead, to the same results."""
    x = bk.asarray(_logits(5, 33), "float32")
    native = {k: bk.to_numpy(f(x)) for k, f in NORMALISED.items()}

    def refused(kind, x2):
        raise RuntimeError("UNIMPLEMENTED: FFI version 0.3 not supported")

    monkeypatch.setattr(jax_kernel, "_kernel_rows", refused)
    assert not jax_kernel._registered.__wrapped__()
    monkeypatch.setattr(jax_kernel, "_registered", lambda: False)
    for name, f in NORMALISED.items():
        np.testing.assert_array_max_ulp(bk.to_numpy(f(x + 0.0)), native[name], 2)


def test_jax_handler_checks(bk, jax_kernel):
    """The custom call checks what XLA hands it, and says what is wrong."""
    import jax

    x = bk.asarray(_logits(3, 4), "float32")
    rows = jax.ShapeDtypeStruct((3,), bk.xp.float32)
    wrong = jax.ShapeDtypeStruct((4,), bk.xp.float32)
    same = jax.ShapeDtypeStruct((3, 4), bk.xp.float32)
    call = jax.ffi.ffi_call("lsekit_log_softmax", [same, wrong])
    with pytest.raises(Exception, match="results are not the rows and their maxima"):
        jax.block_until_ready(call(x))
    wide = jax.ffi.ffi_call(
        "lsekit_softmax", [jax.ShapeDtypeStruct((3, 4), bk.xp.float64), rows]
    )
    with pytest.raises(Exception, match="takes float32 rows"):
        jax.block_until_ready(wide(bk.asarray(_logits(3, 4), "float64")))
    loss = jax.ffi.ffi_call("lsekit_cross_entropy", [rows, rows, rows])
    with pytest.raises(Exception, match="targets are not int32 or int64"):
        jax.block_until_ready(loss(x, bk.xp.zeros(3, dtype=bk.xp.float32)))
    with pytest.raises(Exception, match="takes rows and their targets"):
        jax.block_until_ready(loss(x))
    lse = jax.ffi.ffi_call("lsekit_logsumexp", [rows, wrong])
    with pytest.raises(Exception, match="results are not float32, one per row"):
        jax.block_until_ready(lse(x))
