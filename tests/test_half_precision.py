"""float16 and bfloat16: every function accumulates in float32 and rounds once.

The reference is the function in float64 (SciPy, or the closed form) of the
very half-precision values passed in, so the only error allowed is that of
the result's own rounding to the half dtype, plus float32's, far smaller:
at most one unit in the last place of the half dtype. Logits up to the
dtype's maximum must not overflow where the result is finite.

Backends whose manifests list the dtype run these tests (NumPy has float16
only); the others skip with the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import special

from lsekit import cross_entropy, log_softmax, logmatmulexp, logsumexp, softmax

# (significand bits after the point, smallest normal exponent, largest finite)
FORMATS = {
    "float16": (10, -14, 65504.0),
    "bfloat16": (7, -126, 3.3895313892515355e38),
}
HALF = list(FORMATS)


def ulps(got: np.ndarray, want: np.ndarray, dtype: str, flush: bool) -> np.ndarray:
    """``|got - want|`` in units of the last place of ``want`` in ``dtype``.

    A backend that flushes subnormal results to zero may return 0 for a
    result below the smallest normal number.
    """
    bits, emin, _ = FORMATS[dtype]
    want = np.asarray(want, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.floor(np.log2(np.abs(want)))
    exponent = np.maximum(np.where(np.isfinite(exponent), exponent, emin), emin)
    error = np.abs(got - want) / 2.0 ** (exponent - bits)
    if flush:
        error = np.where((got == 0) & (np.abs(want) < 2.0**emin), 0.0, error)
    return np.where(same, 0.0, error)


def _data(dtype: str, shape: tuple[int, ...], scale: float, seed: int) -> np.ndarray:
    """Random values, rounded to ``dtype`` (as float64 for the references)."""
    x = np.random.default_rng(seed).normal(scale=scale, size=shape)
    return _round(x, dtype)


def _round(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float64)
    # bfloat16: keep the top 16 bits of the float32, rounding to nearest even.
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


def _check(bk: Any, got: Any, like: Any, want: np.ndarray, dtype: str, what: str):
    bk.check_array(got, like)
    error = ulps(bk.to_numpy(got), want, dtype, bk.manifest.flush_subnormals)
    assert error.max(initial=0.0) <= 1.0, (
        f"{what}: {error.max()} ulps\n{bk.to_numpy(got)}\n{want}"
    )


def _near_max(dtype: str) -> np.ndarray:
    """Logits up to the dtype's largest finite value; the float32 of a
    shifted sum holds them, the half dtype's own exponentials would not."""
    top = FORMATS[dtype][2]
    return _round(np.array([[top, top, 0.999 * top, 0.5 * top, 0.0]]), dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_logsumexp(bk, dtype):
    x = _data(dtype, (6, 40), 8.0, 1)
    b = np.abs(_data(dtype, (6, 40), 1.0, 2))
    a = bk.asarray(x, dtype)
    _check(bk, logsumexp(a, axis=1), a, special.logsumexp(x, axis=1), dtype, "plain")
    got = logsumexp(a, axis=1, b=bk.asarray(b, dtype))
    want = special.logsumexp(x, axis=1, b=b)
    _check(bk, got, a, want, dtype, "weights")
    top = _near_max(dtype)
    big = bk.asarray(top, dtype)
    _check(
        bk, logsumexp(big, axis=1), big, special.logsumexp(top, axis=1), dtype, "max"
    )


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("func", ["softmax", "log_softmax"])
def test_normalisations(bk, dtype, func):
    fn, ref = {
        "softmax": (softmax, special.softmax),
        "log_softmax": (log_softmax, special.log_softmax),
    }[func]
    x = _data(dtype, (6, 40), 8.0, 3)
    x[0, :2] = [0.0, -12.0]  # a dominant entry with a small log-probability
    a = bk.asarray(x, dtype)
    _check(bk, fn(a, axis=1), a, ref(x, axis=1), dtype, func)
    top = _near_max(dtype)
    # The spread of these logits is the dtype's maximum: log_softmax of the
    # smallest is -max (finite); softmax underflows to 0 there.
    big = bk.asarray(top, dtype)
    _check(bk, fn(big, axis=1), big, ref(top, axis=1), dtype, f"{func} max")


@pytest.mark.parametrize("dtype", HALF)
def test_cross_entropy(bk, dtype):
    x = _data(dtype, (16, 10), 4.0, 4)
    y = np.random.default_rng(5).integers(10, size=16)
    x[0, y[0]] = 30.0  # a confident, correct prediction: a tiny loss
    logits = bk.asarray(x, dtype)
    target = bk.asarray(y, None)
    nll = -special.log_softmax(x, axis=1)[np.arange(16), y]
    got = cross_entropy(logits, target, reduction="none")
    _check(bk, got, logits, nll, dtype, "none")
    _check(bk, cross_entropy(logits, target), logits, nll.mean(), dtype, "mean")
    top = _near_max(dtype)
    big = bk.asarray(top, dtype)
    want = -special.log_softmax(top, axis=1)[:, [3]].mean()
    got = cross_entropy(big, bk.asarray(np.array([3]), None))
    _check(bk, got, big, want, dtype, "max")


@pytest.mark.parametrize("dtype", HALF)
def test_logmatmulexp(bk, dtype):
    a = _data(dtype, (5, 12), 3.0, 6)
    b = _data(dtype, (12, 4), 3.0, 7)
    # Near the dtype's maximum in a, log-probabilities in b: the result
    # stays below the maximum, the shifted exponentials need float32.
    a[0] = _round(np.linspace(0.9, 0.99, 12) * FORMATS[dtype][2], dtype)
    want = special.logsumexp(a[:, :, None] + b[None, :, :], axis=1)
    left, right = bk.asarray(a, dtype), bk.asarray(b, dtype)
    _check(bk, logmatmulexp(left, right), left, want, dtype, "logmatmulexp")


def test_ulps_counts_what_it_should():
    # The measure itself: one float16 step at 1 is one ulp, half a step is
    # half, and a flushed subnormal is forgiven only where asked.
    one = np.array([1.0])
    assert ulps(one + 2.0**-10, one, "float16", False)[0] == 1.0
    assert ulps(one + 2.0**-11, one, "float16", False)[0] == 0.5
    assert ulps(one + 2.0**-7, one, "bfloat16", False)[0] == 1.0
    tiny = np.array([2.0**-20])
    assert ulps(np.zeros(1), tiny, "float16", True)[0] == 0.0
    assert ulps(np.zeros(1), tiny, "float16", False)[0] > 1.0
