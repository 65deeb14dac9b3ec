"""Accuracy against exact references (mpmath, 60 digits), in ulps.

The error of a result is measured in units in the last place of the exact
value in the result's dtype. Bounds asserted: logsumexp within 1 ulp in
float32 and float64; every log_softmax and softmax entry within 4 ulps.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from lsekit import log_softmax, logsumexp, softmax
from tests.families import FAMILIES, rows
from tests.support import (
    exact_log_softmax,
    exact_logsumexp,
    exact_softmax,
    ulp_error,
)

DTYPES = {"float32": np.float32, "float64": np.float64}

# float32 runs in float64 and rounds once: half an ulp is what it reaches.
# float64 has no wider dtype: its sum of exponentials is compensated
# (TwoSum), leaving the exponentials, log1p and the final addition.
LSE_ULPS = {"float32": 1.0, "float64": 1.0}


def _scale_error(bk, got, exact, dtype, *, scale=None):
    """ulp error of ``got``; results flushed to 0 by FTZ backends pass."""
    npdt = DTYPES[dtype]
    if (
        bk.manifest.flush_subnormals
        and got == 0.0
        and abs(exact) < np.finfo(npdt).smallest_normal
    ):
        return 0.0
    if scale is not None:
        spacing = float(np.spacing(npdt(scale)))
        return float(abs(mpmath.mpf(float(got)) - exact) / spacing)
    return ulp_error(got, exact, npdt)


def _batch(bk, family, dtype):
    data = rows(family, DTYPES[dtype])
    return data, [bk.asarray(r, dtype) for r in data]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_logsumexp_ulps(bk, family, dtype):
    data, arrays = _batch(bk, family, dtype)
    bound = LSE_ULPS[dtype]
    worst = 0.0
    for row, a in zip(data, arrays, strict=True):
        exact = exact_logsumexp(row)
        got = float(bk.to_numpy(logsumexp(a)))
        # Where the maximum m < 0 and log(sum exp(a - m)) cancel it, the
        # result is smaller than the terms it was computed from; the error
        # is then measured in ulps of |m| (the condition of the sum).
        scale = max(abs(float(exact)), abs(float(row.max())))
        worst = max(worst, _scale_error(bk, got, exact, dtype, scale=scale))
    assert worst <= bound, f"{family} {dtype}: {worst:.2f} ulp > {bound}"


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_log_softmax_ulps_every_entry(bk, family, dtype):
    data, arrays = _batch(bk, family, dtype)
    worst = 0.0
    for row, a in zip(data, arrays, strict=True):
        got = bk.to_numpy(log_softmax(a))
        for g, e in zip(got, exact_log_softmax(row), strict=True):
            worst = max(worst, _scale_error(bk, g, e, dtype))
    assert worst <= 4.0, f"{family} {dtype}: {worst:.2f} ulp > 4"


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_softmax(bk, family, dtype):
    npdt = DTYPES[dtype]
    eps = float(np.finfo(npdt).eps)
    data, arrays = _batch(bk, family, dtype)
    for row, a in zip(data, arrays, strict=True):
        got = bk.to_numpy(softmax(a)).astype(np.float64)
        assert abs(got.sum() - 1.0) <= 4 * eps * max(1.0, np.log2(row.size))
        for g, e, v in zip(got, exact_softmax(row), row, strict=True):
            if e < np.finfo(npdt).smallest_normal:
                continue
            err = _scale_error(bk, g, e, dtype)
            assert err <= 4.0, f"{family} {dtype}: {err:.2f} ulp at {v}"


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        ([0.0, -40.0], 4.248354255291589e-18),
        ([-40.0, 0.0], 4.248354255291589e-18),
    ],
)
def test_dominant_term_values(bk, x, expected):
    exact = exact_logsumexp(x)
    assert float(exact) == expected
    assert float(bk.to_numpy(logsumexp(bk.asarray(x)))) == expected
    top = int(np.argmax(x))
    ls = bk.to_numpy(log_softmax(bk.asarray(x)))
    assert ls[top] == -expected


def test_dominant_float32(bk):
    # log1p(exp(-20)) = 2.0611536e-09 in float32: the float32 max-shift
    # formula returns 0.
    a = bk.asarray([0.0, -20.0], "float32")
    exact = exact_logsumexp([0.0, -20.0])
    got = float(bk.to_numpy(logsumexp(a)))
    assert ulp_error(got, exact, np.float32) <= 0.5
