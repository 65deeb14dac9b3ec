"""logsumexp: SciPy's results on every backend, plus JAX's ``where``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import special

from lsekit import logsumexp

INF = np.inf
NAN = np.nan

rng = np.random.default_rng(20261122)

SHAPES_AXES = [
    ((7,), None),
    ((7,), 0),
    ((7,), -1),
    ((4, 5), None),
    ((4, 5), 0),
    ((4, 5), 1),
    ((4, 5), -2),
    ((4, 5), (0, 1)),
    ((3, 4, 5), (0, 2)),
    ((3, 4, 5), (2, 0)),
    ((3, 4, 5), -1),
    ((2, 3, 4, 5), (1, 3)),
]


def _data(shape: tuple[int, ...], scale: float = 5.0) -> np.ndarray:
    return rng.normal(scale=scale, size=shape)


def _compare(bk, result, expected, *, rtol=1e-13, atol=0.0):
    got = bk.to_numpy(result)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True)
    assert got.shape == np.shape(expected)


@pytest.mark.parametrize(("shape", "axis"), SHAPES_AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_parity_axis_keepdims(bk, shape, axis, keepdims):
    x = _data(shape)
    a = bk.asarray(x)
    out = logsumexp(a, axis=axis, keepdims=keepdims)
    bk.check_array(out, a)
    _compare(bk, out, special.logsumexp(x, axis=axis, keepdims=keepdims))


@pytest.mark.parametrize(("shape", "axis"), SHAPES_AXES)
@pytest.mark.parametrize("b_shape", ["same", "trailing", "ones"])
@pytest.mark.parametrize("return_sign", [False, True])
def test_parity_weights(bk, shape, axis, b_shape, return_sign):
    x = _data(shape)
    if b_shape == "same":
        w = rng.normal(size=shape)
    elif b_shape == "trailing":
        w = rng.uniform(-0.5, 2.0, size=shape[-1:])
    else:
        w = rng.uniform(0.0, 3.0, size=(1,) * len(shape))
    w[..., 0] = 0.0
    a, b = bk.asarray(x), bk.asarray(w)
    out = logsumexp(a, axis=axis, b=b, return_sign=return_sign)
    with np.errstate(invalid="ignore"):
        ref = special.logsumexp(x, axis=axis, b=w, return_sign=return_sign)
    if return_sign:
        bk.check_array(out[0], a)
        bk.check_array(out[1], a)
        _compare(bk, out[0], ref[0], rtol=1e-11)
        _compare(bk, out[1], ref[1])
    else:
        bk.check_array(out, a)
        _compare(bk, out, ref, rtol=1e-11)


def test_weights_larger_than_a(bk):
    x, w = _data((5,)), rng.uniform(0.5, 2.0, size=(3, 5))
    out = logsumexp(bk.asarray(x), axis=-1, b=bk.asarray(w))
    _compare(bk, out, special.logsumexp(x, axis=-1, b=w))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scalar_weight_keeps_the_dtype(bk, dtype):
    x = _data((4, 3))
    a = bk.asarray(x, dtype)
    out = logsumexp(a, axis=1, b=2.5)
    bk.check_array(out, a)
    rtol = 1e-6 if dtype == "float32" else 1e-13
    ref = special.logsumexp(bk.to_numpy(a).astype(np.float64), axis=1, b=2.5)
    _compare(bk, out, ref, rtol=rtol)


EDGE_CASES = [
    ([-INF, -INF], None),
    ([INF, 1.0], None),
    ([INF, -INF], None),
    ([INF, INF], None),
    ([NAN, 1.0], None),
    ([NAN, INF], None),
    ([-INF, NAN], None),
    ([INF, 1.0], [0.0, 1.0]),
    ([NAN, 1.0], [0.0, 1.0]),
    ([0.0, 0.0], [1.0, -2.0]),
    ([0.0, 0.0], [1.0, -1.0]),
    ([INF, INF], [1.0, -1.0]),
    ([1.0, 2.0], [-1.0, -1.0]),
    ([-INF, -INF], [1.0, 2.0]),
    ([0.0, -40.0], None),
    ([-40.0, 0.0], None),
    ([1000.0, 1000.0, 1000.0], None),
    ([-1000.0, -1000.0, -1000.0], None),
    ([1000.0, 1.0, 2.0, 3.0], None),
    ([-1000.0, 1000.0, -1000.0, 5.0, 10.0, 0.001], None),
    ([1.7e308, 1.7e308], None),
    ([-1.7e308, 0.0], None),
    ([5e-324, 0.0], None),
]


@pytest.mark.parametrize(("x", "w"), EDGE_CASES)
@pytest.mark.parametrize("return_sign", [False, True])
def test_edge_cases_match_scipy(bk, x, w, return_sign):
    a = bk.asarray(x)
    b = None if w is None else bk.asarray(w)
    out = logsumexp(a, b=b, return_sign=return_sign)
    with np.errstate(all="ignore"):
        ref = special.logsumexp(x, b=w, return_sign=return_sign)
    if return_sign:
        _compare(bk, out[0], ref[0])
        _compare(bk, out[1], ref[1])
    else:
        _compare(bk, out, ref)


def test_empty(bk):
    a = bk.asarray(np.zeros((0, 3)))
    _compare(bk, logsumexp(a, axis=0), [-INF, -INF, -INF])
    _compare(bk, logsumexp(a), -INF)
    _compare(bk, logsumexp(a, axis=0, keepdims=True), [[-INF, -INF, -INF]])
    _compare(bk, logsumexp(a, axis=1), np.zeros(0))
    _, sign = logsumexp(a, axis=0, return_sign=True)
    # An empty sum is 0: its sign is 0, as for an all -inf slice.
    _compare(bk, sign, [0.0, 0.0, 0.0])


def test_dominant_term_keeps_its_digits(bk):
    # log(1 + exp(-40)) = 4.248354255291589e-18: the value every peer but
    # SciPy rounds to 0.
    out = logsumexp(bk.asarray([0.0, -40.0]))
    assert bk.to_numpy(out) == 4.248354255291589e-18


def test_ties_keep_small_terms_after_cancellation(bk):
    # 1 + e^-40 - 1 = e^-40 exactly: the tied maxima cancel, the small
    # term survives (SciPy gives -inf here).
    out = logsumexp(bk.asarray([0.0, -40.0, 0.0]), b=bk.asarray([1.0, 1.0, -1.0]))
    np.testing.assert_allclose(bk.to_numpy(out), -40.0, rtol=1e-15)


@pytest.mark.parametrize("shape", [(6,), (3, 4)])
@pytest.mark.parametrize("axis", [None, -1])
def test_where_is_weights_zero(bk, shape, axis):
    x = _data(shape)
    mask = rng.uniform(size=shape) < 0.6
    out = logsumexp(bk.asarray(x), axis=axis, where=bk.asarray(mask, dtype=None))
    # SciPy ignores entries with b == 0: a masked entry is one.
    _compare(bk, out, special.logsumexp(x, axis=axis, b=mask.astype(float)))


def test_where_with_weights_and_nonfinite(bk):
    x = np.array([[1.0, NAN, 2.0], [INF, 0.0, 1.0], [3.0, 4.0, -INF]])
    w = np.array([[2.0, 1.0, -1.0], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    mask = np.array([[True, False, True], [False, True, True], [False, False, False]])
    out = logsumexp(
        bk.asarray(x), axis=1, b=bk.asarray(w), where=bk.asarray(mask, dtype=None)
    )
    with np.errstate(all="ignore"):
        ref = special.logsumexp(np.where(mask, x, 0.0), axis=1, b=w * mask)
    ref[2] = -INF  # a fully masked row is an empty sum
    _compare(bk, out, ref)


def test_fully_masked_and_all_neginf(bk):
    x = np.array([[1.0, 2.0], [-INF, -INF]])
    mask = np.array([[False, False], [True, True]])
    out, sign = logsumexp(
        bk.asarray(x), axis=1, where=bk.asarray(mask, dtype=None), return_sign=True
    )
    _compare(bk, out, [-INF, -INF])
    _compare(bk, sign, [0.0, 0.0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_preserved(bk, dtype):
    a = bk.asarray(_data((3, 4)), dtype=dtype)
    out = logsumexp(a, axis=1)
    bk.check_array(out, a)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_computes_in_float32(bk, dtype):
    # 60000 is near float16's maximum: exp of it overflows unless the sum
    # is shifted, and the shifted sum of 4 terms overflows float16 if it
    # were accumulated there at this scale.
    x = np.array([60000.0, 60000.0, 59999.0, 0.0])
    a = bk.asarray(x, dtype=dtype)
    out = logsumexp(a)
    bk.check_array(out, a)
    ref = special.logsumexp(bk.to_numpy(a).astype(np.float64))
    np.testing.assert_allclose(bk.to_numpy(out).astype(np.float64), ref, rtol=1e-2)


@pytest.mark.parametrize("dtype", ["int32", "int64", "bool"])
def test_integer_input_promotes_to_default_float(bk, dtype):
    x = np.array([[1, 0, 3], [0, 1, 1]]).astype(dtype)
    a = bk.asarray(x, dtype=None)
    out = logsumexp(a, axis=1)
    xp = bk.xp
    default = xp.__array_namespace_info__().default_dtypes(device=bk.device)[
        "real floating"
    ]
    bk.check_array(out, a, dtype=default)
    rtol = 1e-6 if str(default).endswith("float32") else 1e-14
    _compare(bk, out, special.logsumexp(x.astype(float), axis=1), rtol=rtol)


@pytest.mark.parametrize("return_sign", [False, True])
def test_complex_matches_scipy(bk, return_sign):
    x = rng.normal(size=(3, 4)) + 1j * rng.uniform(-3, 3, size=(3, 4))
    w = rng.normal(size=(3, 4))
    a = bk.asarray(x, dtype="complex128")
    out = logsumexp(a, axis=1, b=bk.asarray(w), return_sign=return_sign)
    ref = special.logsumexp(x, axis=1, b=w, return_sign=return_sign)
    if return_sign:
        _compare(bk, out[0], ref[0])
        _compare(bk, out[1], ref[1])
    else:
        got = bk.to_numpy(out)
        # Both are logarithms of the same sum: equal real parts, imaginary
        # parts equal modulo 2*pi (lsekit returns the principal branch).
        np.testing.assert_allclose(np.exp(got), np.exp(ref), rtol=1e-13)
        assert np.all(np.abs(got.imag) <= np.pi)


def test_python_scalars_and_lists():
    assert logsumexp(3.0) == 3.0
    out = logsumexp([[1, 2], [3, 4]], axis=1)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, special.logsumexp([[1, 2], [3, 4]], axis=1))
    np.testing.assert_allclose(
        logsumexp([1.0, 2.0], b=[1.0, 2.0]), special.logsumexp([1.0, 2.0], b=[1, 2])
    )


def test_numpy_zero_d_result_is_a_scalar_like_scipy():
    out = logsumexp(np.array([1.0, 2.0]))
    assert type(out) is type(special.logsumexp(np.array([1.0, 2.0])))


@pytest.mark.parametrize("return_sign", [False, True])
@pytest.mark.parametrize("use_b", [False, True])
def test_inputs_not_modified(bk, return_sign, use_b):
    x = np.array([[0.0, -INF, 3.0], [NAN, 1.0, 2.0]])
    w = np.array([0.0, 1.0, -2.0])
    m = np.array([True, False, True])
    a, b, where = bk.asarray(x), bk.asarray(w), bk.asarray(m, dtype=None)
    logsumexp(a, axis=1, b=b if use_b else None, return_sign=return_sign, where=where)
    np.testing.assert_array_equal(bk.to_numpy(a), x)
    np.testing.assert_array_equal(bk.to_numpy(b), w)
    np.testing.assert_array_equal(bk.to_numpy(where), m)


@pytest.mark.parametrize(
    ("x", "w"),
    list(
        itertools.product(
            [[0.0, -INF], [-INF, -INF], [INF, 0.0], [NAN, 0.0], [1000.0, -1000.0]],
            [None, [1.0, -1.0], [0.0, 2.0]],
        )
    ),
)
def test_no_warnings_on_nonfinite_input(bk, x, w):
    # filterwarnings = error: any RuntimeWarning fails the test, including
    # those Dask raises when the graph is computed.
    out = logsumexp(
        bk.asarray(x), b=None if w is None else bk.asarray(w), return_sign=True
    )
    bk.to_numpy(out[0])
    bk.to_numpy(out[1])


def test_dask_array_of_unknown_length():
    da = pytest.importorskip("dask.array")
    x = np.array([1.0, -1.0, 2.0, 0.5])
    d = da.from_array(x, chunks=2)
    u = d[d > 0]  # its length is unknown until computed
    keep = x[x > 0]
    np.testing.assert_allclose(logsumexp(u).compute(), special.logsumexp(keep))
    np.testing.assert_allclose(
        logsumexp(u, b=u).compute(), special.logsumexp(keep, b=keep)
    )
