"""softmax and log_softmax: SciPy's results on every backend, plus ``where``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from lsekit import log_softmax, softmax

INF = np.inf
NAN = np.nan

rng = np.random.default_rng(7)

FUNCS = {
    "softmax": (softmax, special.softmax),
    "log_softmax": (log_softmax, special.log_softmax),
}

AXES = [
    ((6,), None),
    ((6,), 0),
    ((4, 5), None),
    ((4, 5), 1),
    ((4, 5), -2),
    ((3, 4, 5), (0, 2)),
    ((2, 3, 4), -1),
]


@pytest.fixture(params=list(FUNCS))
def pair(request):
    return FUNCS[request.param]


@pytest.mark.parametrize(("shape", "axis"), AXES)
@pytest.mark.parametrize("scale", [1.0, 30.0, 1000.0])
def test_parity(bk, pair, shape, axis, scale):
    ours, ref = pair
    x = rng.normal(scale=scale, size=shape)
    a = bk.asarray(x)
    out = ours(a, axis=axis)
    bk.check_array(out, a)
    got = bk.to_numpy(out)
    assert got.shape == x.shape
    # SciPy's log_softmax rounds a dominant entry's -log1p(s) to 0 where
    # lsekit keeps it: the two agree to an absolute 1e-15 there.
    atol = 1e-15 if ours is log_softmax else 1e-300
    np.testing.assert_allclose(got, ref(x, axis=axis), rtol=1e-13, atol=atol)


@pytest.mark.parametrize(
    "x",
    [
        [1000.0, 1001.0, 1002.0],
        [-1000.0, -999.0, -998.0],
        [1000.0, 1.0, 2.0, 3.0],
        [-1000.0, 1000.0, -1000.0, 5.0, 10.0, 0.001],
        [11.0, 12.0, -1000.0, 5.0, 10.0, 0.001],
        [0.0, -INF, 3.0],
        [NAN, 1.0, 2.0],
    ],
)
def test_seed_examples_match_scipy(bk, pair, x):
    ours, ref = pair
    got = bk.to_numpy(ours(bk.asarray(x)))
    with np.errstate(all="ignore"):
        want = ref(np.array(x))
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15, equal_nan=True)


def test_all_neginf_slice_is_not_nan(bk):
    x = np.array([[-INF, -INF, -INF], [0.0, 1.0, -INF]])
    sm = bk.to_numpy(softmax(bk.asarray(x), axis=1))
    lsm = bk.to_numpy(log_softmax(bk.asarray(x), axis=1))
    np.testing.assert_array_equal(sm[0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(lsm[0], [-INF, -INF, -INF])
    np.testing.assert_allclose(sm[1], special.softmax(x[1]), rtol=1e-15)
    np.testing.assert_allclose(lsm[1], special.log_softmax(x[1]), rtol=1e-15)


def test_positive_infinity(bk):
    # inf / inf is NaN at the infinite entry; the finite ones are 0 (SciPy
    # gives NaN there too) and -inf in log space (as SciPy).
    x = bk.asarray([INF, 0.0, 1.0])
    np.testing.assert_array_equal(bk.to_numpy(softmax(x)), [NAN, 0.0, 0.0])
    np.testing.assert_array_equal(bk.to_numpy(log_softmax(x)), [NAN, -INF, -INF])


def test_nan_propagates(bk):
    x = bk.asarray([[NAN, 0.0], [1.0, 2.0]])
    for f in (softmax, log_softmax):
        got = bk.to_numpy(f(x, axis=1))
        assert np.isnan(got[0]).all()
        assert not np.isnan(got[1]).any()


def test_where(bk):
    x = rng.normal(size=(3, 5))
    mask = rng.uniform(size=(3, 5)) < 0.6
    mask[2] = False
    a, m = bk.asarray(x), bk.asarray(mask, dtype=None)
    sm = bk.to_numpy(softmax(a, axis=1, where=m))
    lsm = bk.to_numpy(log_softmax(a, axis=1, where=m))
    for i in range(3):
        keep = mask[i]
        np.testing.assert_array_equal(sm[i][~keep], 0.0)
        np.testing.assert_array_equal(lsm[i][~keep], -INF)
        if keep.any():
            np.testing.assert_allclose(
                sm[i][keep], special.softmax(x[i][keep]), rtol=1e-14
            )
            np.testing.assert_allclose(
                lsm[i][keep], special.log_softmax(x[i][keep]), rtol=1e-14
            )


def test_where_broadcasts(bk):
    x = rng.normal(size=(4, 3))
    mask = np.array([True, False, True])
    got = bk.to_numpy(
        softmax(bk.asarray(x), axis=1, where=bk.asarray(mask, dtype=None))
    )
    np.testing.assert_allclose(got[:, [0, 2]], special.softmax(x[:, [0, 2]], axis=1))
    np.testing.assert_array_equal(got[:, 1], 0.0)


def test_dominant_log_probability(bk):
    got = bk.to_numpy(log_softmax(bk.asarray([0.0, -40.0])))
    assert got[0] == -4.248354255291589e-18
    assert got[1] == -40.0 - 4.248354255291589e-18


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sum_beyond_the_largest_number(bk, pair, dtype):
    # exp(79.9) is finite in float32 but 10000 of them are not, nor is
    # 10000 exp(709.5) in float64: the sum must not be formed unshifted.
    ours, ref = pair
    top = {"float32": 79.9, "float64": 709.5}[dtype]
    x = np.full((2, 10000), top)
    x[1, ::2] = top - 1.0
    a = bk.asarray(x, dtype=dtype)
    got = bk.to_numpy(ours(a, axis=1)).astype(np.float64)
    want = ref(bk.to_numpy(a).astype(np.float64), axis=1)
    np.testing.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps)


def test_empty(bk, pair):
    ours, _ = pair
    a = bk.asarray(np.zeros((0, 4)))
    out = ours(a, axis=1)
    assert bk.to_numpy(out).shape == (0, 4)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_dtypes(bk, pair, dtype):
    ours, ref = pair
    x = np.array([[60000.0, 59990.0, 0.0], [1.0, 2.0, 3.0]])
    a = bk.asarray(x, dtype=dtype)
    out = ours(a, axis=1)
    bk.check_array(out, a)
    want = ref(bk.to_numpy(a).astype(np.float64), axis=1)
    rtol = {"float16": 2e-3, "bfloat16": 1e-2, "float32": 2e-7}[dtype]
    np.testing.assert_allclose(bk.to_numpy(out).astype(np.float64), want, rtol=rtol)


def test_integer_input(bk, pair):
    ours, ref = pair
    x = np.array([[1, 2, 3], [0, 0, 5]])
    out = ours(bk.asarray(x, dtype=None), axis=1)
    rtol = 1e-6 if "float32" in str(out.dtype) else 1e-14
    np.testing.assert_allclose(bk.to_numpy(out), ref(x, axis=1), rtol=rtol)


def test_complex(bk, pair):
    ours, ref = pair
    x = rng.normal(size=(2, 3)) + 1j * rng.normal(size=(2, 3))
    got = bk.to_numpy(ours(bk.asarray(x, dtype="complex128"), axis=1))
    want = ref(x, axis=1)
    if ours is log_softmax:
        # Logarithms agree modulo 2*pi*i.
        got, want = np.exp(got), np.exp(want)
    np.testing.assert_allclose(got, want, rtol=1e-13)


def test_inputs_not_modified(bk, pair):
    ours, _ = pair
    x = np.array([[0.0, -INF, 3.0], [NAN, 1.0, 2.0]])
    m = np.array([True, False, True])
    a, where = bk.asarray(x), bk.asarray(m, dtype=None)
    ours(a, axis=1, where=where)
    np.testing.assert_array_equal(bk.to_numpy(a), x)
    np.testing.assert_array_equal(bk.to_numpy(where), m)


def test_lists_and_scalars(pair):
    ours, ref = pair
    np.testing.assert_allclose(
        ours([[1, 2], [3, 5]], axis=1), ref([[1, 2], [3, 5]], axis=1)
    )
    assert ours(3.0) == ref(3.0)
