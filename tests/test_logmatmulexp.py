"""logmatmulexp: exact cells on every backend, matmul's shapes, the edge cases.

References
    Every finite cell is compared with the exact value computed in mpmath
    (60 digits): the terms ``a_ik + b_kj`` are added exactly
    (``mpmath.fadd(..., exact=True)``: no floating-point rounding before the
    reference), and the cell is ``m + log(sum(exp(t - m)))`` over them. The
    non-finite structure (which cells are NaN, +inf, -inf) is compared with
    an independent peer, the broadcast reference
    ``scipy.special.logsumexp(a[..., :, :, None] + b[..., None, :, :],
    axis=-2)`` in float64, where ``inf + -inf`` is NaN.

Error measure
    A cell's error is measured in units ``u`` = one ulp (of the result's
    dtype) of ``max(S, 1)``, where ``S = max(|out|, |r| + |c|)`` and ``r``
    and ``c`` are the maxima of the cell's row of ``a`` and column of ``b``.
    ``S`` is the scale the inputs impose: where ``r + c`` is large and the
    cell small (crossed maxima), even the broadcast reference rounds
    ``a_ik + b_kj`` on the scale of its operands. The floor at 1 is for the
    relative error of the product ``P`` below, which the logarithm turns
    into an absolute one that does not shrink with ``S``.

Bound asserted, per cell: ``SCALE_ULPS * u + (K + 2) * eps``
    The fast path forms ``out = (r + c) + log(P)`` with
    ``P = exp(a - r) @ exp(b - c)``. Its roundings: ``r + c`` and the final
    addition, half an ulp of ``S`` each; ``log P``, half an ulp of
    ``|log P| <= 2 S``; the subtractions ``a - r`` and ``b - c`` of the
    dominant terms, whose magnitudes add up to about ``(r + c) - out <= 2 S``,
    so about 2 ulps of ``S`` through ``exp``: 4 ulps of ``S`` in all,
    ``SCALE_ULPS = 4``. On top of that, ``P`` itself carries a relative
    error that becomes an absolute one after the logarithm: the matrix
    product's sum of K positive terms (at most ``(K - 1) eps`` in the worst
    case), the two ``exp`` of each term (an ulp each) and the clamping (at
    most ``eps`` on a certified cell): ``(K + 2) eps``. The exact repair of
    the other cells rounds ``a_ik + b_kj`` (half an ulp of ``S``) and sums
    to about an ulp, well inside the same bound.

    Observed on the inputs of this file (NumPy, PyTorch, JAX, Dask,
    array-api-strict alike): at most 1.94 u in float64 (2.68 ulps of ``S``
    itself, at ``S = 0.26``) and 1.42 u in float32; the matrix products'
    sums of positive terms are far better than their worst case. As a
    regression guard with modest headroom, the worst cell of every batch
    must also be within ``OBSERVED_ULPS = 2.5`` u.

Against the broadcast reference in the same dtype
    SciPy's ``logsumexp`` of the broadcast sum, in float32 or float64, is
    what a user would otherwise write; its own worst error on the random
    batches is 0.5 to 1.4 u (the rounding of ``a_ik + b_kj``, of the
    exponentials and of the sum). lsekit's worst error on each batch must
    be at most ``2 * reference + 1`` u: no worse than a small multiple of
    what the memory-hungry broadcast gets.

Cost
    JAX compiles every operation afresh for each new shape, and lsekit's
    eager repair for each new power of two of cells to recompute: 1 to 4 s
    per call. Dask costs about 0.1 s per compute. So the shapes come from a
    fixed menu, the adversarial cases ride in two batched calls per dtype,
    and each test computes its results together.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Sequence
from typing import Any

import mpmath
import numpy as np
import pytest
from scipy import special

from lsekit import logmatmulexp

INF = np.inf
NAN = np.nan
NPDT = {"float16": np.float16, "float32": np.float32, "float64": np.float64}
FLOATS = ["float32", "float64"]
SCALE_ULPS = 4.0
OBSERVED_ULPS = 2.5


# Exact references -------------------------------------------------------------


def _exact_cell(row: Sequence[float], col: Sequence[float]) -> mpmath.mpf:
    """``log(sum_k exp(row_k + col_k))`` to 60 digits, with the broadcast
    reference's rules for non-finite terms."""
    terms = [mpmath.fadd(x, y, exact=True) for x, y in zip(row, col, strict=True)]
    if any(mpmath.isnan(t) for t in terms):
        return mpmath.mpf("nan")
    if any(t == mpmath.inf for t in terms):
        return mpmath.inf
    terms = [t for t in terms if t != -mpmath.inf]
    if not terms:
        return -mpmath.inf
    m = max(terms)
    return m + mpmath.log(mpmath.fsum(mpmath.exp(t - m) for t in terms))


def _matrices(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both operands as (..., M, K) and (..., K, N) with the batch broadcast."""
    a = a[None, :] if a.ndim == 1 else a
    b = b[:, None] if b.ndim == 1 else b
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return (
        np.broadcast_to(a, batch + a.shape[-2:]),
        np.broadcast_to(b, batch + b.shape[-2:]),
    )


def _matmul_shape(a: np.ndarray, b: np.ndarray) -> tuple[int, ...]:
    """The shape ``np.matmul`` gives these operands."""
    return np.matmul(np.zeros(a.shape), np.zeros(b.shape)).shape


def exact(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact result as float64 ``hi + lo``, in ``np.matmul``'s shape.

    ``a`` and ``b`` hold the values the backend receives (already rounded
    to its dtype), as float64.
    """
    am, bm = _matrices(np.asarray(a, np.float64), np.asarray(b, np.float64))
    shape = am.shape[:-1] + bm.shape[-1:]
    hi = np.empty(shape)
    lo = np.zeros(shape)
    with mpmath.workdps(60):
        for idx in np.ndindex(*shape):
            *batch, i, j = idx
            row = am[(*batch, i)].tolist()
            v = _exact_cell(row, bm[(*batch, slice(None), j)].tolist())
            hi[idx] = float(v)
            if mpmath.isfinite(v):
                lo[idx] = float(v - mpmath.mpf(hi[idx]))
    out = _matmul_shape(a, b)
    return hi.reshape(out), lo.reshape(out)


def broadcast_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SciPy's logsumexp of the broadcast sum, in the operands' dtype."""
    am, bm = _matrices(a, b)
    with np.errstate(all="ignore"):
        out = special.logsumexp(am[..., :, :, None] + bm[..., None, :, :], axis=-2)
    return np.asarray(out).reshape(_matmul_shape(a, b))


def naive_shifted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The textbook shifted product, ``r + c + log(exp(a - r) @ exp(b - c))``:
    what the adversarial cases below are built to break."""
    with np.errstate(all="ignore"):
        r = np.max(a, axis=-1, keepdims=True)
        c = np.max(b, axis=-2, keepdims=True)
        return r + c + np.log(np.exp(a - r) @ np.exp(b - c))


# Errors -----------------------------------------------------------------------


def _spacing(x: np.ndarray, dtype: str) -> np.ndarray:
    """The ulp of ``|x|`` in ``dtype``, as float64."""
    x = np.abs(np.asarray(x, np.float64))
    if dtype == "bfloat16":
        # 8 significant bits, float32's exponent range.
        x = np.maximum(x, float(np.finfo(np.float32).smallest_normal))
        return np.exp2(np.floor(np.log2(x)) - 7)
    info = np.finfo(NPDT[dtype])
    x = np.minimum(x, float(info.max)).astype(NPDT[dtype])
    with np.errstate(over="ignore"):
        out = np.spacing(x).astype(np.float64)
    # The ulp of the top binade (np.spacing overflows there).
    top = float(info.max) - float(np.nextafter(info.max, NPDT[dtype](0)))
    return np.where(np.isinf(out), top, out)


def _eps(dtype: str) -> float:
    return 2.0**-7 if dtype == "bfloat16" else float(np.finfo(NPDT[dtype]).eps)


def scale(a: np.ndarray, b: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``max(|out|, |r| + |c|)`` per cell, in ``np.matmul``'s shape."""
    am, bm = _matrices(np.asarray(a, np.float64), np.asarray(b, np.float64))
    with np.errstate(all="ignore"):
        r = np.max(am, axis=-1)[..., :, None]
        c = np.max(bm, axis=-2)[..., None, :]
        s = np.abs(r) + np.abs(c)
    s = np.broadcast_to(s, am.shape[:-1] + bm.shape[-1:]).reshape(hi.shape)
    out = np.where(np.isfinite(hi), np.abs(hi), 0.0)
    return np.maximum(np.where(np.isfinite(s), s, 0.0), out)


def errors(got: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """``|got - exact|`` at the finite cells (0 elsewhere)."""
    got = np.asarray(got, np.float64)
    with np.errstate(all="ignore"):
        err = np.abs((got - hi) - lo)
    return np.where(np.isfinite(hi), err, 0.0)


def assert_same_nonfinite(got: Any, hi: np.ndarray, label: str = "") -> None:
    """NaN, +inf and -inf exactly where the exact result has them."""
    got = np.asarray(got, np.float64)
    assert got.shape == hi.shape, f"{label}: shape {got.shape} != {hi.shape}"
    for name, test in (("NaN", np.isnan), ("+inf", np.isposinf)):
        bad = test(got) != test(hi)
        assert not bad.any(), (
            f"{label}: {name} differs at {np.argwhere(bad)[:5].tolist()}: "
            f"got {got[bad][:5]}, exact {hi[bad][:5]}"
        )
    bad = np.isneginf(got) != np.isneginf(hi)
    assert not bad.any(), (
        f"{label}: -inf differs at {np.argwhere(bad)[:5].tolist()}: "
        f"got {got[bad][:5]}, exact {hi[bad][:5]}"
    )


def unit(a: np.ndarray, b: np.ndarray, hi: np.ndarray, dtype: str) -> np.ndarray:
    """The unit of error per cell: an ulp of ``max(S, 1)`` in ``dtype``."""
    return _spacing(np.maximum(scale(a, b, hi), 1.0), dtype)


def check(
    got: Any,
    a: np.ndarray,
    b: np.ndarray,
    dtype: str,
    label: str = "",
    exact_value: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """Assert ``got`` within the bounds of the module docstring; return its
    worst error in units of ``unit``."""
    hi, lo = exact(a, b) if exact_value is None else exact_value
    assert_same_nonfinite(got, hi, label)
    u = unit(a, b, hi, dtype)
    err = errors(got, hi, lo)
    bound = SCALE_ULPS * u + (a.shape[-1] + 2) * _eps(dtype)
    bad = err > bound
    assert not bad.any(), (
        f"{label} {dtype}: {int(bad.sum())} cells beyond the bound, first at "
        f"{np.argwhere(bad)[:3].tolist()}: got {np.asarray(got)[bad][:3]}, "
        f"exact {hi[bad][:3]}, error {(err / u)[bad][:3]} ulp of max(S, 1)"
    )
    worst = float(np.max(err / u, initial=0.0))
    assert worst <= OBSERVED_ULPS, f"{label} {dtype}: {worst:.2f} ulp of max(S, 1)"
    return worst


# Running on a backend -----------------------------------------------------------


def rounded(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` rounded to ``dtype`` (kept as float64: what the backend gets)."""
    return np.asarray(x, np.float64).astype(NPDT[dtype]).astype(np.float64)


def run(bk, pairs: Sequence[tuple[np.ndarray, np.ndarray]], dtype: str | None):
    """lsekit on each ``(a, b)``, as NumPy arrays.

    Checks every result's namespace, device, dtype and shape, and that the
    operands are left as they were (the repair writes into arrays in place
    on NumPy and PyTorch; 1-D operands are reshaped views). Dask computes
    all the results at once.
    """
    results, operands = [], []
    for a, b in pairs:
        x, y = bk.asarray(a, dtype), bk.asarray(b, dtype)
        before = (bk.to_numpy(x).copy(), bk.to_numpy(y).copy())
        out = logmatmulexp(x, y)
        want = None if dtype is None else bk.dtype(dtype)
        bk.check_array(out, x, want)
        assert tuple(out.shape) == _matmul_shape(a, b), (out.shape, a.shape, b.shape)
        results.append(out)
        operands.append((x, y, before))
    if bk.name == "dask":
        import dask

        results = list(dask.compute(*results))
    results = [bk.to_numpy(r) for r in results]
    for x, y, (a, b) in operands:
        np.testing.assert_array_equal(bk.to_numpy(x), a, err_msg="a was modified")
        np.testing.assert_array_equal(bk.to_numpy(y), b, err_msg="b was modified")
    return results


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    # Seeded by the test's own id, so that its data do not depend on which
    # other tests ran before it.
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


# The seed example ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_seed_example(bk, dtype):
    a = np.array([[-500.0, 900.0]])
    b = np.array([[900.0], [-500.0]])
    # The textbook shift puts both terms 1400 below r + c = 1800: beyond
    # exp's range in either dtype.
    assert np.isneginf(naive_shifted(a.astype(dtype), b.astype(dtype))).all()
    # The same as vectors: a row times a column, a 0-d result.
    matrices, vectors = run(bk, [(a, b), (a[0], b[:, 0])], dtype)
    assert matrices.shape == (1, 1)
    assert vectors.shape == ()
    want = mpmath.mpf(400) + mpmath.log(2)
    assert abs(float(want) - 400.69314718055994) < 1e-13
    # Both terms are exact (400 and 400): only the sum rounds, to an ulp.
    for got in (matrices[0, 0], vectors[()]):
        err = abs(mpmath.mpf(float(got)) - want)
        assert err <= _spacing(np.array(400.7), dtype), (got, float(want))


# Results near 0 ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_near_zero_keeps_relative_precision(bk, dtype):
    # Cells whose term at the row's maximum dominates, with results near 0:
    # log(1 + e^-40), as in logsumexp, and the diagonal of the square of a
    # near-identity ("sticky") transition matrix, log(0.999^2 + ...). The
    # shifted product rounds P near 1 to an ulp of 1; these cells must be
    # within a few ulps of their own magnitude, as the broadcast reference
    # with logsumexp's log1p split is.
    gen = np.random.default_rng(7)
    off = np.log(0.001 * gen.dirichlet(np.ones(8), size=8))
    sticky = np.where(np.eye(8, dtype=bool), np.log(0.999), off)
    pairs = [
        (np.array([[0.0, -40.0]]), np.array([[0.0], [0.0]])),
        (rounded(sticky, dtype), rounded(sticky, dtype)),
    ]
    tiny, square = run(bk, pairs, dtype)
    want = mpmath.log1p(mpmath.exp(-40))
    assert abs(mpmath.mpf(float(tiny[0, 0])) - want) <= _spacing(float(want), dtype)
    a = pairs[1][0]
    hi, lo = exact(a, a)
    diagonal = np.diagonal(errors(square, hi, lo))
    ulps = diagonal / _spacing(np.diagonal(hi), dtype)
    assert ulps.max() <= 2.0, (ulps, np.diagonal(hi))


# Adversarial matrices, computed in batched calls -----------------------------------
#
# Every case is a (6, 7, 5) product (the extreme ones padded with -inf), so
# that one call per batch and dtype serves them all: JAX compiles each
# call's repair afresh, and Dask computes once. Two batches: finite and
# -inf entries ("minus-inf"), and +inf, NaN and magnitudes near the dtype's
# maximum ("nonfinite"), so that a failure of the one does not hide the
# other. The tests below each check their slice.

M, K, N = 6, 7, 5


def _crossed(rng: np.random.Generator, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``a`` peak (+h) at k = i, columns of ``b`` at k = 2j + 1
    (mod K), everything else sits near -h. A cell whose row and column
    peak at different k has two terms near 0, 2h below r + c; one whose
    peaks meet has a term near 2h. Both kinds in one product."""
    a = -h + rng.standard_normal((M, K))
    b = -h + rng.standard_normal((K, N))
    for i in range(M):
        a[i, i % K] = h + rng.standard_normal()
    for j in range(N):
        b[(2 * j + 1) % K, j] = h + rng.standard_normal()
    return a, b


def _band(rng: np.random.Generator, shape: tuple[int, int], width: int, spread: float):
    x = np.full(shape, -INF)
    for i in range(shape[0]):
        for j in range(shape[1]):
            if abs(i - j) <= width:
                x[i, j] = spread * rng.uniform(-1.0, 1.0)
    return x


def _structures(rng: np.random.Generator, dtype: str) -> dict[str, tuple[Any, Any]]:
    """Operands whose -inf entries shape the result."""
    out = {}
    out["banded"] = (_band(rng, (M, K), 1, 20.0), _band(rng, (K, N), 1, 20.0))
    # A wide spread inside the band: maxima of rows and columns cross.
    out["banded-wide"] = (_band(rng, (M, K), 2, 400.0), _band(rng, (K, N), 1, 400.0))
    # Block-diagonal with different block boundaries in a and b: some
    # cells meet no block and are -inf.
    a = np.full((M, K), -INF)
    a[:3, :3] = rng.normal(0, 10, (3, 3))
    a[3:, 3:] = rng.normal(0, 10, (3, 4))
    b = np.full((K, N), -INF)
    b[:2, :2] = rng.normal(0, 10, (2, 2))
    b[5:, 2:] = rng.normal(0, 10, (2, 3))
    out["block-sparse"] = (a, b)
    # Whole rows of a and columns of b at -inf.
    a = rng.normal(0, 30, (M, K))
    b = rng.normal(0, 30, (K, N))
    a[[0, 4]] = -INF
    b[:, [1, 2]] = -INF
    out["empty-rows-and-columns"] = (a, b)
    # Every row and column has finite entries (finite maxima), but rows
    # are finite at even k and the odd columns at odd k only: those cells
    # have no pair of finite terms.
    a = rng.normal(0, 30, (M, K))
    a[:, 1::2] = -INF
    b = rng.normal(0, 30, (K, N))
    b[0::2, 1::2] = -INF
    out["disjoint-supports"] = (a, b)
    # The only finite pair of each cell sits far below both the row's and
    # the column's maximum (further than the exponent range of the dtype
    # allows for the two factors), so the shifted product sees neither.
    far = 50.0 if dtype == "float32" else 400.0
    a = np.full((M, K), -INF)
    b = np.full((K, N), -INF)
    a[:, 0] = rng.normal(0, 1, M)  # the rows' maxima, met by no column
    a[:, 1] = -far + rng.normal(0, 1, M)
    b[1, :] = -far + rng.normal(0, 1, N)
    b[2, :] = rng.normal(0, 1, N)  # the columns' maxima, met by no row
    out["lone-pair-below-both-maxima"] = (a, b)
    return out


def _single_minus_inf(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One -inf at each position of a, then at each position of b: among
    them the maxima, whose removal moves the shift."""
    base_a = rng.normal(0, 40, (M, K))
    base_b = rng.normal(0, 40, (K, N))
    a, b = [], []
    for pos in np.ndindex(M, K):
        x = base_a.copy()
        x[pos] = -INF
        a.append(x)
        b.append(base_b)
    for pos in np.ndindex(K, N):
        y = base_b.copy()
        y[pos] = -INF
        a.append(base_a)
        b.append(y)
    return np.stack(a), np.stack(b)


def _pad(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m, k) and (k, n) operands padded with -inf to (M, K) and (K, N): the
    extra terms are -inf and drop out; the extra cells are -inf."""
    pa = np.full((M, K), -INF)
    pb = np.full((K, N), -INF)
    pa[: a.shape[0], : a.shape[1]] = a
    pb[: b.shape[0], : b.shape[1]] = b
    return pa, pb


def _nonfinite(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """+inf, NaN and -inf sprinkled and placed; both kinds of cell."""
    out = []
    for _ in range(3):
        a = rng.normal(0, 30, (M, K))
        b = rng.normal(0, 30, (K, N))
        for x in (a, b):
            u = rng.random(x.shape)
            x[u < 0.05] = INF
            x[(u >= 0.05) & (u < 0.09)] = NAN
            x[(u >= 0.09) & (u < 0.25)] = -INF
        out.append((a, b))
    # +inf meeting -inf (NaN), +inf meeting finite and +inf (inf).
    a = rng.normal(0, 3, (M, K))
    b = rng.normal(0, 3, (K, N))
    a[0, 2] = INF
    b[2, 0] = -INF
    a[1, 3] = INF
    b[3, 1] = INF
    # NaN beside a -inf partner: NaN + -inf is still NaN.
    a[2, 4] = NAN
    b[4, 2:] = -INF
    out.append((a, b))
    # A row of +inf against a column of -inf, an all -inf row, and an all
    # -inf row against a column holding +inf (-inf + inf: NaN).
    a = rng.normal(0, 3, (M, K))
    b = rng.normal(0, 3, (K, N))
    a[0, :] = INF
    b[:, 2] = -INF
    a[3, :] = -INF
    b[5, 4] = INF
    out.append((a, b))
    return out


def _extreme(dtype: str) -> list[tuple[np.ndarray, np.ndarray]]:
    big = float(np.finfo(NPDT[dtype]).max) * 0.75
    return [
        # r + c overflows the dtype; the crossed terms cancel exactly: log 2.
        _pad(np.array([[-big, big]]), np.array([[big], [-big]])),
        # One finite term, big + big = 1.5 max: +inf, as IEEE rounding and
        # the broadcast reference have it.
        _pad(np.array([[big]]), np.array([[big]])),
        # One finite term, big - big: exactly 0, though r + c = big (the
        # column's maximum, 0, meets a's -inf).
        _pad(np.array([[big, -INF]]), np.array([[-big], [0.0]])),
    ]


@functools.cache
def _batch(kind: str, dtype: str):
    """``(names, a, b, exact)``: the cases of ``kind`` stacked, with the
    batch slice of each case in ``names``."""
    rng = np.random.default_rng(zlib.crc32(f"{kind}-{dtype}".encode()))
    cases: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    if kind == "minus-inf":
        for gap in (100, 800, 1400):
            cases[f"crossed-gap-{gap}"] = [_crossed(rng, gap / 2)]
        for name, pair in _structures(rng, dtype).items():
            cases[name] = [pair]
        a, b = _single_minus_inf(rng)
        cases["single-minus-inf"] = list(zip(a, b, strict=True))
    else:
        cases["nonfinite"] = _nonfinite(rng)
        cases["extreme"] = _extreme(dtype)
    names, pairs = {}, []
    for name, items in cases.items():
        names[name] = slice(len(pairs), len(pairs) + len(items))
        pairs += items
    a = rounded(np.stack([p[0] for p in pairs]), dtype)
    b = rounded(np.stack([p[1] for p in pairs]), dtype)
    return names, a, b, exact(a, b)


_RESULTS: dict[tuple[str, str, str], np.ndarray] = {}


def batch_case(bk, kind: str, dtype: str, name: str):
    """``(got, a, b, (hi, lo))`` of one case; lsekit runs once per batch."""
    names, a, b, (hi, lo) = _batch(kind, dtype)
    key = (bk.name, kind, dtype)
    if key not in _RESULTS:
        (_RESULTS[key],) = run(bk, [(a, b)], dtype)
    s = names[name]
    return _RESULTS[key][s], a[s], b[s], (hi[s], lo[s])


@pytest.mark.parametrize("gap", [100, 800, 1400])
@pytest.mark.parametrize("dtype", FLOATS)
def test_crossed_maxima(bk, dtype, gap):
    got, a, b, (hi, lo) = batch_case(bk, "minus-inf", dtype, f"crossed-gap-{gap}")
    assert np.isfinite(hi).all()
    # Guard on the data: beyond float64's exponent range the textbook shift
    # loses the crossed cells. (At gap 100 float32 keeps a few subnormal
    # bits of them; lsekit's float32 clamp at exp(-43.7) sends those cells
    # to the repair all the same.)
    if gap >= 800:
        naive = naive_shifted(a.astype(dtype), b.astype(dtype))
        assert (~np.isfinite(naive)).sum() >= 20, naive
    check(got, a, b, dtype, f"gap {gap}", (hi, lo))


STRUCTURES = [
    "banded",
    "banded-wide",
    "block-sparse",
    "empty-rows-and-columns",
    "disjoint-supports",
    "lone-pair-below-both-maxima",
]


@pytest.mark.parametrize("name", STRUCTURES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_minus_inf_structure(bk, dtype, name):
    got, a, b, (hi, lo) = batch_case(bk, "minus-inf", dtype, name)
    # Guards on the data: the cells are -inf or finite as the case means.
    if name == "block-sparse":
        assert np.isneginf(hi).any()
    elif name == "disjoint-supports":
        assert np.isneginf(hi).sum() == M * 2
    elif name in ("lone-pair-below-both-maxima", "banded-wide"):
        assert np.isfinite(hi).sum() >= M * N // 2
    check(got, a, b, dtype, name, (hi, lo))


@pytest.mark.parametrize("dtype", FLOATS)
def test_single_minus_inf_anywhere(bk, dtype):
    got, a, b, (hi, lo) = batch_case(bk, "minus-inf", dtype, "single-minus-inf")
    assert len(got) == M * K + K * N
    check(got, a, b, dtype, "single -inf", (hi, lo))


@pytest.mark.parametrize("dtype", FLOATS)
def test_inf_and_nan_like_the_broadcast_reference(bk, dtype):
    got, a, b, (hi, lo) = batch_case(bk, "nonfinite", dtype, "nonfinite")
    ref = broadcast_reference(a, b)
    # The exact reference follows the broadcast reference's rules, and the
    # data hold every kind of cell.
    assert_same_nonfinite(ref, hi, "scipy vs mpmath")
    for kind in (np.isnan, np.isposinf, np.isneginf, np.isfinite):
        assert kind(ref).sum() >= 3, kind
    assert_same_nonfinite(got, ref, "against scipy's broadcast")
    check(got, a, b, dtype, "non-finite", (hi, lo))


@pytest.mark.parametrize("dtype", FLOATS)
def test_extreme_magnitudes(bk, dtype):
    got, *_ = batch_case(bk, "nonfinite", dtype, "extreme")
    ln2 = math.log(2.0)
    assert abs(float(got[0, 0, 0]) - ln2) <= _spacing(np.array(ln2), dtype), got[0]
    assert got[1, 0, 0] == INF, got[1]
    assert got[2, 0, 0] == 0.0, got[2]
    # The padding: no finite pair.
    assert np.isneginf(got[:, 1:, :]).all()
    assert np.isneginf(got[:, :, 1:]).all()


# Random inputs --------------------------------------------------------------------

# (batch, M, K, N). A fixed menu, not random shapes: JAX compiles every
# operation afresh for each new shape (a second or two apiece).
RANDOM_SHAPES = [(10, 2, 3, 4), (6, 8, 9, 7), (2, 6, 33, 5)]


def _random_batch(gen: np.random.Generator, shape: tuple[int, ...]):
    """One matrix pair per batch entry, each of its own kind: spreads from
    0.1 to 1000, offsets that push r + c far from 0, -inf sprinkles, and
    log-probabilities (stochastic matrices) as in HMM-style chains."""
    batch, m, k, n = shape
    a = np.empty((batch, m, k))
    b = np.empty((batch, k, n))
    for g in range(batch):
        kind = g % 4
        if kind == 3:
            # Row-stochastic a, column-stochastic b; a Dirichlet draw may
            # underflow to 0, whose log is a legitimate -inf.
            with np.errstate(divide="ignore"):
                a[g] = np.log(gen.dirichlet(np.full(k, 0.5), size=m))
                b[g] = np.log(gen.dirichlet(np.full(k, 0.5), size=n)).T
            continue
        spread = 10.0 ** gen.uniform(-1.0, 3.0)
        a[g] = gen.choice([0.0, 0.0, 300.0, -700.0]) + spread * gen.normal(size=(m, k))
        b[g] = gen.choice([0.0, 0.0, 500.0, -200.0]) + spread * gen.normal(size=(k, n))
        if kind == 2:
            a[g][gen.random((m, k)) < 0.25] = -INF
            b[g][gen.random((k, n)) < 0.25] = -INF
    return a, b


@functools.cache
def _random_case(shape: tuple[int, ...], dtype: str):
    gen = np.random.default_rng(zlib.crc32(repr((shape, dtype)).encode()))
    a, b = _random_batch(gen, shape)
    a, b = rounded(a, dtype), rounded(b, dtype)
    return a, b, exact(a, b), broadcast_reference(a.astype(dtype), b.astype(dtype))


@pytest.mark.parametrize("shape", RANDOM_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", FLOATS)
def test_random_within_bound(bk, shape, dtype):
    a, b, (hi, lo), ref = _random_case(shape, dtype)
    (got,) = run(bk, [(a, b)], dtype)
    worst = check(got, a, b, dtype, f"random {shape}", (hi, lo))
    assert_same_nonfinite(ref, hi, "scipy in the dtype")
    u = unit(a, b, hi, dtype)
    reference = float(np.max(errors(ref, hi, lo) / u, initial=0.0))
    assert worst <= 2 * reference + 1, (
        f"lsekit {worst:.2f} ulp of max(S, 1), the broadcast reference {reference:.2f}"
    )


# Shapes --------------------------------------------------------------------------

# (a's shape, b's shape, spread). A spread of 600 puts some cells' terms
# further below r + c than float64's exponent range, so the repair must find
# its cells through the 1-D reshapes and the broadcast batch; a spread of
# 30 keeps to the matrix product (and JAX to one compilation).
SHAPE_PAIRS = [
    ((4,), (4,), 30),
    ((4,), (4, 3), 30),
    ((2, 4), (4,), 30),
    ((4,), (2, 4, 3), 600),
    ((2, 3, 4), (4,), 30),
    ((2, 2, 3, 4), (2, 2, 4, 3), 30),
    ((2, 1, 3, 4), (3, 4, 2), 600),
    ((3, 4), (2, 4, 5), 30),
]


def shift_gap(a: np.ndarray, b: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``r + c - out`` per cell: how far below the shifts the cell lies."""
    am, bm = _matrices(a, b)
    r = np.max(am, axis=-1)[..., :, None]
    c = np.max(bm, axis=-2)[..., None, :]
    return (r + c).reshape(hi.shape) - hi


@pytest.mark.parametrize(("sa", "sb", "spread"), SHAPE_PAIRS, ids=str)
def test_shapes_like_matmul(bk, rng, sa, sb, spread):
    a = rng.normal(0, spread, sa)
    b = rng.normal(0, spread, sb)
    hi, lo = exact(a, b)
    if spread > 100:
        # Guard on the data: some cell lies more than 400 below r + c,
        # where the shifted float64 product cannot certify it (that takes
        # P >= 2 K exp(-354.2) / eps, i.e. within about 320 of r + c).
        assert (shift_gap(a, b, hi) > 400).any(), shift_gap(a, b, hi)
    (got,) = run(bk, [(a, b)], "float64")
    assert got.shape == np.matmul(a, b).shape
    check(got, a, b, "float64", f"{sa} @ {sb}", (hi, lo))


@pytest.mark.parametrize(
    ("sa", "sb"),
    [
        ((0, 3), (3, 2)),
        ((2, 3), (3, 0)),
        ((0, 2, 3), (3, 4)),
        ((2, 0), (0, 3)),
        ((0,), (0,)),
        ((0,), (0, 3)),
        ((2, 0), (0,)),
        ((4, 2, 0), (1, 0, 3)),
    ],
    ids=str,
)
def test_empty(bk, sa, sb):
    # An empty sum (K = 0) is log 0 = -inf, as for the broadcast reference;
    # an empty result is empty.
    (got,) = run(bk, [(np.zeros(sa), np.zeros(sb))], "float64")
    want = np.matmul(np.zeros(sa), np.zeros(sb))
    assert got.shape == want.shape
    assert np.isneginf(got).all(), got


@pytest.mark.parametrize("dtype", FLOATS)
def test_k1_is_the_rounded_sum(bk, rng, dtype):
    # One term per cell: the result is a_i0 + b_0j, rounded once.
    a = rng.normal(0, 500, (5, 1)).astype(dtype)
    b = rng.normal(0, 500, (1, 6)).astype(dtype)
    (got,) = run(bk, [(a, b)], dtype)
    np.testing.assert_array_equal(got, a + b)


# Dtypes ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8", "bool"])
def test_integers_give_the_default_float(bk, rng, dtype):
    a = rng.integers(0, 2 if dtype == "bool" else 100, (3, 4)).astype(dtype)
    b = rng.integers(0, 2 if dtype == "bool" else 100, (4, 2)).astype(dtype)
    x, y = bk.asarray(a, None), bk.asarray(b, None)
    out = logmatmulexp(x, y)
    default = bk.xp.__array_namespace_info__().default_dtypes(device=bk.device)
    bk.check_array(out, x, default["real floating"])
    name = str(np.dtype(bk.to_numpy(out).dtype))
    check(bk.to_numpy(out), a.astype(float), b.astype(float), name, dtype)


def _half_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.normal(0, 8, (2, 4, 5))
    b = rng.normal(0, 8, (2, 5, 3))
    # The second matrix crosses its maxima 600 apart: beyond float32's
    # exponent range too, in which the half types compute.
    a[1] = -300 + rng.normal(0, 1, (4, 5))
    b[1] = -300 + rng.normal(0, 1, (5, 3))
    a[1, :, 0] = 300
    b[1, 1, :] = 300
    a[0, 0, 1] = -INF
    return a, b


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision(bk, rng, dtype):
    a, b = _half_case(rng)
    x, y = bk.asarray(a, dtype), bk.asarray(b, dtype)
    out = logmatmulexp(x, y)
    bk.check_array(out, x, bk.dtype(dtype))
    got = bk.to_numpy(out).astype(np.float64)
    # The values the backend holds, whatever its rounding of the inputs.
    a, b = bk.to_numpy(x).astype(np.float64), bk.to_numpy(y).astype(np.float64)
    hi, lo = exact(a, b)
    assert_same_nonfinite(got, hi, dtype)
    # float32 work (a few float32 ulps) rounded once to the half type: one
    # ulp of the scale in the half type.
    err = errors(got, hi, lo) / _spacing(scale(a, b, hi), dtype)
    assert np.max(err) <= 1.0, (got, hi, err)


def test_mixed_float_dtypes_promote(bk, rng):
    a = rng.normal(0, 300, (3, 4))
    b = rng.normal(0, 300, (4, 2))
    x, y = bk.asarray(a, "float32"), bk.asarray(b, "float64")
    out = logmatmulexp(x, y)
    bk.check_array(out, y, bk.dtype("float64"))
    check(bk.to_numpy(out), rounded(a, "float32"), b, "float64", "f32 @ f64")


def test_python_lists_give_numpy():
    out = logmatmulexp([[-500.0, 900.0]], [[900.0], [-500.0]])
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float64
    assert out.shape == (1, 1)
    assert abs(out[0, 0] - (400 + math.log(2))) <= 1e-13
