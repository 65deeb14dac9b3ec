"""The traced float32 kernels as the compilers build them: JAX's under
``jax.jit``, PyTorch's under ``torch.compile``, against exact references
(mpmath, 60 digits).

The adversarial families' float32 rows, batched by length, go through each
kernel compiled. Every row it certifies is held to the bounds of
``test_accuracy`` and ``test_cross_entropy_accuracy``; every row far from
the limits of its certificate (a sum of other terms ``t >= 2**-19`` and,
for logsumexp, a result not near 0) must be certified, so that
the bounds are those of the fast path. The public functions, compiled, are
held to the same bounds on every row: the batches that hold a row the
kernel does not certify take the standard-only path instead. Long rows of
many equal tiny terms and one dominant one hold the float64 sums to their
bound whatever order the compiler adds in.

These tests are specific to the two libraries and do not take the ``bk``
fixture; each skips where its library's session is not running.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from typing import Any, NamedTuple

import mpmath
import numpy as np
import pytest

import backends
from lsekit import cross_entropy, log_softmax, logsumexp, softmax
from lsekit._compat import namespace
from lsekit._fast import _bounds, _fused, _traced
from tests.families import FAMILIES, rows
from tests.support import (
    assert_gradient,
    exact_log_softmax,
    exact_logsumexp,
    exact_softmax,
    exact_two_values,
    jax_x64,
    library_session,
    require_kernel,
    tiny_terms,
    ulp_error,
)

KINDS = ("logsumexp", "log_softmax", "softmax", "cross_entropy")
BOUND = {"logsumexp": 1.0, "log_softmax": 4.0, "softmax": 4.0, "cross_entropy": 4.0}
F32 = np.float32


class Compiler(NamedTuple):
    """A library's compiler: ``run(f, *arrays)`` calls ``f`` compiled on
    the float32 (or integer) NumPy arrays as the library's, and gives its
    results back as NumPy arrays; ``xp`` is its array namespace;
    ``flushes``: it flushes subnormal results to 0 (its manifest's
    ``flush_subnormals``); ``rest``: the kernels' ``_traced.Rest``;
    ``pull(kind, x, g, target)``: the gradient of the public function
    ``kind`` at the rows ``x`` given ``g``, that of its output, as a
    training step takes it (``target``: the loss's class indices)."""

    name: str
    xp: Any
    run: Callable[..., Any]
    flushes: bool
    rest: Callable[[Any, Any, Any], Any]
    pull: Callable[[str, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# The JAX kernels' sizes that the tests patch, and the jitted functions,
# kept across the tests by those sizes: compiling is slow.
JAX_SIZES = ("LARGE", "BLOCK", "SLOW_BLOCK", "LONG", "SHORT")
JITTED: dict[tuple[Callable[..., Any], tuple[Any, ...]], Callable[..., Any]] = {}


@functools.cache
def _jax_rest(path: str) -> Any:
    """The JAX kernels' ``Rest`` of a path (see ``_jax``), one for all the
    tests, so that the kernels made from it are too."""
    from lsekit._fast import jax as kernels

    if path == "blocked":
        return _traced.rest(kernels._split, kernels._cond)
    if path == "parts":
        return _traced.rest(
            _traced.sum64, kernels._cond, kernels._parts, fence=kernels._fence
        )
    return _traced.rest(_traced.sum64, kernels._cond)


def _jax(request: pytest.FixtureRequest, path: str = "") -> Any:
    """JAX, its ``log_softmax`` and ``softmax`` traced (the C kernel's
    custom calls off) but with ``path="kernel"``; ``path="blocked"``:
    every array goes through the path of large ones, mapped over blocks of
    rows of at most 1024 entries whose float64 sums are matrix-vector
    products in two levels, and the standard-only path over blocks of rows
    of at most 64 entries and the rows left over; ``path="parts"``: the
    rows longer than 16 entries count as long, and those of a length with
    a divisor that makes parts of 2 to 16 entries are summed in such parts
    (``_traced.rest``'s ``parts``)."""
    library_session(request, "jax")
    context = jax_x64()
    jax = context.__enter__()
    request.addfinalizer(lambda: context.__exit__(None, None, None))
    jnp = jax.numpy
    from lsekit._fast import jax as kernels

    patch = request.getfixturevalue("monkeypatch")
    if path == "kernel":
        require_kernel()
    else:
        patch.setattr(_fused, "ENABLED", False)
    if path == "blocked":
        patch.setattr(kernels, "LARGE", 0)
        patch.setattr(kernels, "BLOCK", 1 << 10)
        patch.setattr(kernels, "SLOW_BLOCK", 64)
    elif path == "parts":
        patch.setattr(kernels, "LONG", 16)
        patch.setattr(kernels, "SHORT", 2)
    rest = _jax_rest(path)

    def run(f: Callable[..., Any], *arrays: np.ndarray) -> Any:
        # jax.jit keeps a function's traces, made with the kernels' sizes
        # as they were: one jitted function for each set of sizes.
        sizes = (*(getattr(kernels, name) for name in JAX_SIZES), _fused.ENABLED)
        if (f, sizes) not in JITTED:
            JITTED[f, sizes] = jax.jit(lambda *a: f(*a))
        out = JITTED[f, sizes](*(jnp.asarray(a) for a in arrays))
        return jax.tree.map(np.asarray, out)

    def pull(kind: str, x: np.ndarray, g: np.ndarray, target: np.ndarray) -> Any:
        args = (jnp.asarray(target),) if kind.startswith("cross_entropy") else ()

        def vjp(x: Any, g: Any) -> Any:
            out, back = jax.vjp(lambda x: PUBLIC[kind](x, *args), x)
            return back(g.astype(out.dtype))[0]

        return run(vjp, x, g)

    flushes = backends.load()["jax"].flush_subnormals
    return Compiler("jax", jnp, run, flushes, rest, pull)


# torch.compile's functions, kept across the tests: compiling is slow.
COMPILED: dict[Callable[..., Any], Callable[..., Any]] = {}


def _torch(request: pytest.FixtureRequest, path: str = "") -> Any:
    """PyTorch under ``torch.compile``, its ``log_softmax``, ``softmax``
    and loss traced (the C kernel's operator off) but with
    ``path="kernel"``."""
    torch = library_session(request, "torch")
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        pytest.skip("torch.compile's CPU backend needs a C++ compiler; none found")
    import array_api_compat.torch as xp

    if path == "kernel":
        require_kernel()
    else:
        request.getfixturevalue("monkeypatch").setattr(_fused, "ENABLED", False)

    def call(f: Callable[..., Any], *arrays: Any) -> Any:
        # One compiled function for every batch size and row length.
        if f not in COMPILED:
            COMPILED[f] = torch.compile(f, fullgraph=True, dynamic=True)
        # The standard-only cross_entropy's take_along_axis specialises
        # the graph to the number of classes: one per row length, for
        # each path.
        with torch._dynamo.config.patch(recompile_limit=128):
            return COMPILED[f](*arrays)

    def run(f: Callable[..., Any], *arrays: np.ndarray) -> Any:
        out = call(f, *(torch.asarray(a) for a in arrays))
        if isinstance(out, tuple):
            return tuple(o.numpy() for o in out)
        return out.numpy()

    def pull(kind: str, x: np.ndarray, g: np.ndarray, target: np.ndarray) -> Any:
        # The forward pass compiled, its backward by AOTAutograd.
        args = (torch.asarray(target),) if kind.startswith("cross_entropy") else ()
        rows = torch.asarray(x).requires_grad_(True)
        out = call(PUBLIC[kind], rows, *args)
        out.backward(torch.asarray(g).to(out.dtype))
        return rows.grad.numpy()

    flushes = backends.load()["torch"].flush_subnormals
    from lsekit._fast import torch as kernels

    return Compiler("torch", xp, run, flushes, kernels._REST, pull)


# Inductor warns about torch.jit in its CPU passes, which is not lsekit's;
# Dynamo makes an instance of torch.autograd.Function for the context of
# each custom function it traces, and records the warning that this gives
# without showing it (pytorch/pytorch#128439), which turns it into an error
# where warnings are errors.
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated"),
    pytest.mark.filterwarnings(
        "ignore:<class 'torch\\.autograd\\.function\\.Function'> should not be"
        " instantiated:DeprecationWarning"
    ),
]


@pytest.fixture(params=["jax", "jax-blocked", "jax-parts", "torch"])
def compiler(request):
    library, _, path = request.param.partition("-")
    return {"jax": _jax, "torch": _torch}[library](request, path)


# The public functions' own code is the same whichever sums their kernels
# take, and the kernels' tests hold the parts' sums.
PUBLIC_COMPILERS = pytest.mark.parametrize(
    "compiler",
    ["jax", "jax-blocked", "jax-kernel", "torch", "torch-kernel"],
    indirect=True,
)
# The derivatives, also of the C kernel's custom calls and operator.
GRADIENT_COMPILERS = pytest.mark.parametrize(
    "compiler",
    ["jax", "jax-blocked", "jax-parts", "jax-kernel", "torch", "torch-kernel"],
    indirect=True,
)


class Batch(NamedTuple):
    labels: list[str]
    x: np.ndarray  # (N, C) float32 values
    target: np.ndarray  # (N,) class indices: each row's maximum, then minimum


def _batches() -> list[Batch]:
    by_length: dict[int, list[tuple[str, np.ndarray]]] = {}
    for family in FAMILIES:
        for k, row in enumerate(rows(family, F32)):
            by_length.setdefault(row.size, []).append((f"{family}[{k}]", row))
    batches = []
    for members in by_length.values():
        labels = [label for label, _ in members]
        x = np.stack([row for _, row in members]).astype(F32)
        # The tiny loss of a confident, correct prediction, and a large one.
        for name, pick in (("max", np.argmax), ("min", np.argmin)):
            target = np.array([int(pick(row)) for _, row in members])
            batches.append(Batch([f"{la} target {name}" for la in labels], x, target))
        # Every third entry masked with -inf but each row's maximum, as an
        # attention mask or a restricted vocabulary does.
        top = np.argmax(x, axis=1)
        masked = np.where(np.arange(x.shape[1]) % 3 == 2, -np.inf, x).astype(F32)
        masked[np.arange(len(x)), top] = x[np.arange(len(x)), top]
        labels = [f"{la} masked target max" for la in labels]
        batches.append(Batch(labels, masked, top))
    return batches


BATCHES = _batches()
# The losses' options (weights, a mask, smoothing) on batches of five of
# the lengths: of a few entries, of one dominant term among six, of ties,
# of logits, and the longest. torch.compile's loss compiles anew for each
# length (the standard-only path's take_along_axis specialises to it).
OPTION_BATCHES = [b for b in BATCHES if b.x.shape[1] in (2, 6, 17, 256, 4001)]


def _exact(kind: str, row: np.ndarray, target: int) -> list[mpmath.mpf]:
    """The exact result of ``kind`` on a row, as a list."""
    row = row.astype(np.float64)
    if kind == "logsumexp":
        return [exact_logsumexp(row)]
    if kind == "cross_entropy":
        return [exact_logsumexp(row) - mpmath.mpf(float(row[target]))]
    return exact_log_softmax(row) if kind == "log_softmax" else exact_softmax(row)


def _error(
    compiler: Compiler, kind: str, got: Any, exact: mpmath.mpf, row: np.ndarray
) -> float:
    if compiler.flushes and got == 0.0 and abs(exact) < np.finfo(F32).smallest_normal:
        return 0.0
    if kind == "logsumexp":
        # As in test_accuracy: where the maximum m < 0 and log(sum exp(a -
        # m)) cancel it, the error is measured in ulps of |m|.
        scale = max(abs(float(exact)), abs(float(row.max())))
        return float(
            abs(mpmath.mpf(float(got)) - exact) / float(np.spacing(F32(scale)))
        )
    return ulp_error(got, exact, F32)


def _far_from_limits(kind: str, row: np.ndarray) -> bool:
    """Whether the kernel must certify the row: the sum of its terms
    other than the maximum's, relative to it, is not tiny, and a
    logsumexp is not near 0."""
    row = row.astype(np.float64)
    top = float(row.max())
    t = mpmath.fsum(mpmath.exp(mpmath.mpf(float(v)) - top) for v in row) - 1
    if not np.isfinite(top) or t < 2.0**-19:
        return False
    return kind != "logsumexp" or abs(exact_logsumexp(row)) >= 6


def _take(xp: Any) -> Callable[[Any, Any], Any]:
    """The kernels' ``take_along_axis(x2, at, axis=1)`` of ``xp``."""
    if hasattr(xp, "gather"):
        return lambda x2, at: x2.gather(1, at)
    return functools.partial(xp.take_along_axis, axis=1)


@functools.cache
def _kernel(xp: Any, kind: str, rest: Any) -> Callable[..., Any]:
    if kind == "logsumexp":
        return lambda x: _traced.logsumexp(xp, x, rest)
    if kind == "cross_entropy":
        take = _take(xp)
        return lambda x, target: _traced.cross_entropy(xp, x, target, None, take, rest)[
            :2
        ]

    def normalised(x: Any) -> Any:
        m, t, ok = _traced.stats(xp, x, rest)
        return _traced.normalised(xp, x, m, t, kind), ok

    return normalised


def _check(
    compiler: Compiler, kind: str, batch: Batch, got: np.ndarray, certified: np.ndarray
) -> None:
    """Every certified row within the bound."""
    for i in np.flatnonzero(certified):
        row, target = batch.x[i], int(batch.target[i])
        values = np.atleast_1d(got[i])
        exact = _exact(kind, row, target)
        worst = max(
            _error(compiler, kind, g, e, row)
            for g, e in zip(values, exact, strict=True)
        )
        assert worst <= BOUND[kind], (
            f"{batch.labels[i]}: {kind} {worst:.2f} ulps > {BOUND[kind]}"
        )


@pytest.mark.parametrize("kind", KINDS)
def test_kernel(compiler, kind):
    kernel = _kernel(compiler.xp, kind, compiler.rest)
    must = 0
    for batch in BATCHES:
        if kind != "cross_entropy" and batch.labels[0].endswith("target min"):
            continue  # the same rows again
        args = (batch.x, batch.target) if kind == "cross_entropy" else (batch.x,)
        got, ok = compiler.run(kernel, *args)
        _check(compiler, kind, batch, got, ok)
        for i, row in enumerate(batch.x):
            if _far_from_limits(kind, row):
                must += 1
                assert ok[i], f"{batch.labels[i]}: {kind} not certified"
    assert must > 0, f"no row of the families must be certified for {kind}"


def _far_results(low: float, high: float) -> np.ndarray:
    """Rows of 50 entries whose maxima lie in ``[low, high]``: spreads of
    every width, one term dominating (the others 30 to 100 below it),
    entries whose exp falls below float32's normal range or is 0,
    ``-inf``, ties at the maximum."""
    rng = np.random.default_rng(3)
    top = np.linspace(low, high, 12)
    x = (
        top[:, None]
        - np.abs(rng.normal(0.0, 1.0, (12, 50))) * np.geomspace(0.01, 30.0, 12)[:, None]
    )
    x[:, 0] = top
    dominant = top[:, None] - rng.uniform(30.0, 100.0, (12, 50))
    dominant[:, 7] = top
    x = np.concatenate([x, dominant])
    x[::3, 11] = -np.inf
    x[1::3, 12:14] = x[1::3, 12:13] - 95.0
    x[2::3, 20] = x[2::3].max(axis=1)
    return x.astype(F32)


def _low_maxima() -> np.ndarray:
    """Rows ``[v, v - 30]``, the rest ``-inf`` (20 entries, more than
    ``SHORT_ROW``), with ``v`` below ``UNSHIFTED_LOW``: their log-sum-exp
    is about ``v``, whose ulp is too fine for the unshifted terms'
    rounding (1.56 ulps for one of these, measured under both compilers)."""
    v = np.linspace(0.25, 4.4, 64)
    x = np.full((64, 20), -np.inf)
    x[:, 0], x[:, 1] = v, v - 30.0
    return x.astype(F32)


RESULTS = {
    # Results of 5 and more, up to exp's range.
    "high": lambda: _far_results(5.0, 80.0),
    # Results of -5 and less, with terms down to float32's normal range.
    "negative": lambda: _far_results(-50.0, -9.0),
    "low": _low_maxima,
}


@pytest.mark.parametrize("results", list(RESULTS))
def test_logsumexp_unshifted(compiler, results):
    """Where every row's result is at least ``UNSHIFTED_LOW`` in
    magnitude, the traced logsumexp takes the log of the sum of the
    unshifted ``exp(x)`` and certifies every row; the rows' results hold
    the bound, as do those of rows with smaller results, which take the
    shifted sum (the unshifted terms' rounding would reach 1.56 ulps
    there)."""
    x = RESULTS[results]()
    kernel = _kernel(compiler.xp, "logsumexp", compiler.rest)
    got, ok = compiler.run(kernel, x)
    assert ok.all()
    batch = Batch([f"{results}[{i}]" for i in range(len(x))], x, np.zeros(len(x)))
    _check(compiler, "logsumexp", batch, got, ok)


def _small_results() -> np.ndarray:
    """Rows of 12 whose log-sum-exp lies between 1e-7 and 3 in magnitude,
    on either side of 0: too near 0 for the float32 terms' rounding, not
    for float64 terms'. Logits of ten classes shifted to a chosen result,
    with two entries of ``-inf``, and pairs ``v + log(u), v + log(1 - u)``."""
    rng = np.random.default_rng(5)
    sizes = np.geomspace(1e-7, 3.0, 24)
    aim = np.concatenate([sizes, -sizes])
    z = rng.normal(0.0, 2.0, (len(aim), 12))
    z[:, 10:] = -np.inf
    shifted = z - np.log(np.exp(z).sum(axis=1, keepdims=True)) + aim[:, None]
    u = rng.uniform(0.05, 0.95, len(aim))
    pairs = np.full((len(aim), 12), -np.inf)
    pairs[:, 0] = aim + np.log(u)
    pairs[:, 1] = aim + np.log1p(-u)
    return np.concatenate([shifted, pairs]).astype(F32)


def _nearest_zero() -> np.ndarray:
    """Rows of 12 holding a float32 pair ``log(u), log(1 - u)`` whose
    log-sum-exp is among the nearest 0 of many such pairs (about 1e-13),
    where float64 terms are too coarse, and the rest ``-inf``."""
    rng = np.random.default_rng(6)
    a = np.log(rng.uniform(0.05, 0.95, 1 << 18)).astype(F32)
    b = np.log1p(-np.exp(a.astype(np.float64))).astype(F32)
    wide = np.longdouble
    near = np.abs(np.log(np.exp(a.astype(wide)) + np.exp(b.astype(wide))))
    pick = np.argsort(near)[:8]
    rows = np.full((8, 12), -np.inf, dtype=F32)
    rows[:, 0], rows[:, 1] = a[pick], b[pick]
    return rows


def _assert_own_ulp(x: np.ndarray, got: np.ndarray, ok: np.ndarray) -> None:
    """Every certified row within an ulp of its own log-sum-exp (not of
    the maximum, as ``_error`` counts)."""
    for i in np.flatnonzero(ok):
        exact = exact_logsumexp(x[i].astype(np.float64))
        error = ulp_error(F32(got[i]), exact, F32)
        assert error <= BOUND["logsumexp"], f"row {i}: {error:.2f} ulps"


def test_logsumexp_small_results(compiler):
    """A log-sum-exp near 0, whose float32 terms' rounding would reach an
    ulp of it, comes from float64 terms: each row of 12 whose result is at
    least ``2**-20`` (far above ``(n + |m| + 16) 2**-28``, where the
    float64 terms' rounding reaches half an ulp) is certified, and every
    certified row is within an ulp of its own result. The float64 terms'
    certificate holds that bound on rows nearer 0 too (a batch that holds
    one skips them: see ``_traced.logsumexp``)."""
    x = _small_results()
    got, ok = compiler.run(_kernel(compiler.xp, "logsumexp", compiler.rest), x)
    for i, row in enumerate(x):
        if abs(exact_logsumexp(row.astype(np.float64))) >= 2.0**-20:
            assert ok[i], f"row {i}: not certified"
    _assert_own_ulp(x, got, ok)
    xp = compiler.xp

    def wide(x2: Any) -> Any:
        top = xp.astype(xp.max(x2, axis=1), xp.float64)
        return _traced._wide(xp, x2, top, compiler.rest)

    x = np.concatenate([x, _nearest_zero()])
    _assert_own_ulp(x, *compiler.run(wide, x))


def _masked_rows() -> np.ndarray:
    """A causal mask's rows, 1 to 40 entries kept of 40, the rest -inf."""
    rng = np.random.default_rng(8)
    x = rng.normal(0.0, 3.0, (40, 40))
    return np.where(np.tril(np.ones((40, 40), dtype=bool)), x, -np.inf).astype(F32)


@pytest.mark.parametrize("kind", KINDS)
def test_masked_rows(compiler, kind):
    """Rows whose other entries are all ``-inf`` (a causal mask's first)
    have a ``t`` of exactly 0 and are certified, as all the mask's rows
    are; a row whose other terms were flushed, or lost digits, below
    float32's normal range (one entry 100 below the maximum, one 87.5
    below) is not, unless it holds other terms enough."""
    x = _masked_rows()
    batch = Batch([f"causal[{i}]" for i in range(len(x))], x, np.argmax(x, axis=1))
    args = (x, batch.target) if kind == "cross_entropy" else (x,)
    got, ok = compiler.run(_kernel(compiler.xp, kind, compiler.rest), *args)
    assert ok.all()
    _check(compiler, kind, batch, got, ok)
    far = np.full((2, 40), -np.inf, dtype=F32)
    far[:, 0] = 2.0
    far[0, 1], far[1, 1] = 2.0 - 100.0, 2.0 - 87.5
    batch = Batch(["far[0]", "far[1]"], far, np.zeros(2, dtype=np.int64))
    args = (far, batch.target) if kind == "cross_entropy" else (far,)
    got, ok = compiler.run(_kernel(compiler.xp, kind, compiler.rest), *args)
    if kind != "logsumexp":
        assert not ok.any()
    _check(compiler, kind, batch, got, ok)


SHORT_LENGTHS = (2, 3, 5, 10, _traced.SHORT_ROW)


def _short_rows(n: int) -> np.ndarray:
    """Rows of ``n`` entries, whose ``logsumexp`` the kernels take from
    float64 terms at once: logits, ties at the maximum (two, and three),
    the other entries all ``-inf``, two finite entries, and the others 20
    to 60 below the maximum."""
    rng = np.random.default_rng(9)
    x = rng.normal(0.0, 3.0, (6, n))
    x[1, : min(n, 3)] = x[1].max()
    x[2, :2] = x[2].max()
    x[3, 1:] = -np.inf
    x[4, 2:] = -np.inf
    x[5, 1:] = x[5, 0] - np.linspace(20.0, 60.0, n - 1)
    return x.astype(F32)


@pytest.mark.parametrize("kind", KINDS)
def test_short_rows(compiler, kind):
    """Short rows are certified and within their bound, ties at the
    maximum and rows of one finite entry among them; rows whose other
    terms were flushed below float32's normal range are not, but by
    ``logsumexp``'s float64 terms."""
    kernel = _kernel(compiler.xp, kind, compiler.rest)
    for n in SHORT_LENGTHS:
        x = _short_rows(n)
        batch = Batch([f"n={n}[{i}]" for i in range(len(x))], x, np.argmax(x, axis=1))
        args = (x, batch.target) if kind == "cross_entropy" else (x,)
        got, ok = compiler.run(kernel, *args)
        assert ok.all(), f"n={n}: rows {np.flatnonzero(~ok)} not certified"
        _check(compiler, kind, batch, got, ok)
    far = np.full((2, 4), -np.inf, dtype=F32)
    far[:, 0] = 2.0
    far[0, 1], far[1, 1:3] = 2.0 - 100.0, 2.0 - 95.0
    batch = Batch(["far[0]", "far[1]"], far, np.zeros(2, dtype=np.int64))
    args = (far, batch.target) if kind == "cross_entropy" else (far,)
    got, ok = compiler.run(kernel, *args)
    assert ok.all() if kind == "logsumexp" else not ok.any()
    _check(compiler, kind, batch, got, ok)


def test_log1p(compiler):
    """The kernels' ``log1p`` by ``log``, compiled: within 5 float64 ulps
    of the exact value from 0 to the largest float64 (mpmath), ``inf`` at
    ``inf`` and NaN at NaN."""
    tiny = np.finfo(np.float64).smallest_normal
    t = np.concatenate(
        [
            [0.0, 2.0**-1074, tiny, 1e-300, 2.0**-60, 2.0**-53, 2.0**-52, 3 * 2.0**-53],
            np.geomspace(1e-12, 1e12, 401),
            [0.7499999999999999, 0.75, 0.7500000000000001, 1.0, 2.0, 1e300],
            [np.finfo(np.float64).max],
        ]
    )
    got = compiler.run(lambda v: _traced.log1p(compiler.xp, v), t)
    for v, g in zip(t, got, strict=True):
        exact = mpmath.log1p(mpmath.mpf(float(v)))
        if compiler.flushes and g == 0.0 and exact < tiny:
            continue
        ulps = abs(mpmath.mpf(float(g)) - exact) / float(np.spacing(float(exact)))
        assert ulps <= 5, f"log1p({v!r}): {float(ulps):.2f} ulps"
    special = compiler.run(
        lambda v: _traced.log1p(compiler.xp, v), np.array([np.inf, np.nan])
    )
    assert special[0] == np.inf
    assert np.isnan(special[1])


@functools.cache
def _two_passes(xp: Any, rest: Any) -> Callable[..., Any]:
    def divided(x: Any) -> Any:
        s, ok = _traced.divisors(xp, x, rest)
        return _traced.divided(xp, x, s), ok

    return divided


def _edges() -> np.ndarray:
    """Rows of 4 at the edges of the two passes' certificate: a maximum of
    0 over terms flushed or subnormal; one just under 0, whose sum of
    exponentials is under 1; maxima of 80, and of 88.5 twice (a sum of
    ``2**128.7``), and 89 (exp overflows); a NaN; ``inf``; all ``-inf``."""
    x = np.full((8, 4), -np.inf)
    x[0] = [0.0, -87.5, -100.0, -3.0]
    x[1, :2] = [-0.01, -200.0]
    x[2, :2] = [80.0, 0.0]
    x[3, :2] = [88.5, 88.5]
    x[4, :2] = [89.0, 0.0]
    x[5, :2] = [np.nan, 0.0]
    x[6, :2] = [np.inf, 0.0]
    return x.astype(F32)


def test_softmax_two_passes(compiler):
    """``softmax`` in two passes (``divisors``, then ``divided``), compiled:
    every certified row within the bound; every row whose maximum lies in
    ``[0, 80]`` certified; no row whose sum of exponentials is under 1 or
    at least ``2**127``, or holds ``inf`` or NaN."""
    kernel = _two_passes(compiler.xp, compiler.rest)
    must = 0
    edges = _edges()
    edge = Batch([f"edge[{i}]" for i in range(len(edges))], edges, np.zeros(8, int))
    for batch in [edge, *BATCHES]:
        if batch.labels[0].endswith("target min"):
            continue
        got, ok = compiler.run(kernel, batch.x)
        _check(compiler, "softmax", batch, got, ok)
        x = batch.x.astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            total = np.exp(x).sum(axis=1)
        top = x.max(axis=1)
        must_hold = (top >= 0.0) & (top <= 80.0)
        must += int(must_hold.sum())
        assert ok[must_hold].all(), f"not certified: {np.flatnonzero(must_hold & ~ok)}"
        wrong = ~((total >= 1.0) & (total < 2.0**127))
        assert not ok[wrong].any(), f"certified: {np.flatnonzero(wrong & ok)}"
    assert must > 0
    assert np.array_equal(compiler.run(kernel, edges)[1], [1, 0, 1, 0, 0, 0, 0, 0])


PUBLIC: dict[str, Callable[..., Any]] = {
    "logsumexp": lambda x: logsumexp(x, axis=1),
    "log_softmax": lambda x: log_softmax(x, axis=1),
    "softmax": lambda x: softmax(x, axis=1),
    "cross_entropy": lambda x, target: cross_entropy(x, target, reduction="none"),
    # Not among KINDS: for the losses with ignored targets, class weights
    # and masked examples alone.
    "cross_entropy_ignoring": lambda x, target: cross_entropy(
        x, target, reduction="none", ignore_index=-100
    ),
    "cross_entropy_smoothed": lambda x, target: cross_entropy(
        x, target, reduction="none", ignore_index=-100, label_smoothing=SMOOTHING
    ),
    "cross_entropy_weighted": lambda x, target: cross_entropy(
        x,
        target,
        reduction="none",
        ignore_index=-100,
        weight=_class_weights(x),
        where=target % 4 != 1,
    ),
}


SMOOTHING = 0.2


def _smoothed(row: np.ndarray, y: int) -> mpmath.mpf:
    """The loss of class ``y`` smoothed by ``SMOOTHING``, exactly."""
    logp = exact_log_softmax(row.astype(np.float64))
    own = (1 - mpmath.mpf(SMOOTHING)) * -logp[y]
    return own - mpmath.mpf(SMOOTHING) / len(row) * mpmath.fsum(logp)


def _class_weights(x: Any) -> Any:
    """0.5, 1.5, 2.5, 0.5, ... by class: ``x``'s, in its library and dtype,
    made within the compiled function (by lsekit's lookup of ``x``'s
    namespace, which ``torch.compile`` traces without a warning)."""
    xp = namespace(x)
    return xp.astype(xp.arange(x.shape[1]) % 3, x.dtype) + 0.5


def _weighted(x: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The examples that ``"cross_entropy_weighted"`` counts, and the weight
    of each one's class (0 for the others)."""
    counted = (target % 4 != 1) & (target != -100)
    w = (0.5 + np.arange(x.shape[1]) % 3)[np.where(counted, target, 0)]
    return counted, np.where(counted, w, 0.0)


@PUBLIC_COMPILERS
@pytest.mark.parametrize("kind", KINDS)
def test_public(compiler, kind):
    fallbacks = 0
    for batch in BATCHES:
        if kind != "cross_entropy" and batch.labels[0].endswith("target min"):
            continue
        args = (batch.x, batch.target) if kind == "cross_entropy" else (batch.x,)
        got = compiler.run(PUBLIC[kind], *args)
        _check(compiler, kind, batch, got, np.ones(len(batch.x), dtype=bool))
        _, ok = compiler.run(_kernel(compiler.xp, kind, compiler.rest), *args)
        fallbacks += int(not ok.all())
    # Some batches hold rows that the kernel does not certify, and took
    # the standard-only path: the families' maxima are finite, and only a
    # logsumexp near 0 is not certified.
    if kind == "logsumexp":
        assert fallbacks > 0


@PUBLIC_COMPILERS
def test_public_weighted(compiler):
    """Class weights, a mask of examples and ``ignore_index`` on the
    compiled loss: each counted example's loss is its class's weight times
    its loss, within the loss's bound; the others' are 0."""
    for batch in OPTION_BATCHES:
        got = compiler.run(PUBLIC["cross_entropy_weighted"], batch.x, batch.target)
        counted, w = _weighted(batch.x, batch.target)
        assert np.all(got[~counted] == 0.0)
        for i in np.flatnonzero(counted):
            row, y = batch.x[i], int(batch.target[i])
            exact = mpmath.mpf(float(w[i])) * _exact("cross_entropy", row, y)[0]
            worst = _error(compiler, "cross_entropy", got[i], exact, row)
            assert worst <= BOUND["cross_entropy"], (batch.labels[i], worst)


@PUBLIC_COMPILERS
def test_public_smoothed(compiler):
    """Label smoothing on the compiled loss, within the loss's bound on
    every row (a row with a ``-inf`` entry has an infinite loss)."""
    for batch in OPTION_BATCHES:
        got = compiler.run(PUBLIC["cross_entropy_smoothed"], batch.x, batch.target)
        for i, row in enumerate(batch.x):
            exact = _smoothed(row, int(batch.target[i]))
            worst = _error(compiler, "cross_entropy", got[i], exact, row)
            assert worst <= BOUND["cross_entropy"], (batch.labels[i], worst)


@pytest.mark.parametrize("kind", KINDS)
def test_many_tiny_terms(compiler, kind, monkeypatch):
    """Long rows where one term dominates many equal tiny ones: the kernels'
    float64 sums must keep every tiny term's digits, or not certify the
    row, in whatever order the compiler sums; the public functions stay
    within the bounds."""
    if compiler.name == "jax":
        from lsekit._fast import jax as kernels

        # Every row in one block: XLA's product of a single row with the
        # vector of ones is a dot of two vectors, summed in a tree, but
        # that of many rows a running sum along each.
        monkeypatch.setattr(kernels, "BLOCK", 1 << 24)
    for n, copies in ((32000, 4), (1 << 20, 1)):
        batch = Batch(*tiny_terms(n, copies), np.zeros(12 * copies, dtype=np.int64))
        args = (batch.x, batch.target) if kind == "cross_entropy" else (batch.x,)
        got, ok = compiler.run(_kernel(compiler.xp, kind, compiler.rest), *args)
        public = compiler.run(PUBLIC[kind], *args)
        for i, row in enumerate(batch.x):
            exact = exact_two_values(kind, row)
            if kind != "logsumexp" or row[0] >= 6:
                assert ok[i], f"{batch.labels[i]}: {kind} not certified"
            for values, certified in ((got[i], ok[i]), (public[i], True)):
                values = np.atleast_1d(values)[:2]
                worst = max(
                    _error(compiler, kind, g, e, row)
                    for g, e in zip(values, exact, strict=True)
                )
                assert not certified or worst <= BOUND[kind], (
                    f"{batch.labels[i]}: {kind} {worst:.2f} ulps > {BOUND[kind]}"
                )


@pytest.fixture(params=["jax", "jax-blocked", "jax-parts", "jax-kernel"])
def jax_compiler(request):
    return _jax(request, request.param[4:])


def _gradient_rows() -> tuple[np.ndarray, np.ndarray]:
    """float32 rows of 40 with a dominant term, a tie at the maximum, a
    negative maximum, a wide spread and a ``-inf`` entry, and their
    classes."""
    rng = np.random.default_rng(11)
    x = rng.normal(0.0, 4.0, size=(6, 40))
    x[1] = -45.0
    x[1, 7] = 12.0
    x[2, [3, 30]] = 15.5
    x[3] -= 30.0
    x[4] *= 12.0
    x[5, 9] = -np.inf
    return x.astype(F32), np.array([0, 7, 30, 4, 39, 9])


@GRADIENT_COMPILERS
@pytest.mark.parametrize("kind", KINDS)
def test_gradient(compiler, kind):
    """The closed-form derivatives of the traced kernels, in reverse mode
    (under ``jax.jit``, blocked or not, and through ``torch.compile``'s
    backward), hold against mpmath."""
    x, target = _gradient_rows()
    rng = np.random.default_rng(5)
    g = rng.normal(size=x.shape if kind in ("softmax", "log_softmax") else len(x))
    got = compiler.pull(kind, x, g.astype(F32), target)
    assert_gradient(kind, x, got, g.astype(F32), target, F32)


def test_gradient_with_ignored_targets(compiler):
    """Rows whose target is the ignored index have no gradient; the others
    hold against mpmath, as without it."""
    x, target = _gradient_rows()
    target[[1, 4]] = -100
    g = np.random.default_rng(7).normal(size=len(x)).astype(F32)
    got = compiler.pull("cross_entropy_ignoring", x, g, target)
    ignored = target == -100
    assert np.all(got[ignored] == 0.0)
    kept = ~ignored
    assert_gradient("cross_entropy", x[kept], got[kept], g[kept], target[kept], F32)


def test_gradient_weighted(compiler):
    """With class weights, a mask and ``ignore_index``, each counted row's
    gradient is its weight times the unweighted one, which holds against
    mpmath; the others have none."""
    x, target = _gradient_rows()
    target[4] = -100
    g = np.random.default_rng(8).normal(size=len(x)).astype(F32)
    got = compiler.pull("cross_entropy_weighted", x, g, target)
    counted, w = _weighted(x, target)
    assert np.all(got[~counted] == 0.0)
    scale = (g * w)[counted]
    assert_gradient(
        "cross_entropy", x[counted], got[counted], scale, target[counted], F32
    )


def test_gradient_smoothed(compiler):
    """With label smoothing, each counted row's gradient is ``p - (1 - eps)
    onehot - eps / C`` (against mpmath); an ignored row has none."""
    x, target = _gradient_rows()
    x[5, 9] = 0.0  # a -inf entry's loss is infinite
    target[4] = -100
    g = np.random.default_rng(10).normal(size=len(x)).astype(F32)
    got = compiler.pull("cross_entropy_smoothed", x, g, target)
    assert np.all(got[4] == 0.0)
    n = x.shape[1]
    for i in (0, 1, 2, 3, 5):
        p = np.array([float(q) for q in exact_softmax(x[i].astype(np.float64))])
        want = float(g[i]) * (p - SMOOTHING / n)
        want[target[i]] -= float(g[i]) * (1 - SMOOTHING)
        scale = abs(float(g[i])) * (p + 1.0 / n)
        assert np.all(np.abs(got[i] - want) <= 64 * 2.0**-24 * scale + 1e-30), i


@pytest.mark.parametrize("kind", ["logsumexp", "cross_entropy"])
def test_jax_second_derivatives(jax_compiler, kind):
    """Hessian-vector products of float32 rows, through the closed forms'
    own derivatives: ``(diag(p) - p pᵀ) v`` for each row."""
    import jax

    x, target = _gradient_rows()
    v = np.random.default_rng(6).normal(size=x.shape).astype(F32)
    t = jax.numpy.asarray(target)

    def total(x: Any) -> Any:
        return PUBLIC[kind](x, *((t,) if kind == "cross_entropy" else ())).sum()

    def hvp(x: Any, v: Any) -> Any:
        return jax.jvp(jax.grad(total), (x,), (v,))[1]

    got = jax_compiler.run(hvp, x, v)
    for i, row in enumerate(x.astype(np.float64)):
        p = np.array([float(q) for q in exact_softmax(row)])
        want = p * v[i] - p * float(p @ v[i])
        scale = p * np.abs(v[i]) + p * float(p @ np.abs(v[i]))
        assert np.all(np.abs(got[i] - want) <= 1e-5 * scale + 1e-30), (kind, i)


SPECIAL = [
    [np.inf, 0.0, 1.0],
    [np.inf, np.inf, 0.0],
    [-np.inf, -np.inf, -np.inf],
    [np.nan, 0.0, 1.0],
    [-np.inf, 0.0, 1.0],
]


@GRADIENT_COMPILERS
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("row", SPECIAL, ids=str)
def test_gradient_at_special_values(compiler, kind, row):
    """A batch with a row whose maximum is infinite or NaN takes the
    standard-only path; the closed forms give that path's own gradients
    (0 where there is no slope, NaN from NaN), in float32 as in float64
    (which keeps the standard-only path under the compilers)."""
    x = np.array([row, [0.5, -1.0, 2.0]])
    target = np.array([1, 2])
    g = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])
    if kind not in ("softmax", "log_softmax"):
        g = g[:, 0]
    got = compiler.pull(kind, x.astype(F32), g.astype(F32), target)
    want = compiler.pull(kind, x, g, target)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_literals():
    """The constants that the kernels write as literals within branches of
    ``torch.cond`` (which takes no module's float) are those they stand
    for."""
    assert _bounds.rounding_factor(_traced.EXP_ULPS, 32) == 3.0


@pytest.mark.parametrize("kind", [*KINDS, "cross_entropy_smoothed"])
def test_compiled_once(request, monkeypatch, kind):
    """A compiled call compiles once, from empty caches: none that its
    trace writes (or reads) guards the code against the next call, an
    eager call in between included. Each compile is a second or more on
    the CPU."""
    torch = library_session(request, "torch")
    import lsekit._fast as fast
    import lsekit._losses as losses

    monkeypatch.setattr(fast, "_BY_TYPE", {})
    monkeypatch.setattr(losses, "_EXACT", {})
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    x = torch.asarray(np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32))
    loss = kind.startswith("cross_entropy")
    args = (torch.asarray(np.array([0, 6, 3, 1])),) if loss else ()
    f = PUBLIC[kind]
    torch._dynamo.reset()
    compiled = torch.compile(f, backend=backend, fullgraph=True, dynamic=False)
    first = compiled(x, *args)
    compiled(x, *args)
    eager = f(x, *args)
    again = compiled(x, *args)
    assert len(graphs) == 1
    assert torch.equal(first, again)
    torch.testing.assert_close(first, eager)
