"""Property tests: identities that logsumexp, softmax and log_softmax obey.

Every property runs on every backend through ``bk``. The expected values
come from the identity itself (a shifted, permuted or reweighted call of the
same function, NumPy arithmetic) or from :func:`scipy.special.logsumexp`,
never from a stored output of lsekit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from scipy import special

from lsekit import log_softmax, logsumexp, softmax
from tests.support import exact_logsumexp

INF = np.inf
EPS = np.finfo(np.float64).eps

# ``bk`` is function-scoped: it is the same backend for every example of one
# test, which is what is wanted. ``database=None`` keeps Hypothesis from
# writing an example database into the working tree.
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

BOUNDED = st.floats(-1e3, 1e3)
WIDE = st.floats(-1e300, 1e300)
ELEMENTS = pytest.mark.parametrize("elements", [BOUNDED, WIDE], ids=["1e3", "1e300"])


def _axes(ndim: int) -> list[int | tuple[int, ...] | None]:
    if ndim == 1:
        return [None, 0, -1, (0,)]
    return [None, 0, 1, -1, -2, (0, 1), (1, 0)]


def _reduced(shape: tuple[int, ...], axis) -> tuple[int, ...]:
    """The axes ``axis`` reduces, as a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(len(shape)))
    items = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(i % len(shape) for i in items))


def _count(shape: tuple[int, ...], axis) -> int:
    return math.prod(shape[i] for i in _reduced(shape, axis))


# JAX compiles every operation afresh for each new shape, eager calls
# included (about a second per example with random shapes): there the sides
# come from a fixed menu, edge sizes 1 and 2 included, so that most examples
# reuse compiled code. Elsewhere every side from 1 to 20 is drawn.
JAX_SIDES = (1, 2, 3, 5, 8, 13, 20)


def _shapes(bk) -> st.SearchStrategy[tuple[int, ...]]:
    if bk.name == "jax":
        sides = st.lists(st.sampled_from(JAX_SIDES), min_size=1, max_size=2)
        return sides.map(tuple)
    return array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=20)


@st.composite
def data_and_axis(draw, bk, elements=BOUNDED):
    shape = draw(_shapes(bk))
    x = draw(arrays(np.float64, shape, elements=elements))
    axis = draw(st.sampled_from(_axes(len(shape))))
    return x, axis


def _close(got, want, tol, what: str) -> None:
    """``|got - want| <= tol`` elementwise; equal infinities count as equal."""
    got, want = np.broadcast_arrays(np.asarray(got), np.asarray(want))
    tol = np.broadcast_to(tol, got.shape)
    assert not np.isnan(got).any(), f"{what}: NaN in {got}"
    same_inf = np.isinf(want) & (got == want)
    with np.errstate(invalid="ignore"):
        ok = same_inf | (np.abs(got - want) <= tol)
    bad = np.argwhere(~ok)
    assert ok.all(), (
        f"{what}: {bad.shape[0]} entries differ, e.g. at {tuple(bad[0])}: "
        f"got {got[tuple(bad[0])]!r}, expected {want[tuple(bad[0])]!r} "
        f"(tolerance {tol[tuple(bad[0])]!r})"
    )


# logsumexp ------------------------------------------------------------------


@ELEMENTS
@SETTINGS
@given(data=st.data())
def test_logsumexp_shift_invariance(bk, elements, data):
    x, axis = data.draw(data_and_axis(bk, elements))
    c = data.draw(elements, label="c")
    a = bk.asarray(x)
    base = logsumexp(a, axis=axis)
    bk.check_array(base, a)
    base = bk.to_numpy(base)
    shifted = bk.to_numpy(logsumexp(bk.asarray(x + c), axis=axis))
    scale = np.maximum(np.maximum(np.abs(base), abs(c)), 1.0)
    _close(shifted, base + c, 1e-12 * scale, f"logsumexp(x + {c!r})")


@ELEMENTS
@SETTINGS
@given(data=st.data())
def test_logsumexp_permutation_invariance(bk, elements, data):
    x, axis = data.draw(data_and_axis(bk, elements))
    reduced = _reduced(x.shape, axis)
    if len(reduced) == x.ndim:
        perm = np.asarray(data.draw(st.permutations(range(x.size)), label="perm"))
        variants = [x.ravel()[::-1].reshape(x.shape), x.ravel()[perm].reshape(x.shape)]
    else:
        (ax,) = reduced
        perm = np.asarray(data.draw(st.permutations(range(x.shape[ax]))))
        variants = [np.flip(x, axis=ax), np.take(x, perm, axis=ax)]
    base = bk.to_numpy(logsumexp(bk.asarray(x), axis=axis))
    tol = 1e-13 * np.maximum(np.abs(base), 1.0)
    for v in variants:
        got = bk.to_numpy(logsumexp(bk.asarray(v), axis=axis))
        _close(got, base, tol, "logsumexp of the permuted input")


@ELEMENTS
@SETTINGS
@given(data=st.data())
def test_logsumexp_between_max_and_max_plus_log_n(bk, elements, data):
    x, axis = data.draw(data_and_axis(bk, elements))
    n = _count(x.shape, axis)
    got = bk.to_numpy(logsumexp(bk.asarray(x), axis=axis))
    if bk.manifest.flush_subnormals:
        # The backend reads subnormal inputs as 0 (XLA on CPU).
        x = np.where(np.abs(x) < np.finfo(np.float64).smallest_normal, 0.0, x)
    m = np.max(x, axis=axis)
    hi = m + math.log(n)
    # A few ulps of slack for the rounding of the result and of m + log n.
    lo_slack = 4 * np.spacing(np.abs(m))
    hi_slack = 4 * np.spacing(np.abs(m) + math.log(n))
    assert np.all(got >= m - lo_slack), (x, axis, got, m)
    assert np.all(got <= hi + hi_slack), (x, axis, got, hi)


# Down to the smallest normal (JAX flushes subnormals to zero).
POSITIVE_WEIGHTS = st.one_of(st.just(0.0), st.floats(2.2250738585072014e-308, 1e3))


@SETTINGS
@given(data=st.data())
def test_logsumexp_weights_are_log_shifts(bk, data):
    # b >= 0: log(sum b exp(a)) = log(sum exp(a + log b)), b == 0 being -inf.
    x, axis = data.draw(data_and_axis(bk))
    w = data.draw(arrays(np.float64, x.shape, elements=POSITIVE_WEIGHTS), label="w")
    with np.errstate(divide="ignore"):
        logw = np.log(w)
    a = bk.asarray(x)
    got = logsumexp(a, axis=axis, b=bk.asarray(w))
    bk.check_array(got, a)
    got = bk.to_numpy(got)
    want = bk.to_numpy(logsumexp(bk.asarray(x + logw), axis=axis))
    # x + log(w) rounds on the scale of |x| and |log w|.
    finite_logw = np.abs(logw[np.isfinite(logw)])
    scale = max(np.max(np.abs(x)), np.max(finite_logw, initial=0.0), 1.0)
    _close(got, want, 1e-13 * np.maximum(np.abs(want), scale), "logsumexp(x, b=w)")


@pytest.mark.parametrize(
    ("x", "w"),
    [
        ([0.0, 1.0], [1e300, 1e-300]),
        ([1.0, 0.0], [2.2250738585072014e-309, 2.0]),
        ([0.0, 1.0], [1.0, 5e-324]),
    ],
)
def test_tiny_weight_on_the_maximum(bk, x, w):
    # The maximum's own weight is far smaller than the sum of the others:
    # s / W would overflow, so the larger part is the one factored out.
    got = bk.to_numpy(logsumexp(bk.asarray(x), b=bk.asarray(w)))
    want = float(exact_logsumexp(x, w))
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)


@SETTINGS
@given(data=st.data())
def test_where_is_zero_weights_as_in_scipy(bk, data):
    x, axis = data.draw(data_and_axis(bk))
    mask = data.draw(arrays(np.bool_, x.shape), label="mask")
    a = bk.asarray(x)
    got = logsumexp(a, axis=axis, where=bk.asarray(mask, dtype=None))
    bk.check_array(got, a)
    got = bk.to_numpy(got)
    with np.errstate(all="ignore"):
        want = special.logsumexp(x, axis=axis, b=mask.astype(np.float64))
    # A fully masked slice is an empty sum. SciPy gives -inf for it too, but
    # NaN once its largest entry is above log(DBL_MAX) (exp(710) * 0).
    want = np.where(np.any(mask, axis=axis), want, -INF)
    _close(got, want, 1e-13 * np.maximum(np.abs(want), 1.0), "logsumexp(where=m)")


NONFINITE = {
    "neginf": st.one_of(BOUNDED, st.just(-INF)),
    "inf-nan": st.one_of(BOUNDED, st.sampled_from([-INF, INF, np.nan])),
}


@pytest.mark.parametrize("kind", list(NONFINITE))
@SETTINGS
@given(data=st.data())
def test_logsumexp_matches_scipy(bk, kind, data):
    x, axis = data.draw(data_and_axis(bk, NONFINITE[kind]))
    keepdims = data.draw(st.booleans(), label="keepdims")
    return_sign = data.draw(st.booleans(), label="return_sign")
    out = logsumexp(
        bk.asarray(x), axis=axis, keepdims=keepdims, return_sign=return_sign
    )
    with np.errstate(all="ignore"):
        ref = special.logsumexp(
            x, axis=axis, keepdims=keepdims, return_sign=return_sign
        )
    if return_sign:
        (out, sign), (ref, ref_sign) = out, ref
        np.testing.assert_array_equal(bk.to_numpy(sign), ref_sign)
    got = bk.to_numpy(out)
    assert got.shape == np.shape(ref)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    ok = np.isfinite(ref)
    scale = np.maximum(np.abs(ref[ok]), 1.0)
    _close(got[ok], ref[ok], 1e-13 * scale, "logsumexp vs scipy")


# softmax and log_softmax ----------------------------------------------------


@ELEMENTS
@SETTINGS
@given(data=st.data())
def test_log_softmax_is_x_minus_logsumexp(bk, elements, data):
    x, axis = data.draw(data_and_axis(bk, elements))
    a = bk.asarray(x)
    got = log_softmax(a, axis=axis)
    bk.check_array(got, a)
    got = bk.to_numpy(got)
    lse = bk.to_numpy(logsumexp(a, axis=axis, keepdims=True))
    scale = np.abs(x) + np.abs(lse) + 1.0
    _close(got, x - lse, 1e-13 * scale, "log_softmax(x) vs x - logsumexp(x)")


@ELEMENTS
@SETTINGS
@given(data=st.data())
def test_softmax_is_a_distribution(bk, elements, data):
    x, axis = data.draw(data_and_axis(bk, elements))
    a = bk.asarray(x)
    got = softmax(a, axis=axis)
    bk.check_array(got, a)
    got = bk.to_numpy(got)
    assert got.shape == x.shape
    assert np.all((got >= 0.0) & (got <= 1.0)), got
    total = np.sum(got, axis=axis)
    _close(total, 1.0, 1e-13, "sum of softmax")


@ELEMENTS
@SETTINGS
@given(data=st.data())
def test_exp_log_softmax_is_softmax(bk, elements, data):
    x, axis = data.draw(data_and_axis(bk, elements))
    a = bk.asarray(x)
    sm = bk.to_numpy(softmax(a, axis=axis))
    ls = bk.to_numpy(log_softmax(a, axis=axis))
    # exp amplifies the absolute error of ls (a few ulps of |ls|) into a
    # relative one; below the normal range only absolute accuracy is left.
    tol = 1e-14 * (1.0 + np.abs(ls)) * sm + 1e-300
    _close(np.exp(ls), sm, tol, "exp(log_softmax) vs softmax")


@ELEMENTS
@SETTINGS
@given(data=st.data())
def test_softmax_permutation_equivariance(bk, elements, data):
    x, axis = data.draw(data_and_axis(bk, elements))
    reduced = _reduced(x.shape, axis)
    if len(reduced) == x.ndim:
        perm = np.asarray(data.draw(st.permutations(range(x.size)), label="perm"))

        def apply(y):
            return y.ravel()[perm].reshape(y.shape)

    else:
        (ax,) = reduced
        perm = np.asarray(data.draw(st.permutations(range(x.shape[ax]))))

        def apply(y):
            return np.take(y, perm, axis=ax)

    for func in (softmax, log_softmax):
        base = bk.to_numpy(func(bk.asarray(x), axis=axis))
        got = bk.to_numpy(func(bk.asarray(apply(x)), axis=axis))
        want = apply(base)
        tol = 1e-13 * np.abs(want) + (1e-300 if func is softmax else 1e-13)
        _close(got, want, tol, f"{func.__name__} of the permuted input")


@SETTINGS
@given(data=st.data())
def test_log_softmax_shift_invariance(bk, data):
    x, axis = data.draw(data_and_axis(bk))
    c = data.draw(BOUNDED, label="c")
    base = bk.to_numpy(log_softmax(bk.asarray(x), axis=axis))
    got = bk.to_numpy(log_softmax(bk.asarray(x + c), axis=axis))
    scale = np.max(np.abs(x)) + abs(c) + 1.0
    _close(got, base, 1e-13 * scale, f"log_softmax(x + {c!r})")


# where ------------------------------------------------------------------------


@st.composite
def masked_with_empty_slice(draw, bk):
    """Data, axis and a mask that leaves at least one slice fully masked.

    The masked-out entries of that slice may be NaN or infinite: masked
    entries are absent, whatever they hold.
    """
    x, axis = draw(data_and_axis(bk, WIDE))
    mask = draw(arrays(np.bool_, x.shape))
    reduced = _reduced(x.shape, axis)
    if len(reduced) == x.ndim:
        mask[...] = False
        empty = np.ones(x.shape, dtype=bool)
    else:
        (ax,) = reduced
        other = 1 - ax
        k = draw(st.integers(0, x.shape[other] - 1), label="empty slice")
        empty = np.zeros(x.shape, dtype=bool)
        index = [slice(None)] * 2
        index[other] = k
        empty[tuple(index)] = True
        mask[empty] = False
    junk = draw(
        arrays(np.float64, x.shape, elements=st.sampled_from([np.nan, INF, -INF, 0.0]))
    )
    x = np.where(empty, junk, x)
    return x, axis, mask, empty


@SETTINGS
@given(data=st.data())
def test_fully_masked_slice(bk, data):
    x, axis, mask, empty = data.draw(masked_with_empty_slice(bk))
    a, where = bk.asarray(x), bk.asarray(mask, dtype=None)
    lse = bk.to_numpy(logsumexp(a, axis=axis, where=where, keepdims=True))
    sm = bk.to_numpy(softmax(a, axis=axis, where=where))
    ls = bk.to_numpy(log_softmax(a, axis=axis, where=where))
    for name, out in [("logsumexp", lse), ("softmax", sm), ("log_softmax", ls)]:
        assert not np.isnan(out).any(), f"{name} gave NaN: {out}"
    # The forced slice, and any other the random mask happened to empty.
    kept = np.any(mask, axis=axis, keepdims=True)
    assert not np.all(kept)
    assert np.all(lse[~kept] == -INF), lse
    assert np.all(np.isfinite(lse[kept])), lse
    assert np.all(sm[empty] == 0.0), sm
    assert np.all(ls[empty] == -INF), ls
    # Every masked entry, in an empty slice or not, is absent.
    assert np.all(sm[~mask] == 0.0), sm
    assert np.all(ls[~mask] == -INF), ls
    # The slices that keep entries are still distributions.
    total = np.sum(sm, axis=axis, keepdims=True)
    _close(total[kept], 1.0, 1e-13, "sum of masked softmax")
    assert np.all(total[~kept] == 0.0), total


@SETTINGS
@given(data=st.data())
def test_where_softmax_matches_the_kept_entries(bk, data):
    # softmax(x, where=m) over a 1-D slice is softmax of the kept entries.
    x = data.draw(arrays(np.float64, st.integers(1, 20), elements=BOUNDED))
    mask = data.draw(arrays(np.bool_, x.shape), label="mask")
    where = bk.asarray(mask, dtype=None)
    sm = bk.to_numpy(softmax(bk.asarray(x), where=where))
    ls = bk.to_numpy(log_softmax(bk.asarray(x), where=where))
    if mask.any():
        kept = bk.asarray(x[mask])
        want_sm = bk.to_numpy(softmax(kept))
        want_ls = bk.to_numpy(log_softmax(kept))
        _close(sm[mask], want_sm, 1e-13 * want_sm + 1e-300, "masked softmax")
        scale = 1e-13 * (np.abs(want_ls) + 1.0)
        _close(ls[mask], want_ls, scale, "masked log_softmax")
        lse = bk.to_numpy(logsumexp(bk.asarray(x), where=where))
        with np.errstate(all="ignore"):
            want = special.logsumexp(x[mask])
        _close(lse, want, 1e-13 * max(abs(want), 1.0), "masked logsumexp")
    assert np.all(sm[~mask] == 0.0)
    assert np.all(ls[~mask] == -INF)
