"""cross_entropy against exact references (mpmath, 60 digits), in ulps.

Every row of the adversarial families becomes three examples: the target at
the row's maximum (the tiny loss of a confident, correct prediction, where
``logsumexp(x) - x[y]`` cancels to nothing), at its minimum (a loss as
large as the logits' spread) and at random. Each per-example loss
(``reduction='none'``) is compared with its exact value, plain, with class
weights, with label smoothing, with both, and with probability targets.

The exact references take the inputs' binary values as they are: weights
and targets as ``mpf(float)``, the smoothing ``eps = 0.1`` as ``mpf(0.1)``
(not one tenth) with ``1 - eps`` and ``eps / C`` formed exactly.

Bounds asserted, in ulps of the exact value in the result's dtype:

* float64: 4 ulps per example. Every loss is a sum of non-negative terms
  (``(m - x[y]) + log1p(s + (W - 1))``, each weighted by a non-negative
  coefficient), so no rounding is amplified by cancellation; what remains
  is a handful of roundings in a row (2.4 ulps at worst, observed, with
  probability targets, weights and smoothing).
* float32: 4 ulps per example, as float64. The eager blocked kernels
  (arrays larger than a few thousand entries) take the exponentials in
  float32 (NumPy's vectorised exp is off by up to 2.4 ulps, PyTorch's by
  0.6), sum them in float64 and form the loss there, so that it is
  rounded once: within 0.5 + 2.5 ulps. Elsewhere float32 is computed in
  float64 throughout (half an ulp).
* float16 and bfloat16: computed in float32 and rounded once; float32's
  error is under 2**-10 of a half-precision ulp: 0.5 + 2**-8 is asserted.
* 'sum' and 'mean' (float64): see ``test_sum_and_mean``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import mpmath
import numpy as np
import pytest

from lsekit import cross_entropy
from tests.families import FAMILIES, rows
from tests.support import exact_log_softmax, exact_logsumexp, ulp_error

DTYPES = {"float32": np.float32, "float64": np.float64}
BOUND = {"float64": 4.0, "float32": 4.0}
HALF_BOUND = 0.5 + 2.0**-8

# Not a binary fraction: a reference that used 1/10 instead of the double
# nearest it would be off by far more than an ulp of float64.
EPS = 0.1


class Config(NamedTuple):
    weighted: bool = False
    smoothing: float = 0.0
    probabilities: bool = False


CONFIGS = {
    "plain": Config(),
    "weighted": Config(weighted=True),
    "smoothed": Config(smoothing=EPS),
    "weighted-smoothed": Config(weighted=True, smoothing=EPS),
    "probabilities": Config(probabilities=True),
    "probabilities-weighted-smoothed": Config(
        weighted=True, smoothing=EPS, probabilities=True
    ),
}


class Group(NamedTuple):
    """Examples with the same number of classes, stacked into one batch.

    One call per group, not per row: on JAX every new shape compiles anew.
    """

    labels: tuple[str, ...]
    logits: np.ndarray  # (N, C), float64 values exact in the dtype
    index: np.ndarray  # (N,) class indices
    probs: np.ndarray  # (N, C) probability targets, exact in the dtype
    weight: np.ndarray  # (C,) class weights, exact in the dtype


def _round(a: np.ndarray, npdt: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).astype(npdt).astype(np.float64)


@functools.cache
def _groups(dtype: str) -> tuple[Group, ...]:
    npdt = DTYPES[dtype]
    by_length: dict[int, list[tuple[str, np.ndarray]]] = {}
    for family in FAMILIES:
        for k, row in enumerate(rows(family, npdt)):
            by_length.setdefault(row.size, []).append((f"{family}[{k}]", row))
    groups = []
    for n_classes, members in sorted(by_length.items()):
        rng = np.random.default_rng(n_classes)
        labels, logits, index, probs = [], [], [], []
        for label, row in members:
            top, bottom = int(np.argmax(row)), int(np.argmin(row))
            pick = int(rng.integers(n_classes))
            for kind, y in (("max", top), ("min", bottom), ("random", pick)):
                labels.append(f"{label} target {kind} ({y})")
                logits.append(row)
                index.append(y)
                if kind == "max":
                    # All the mass on the maximum: the tiny loss again.
                    t = np.eye(n_classes)[top]
                elif kind == "min":
                    t = rng.dirichlet(np.ones(n_classes))
                else:
                    spread = rng.dirichlet(np.full(n_classes, 0.5))
                    t = 0.75 * np.eye(n_classes)[pick] + 0.25 * spread
                probs.append(_round(t, npdt))
        weight = _round(rng.uniform(0.25, 4.0, size=n_classes), npdt)
        groups.append(
            Group(
                tuple(labels),
                np.stack(logits),
                np.array(index, dtype=np.int64),
                np.stack(probs),
                weight,
            )
        )
    return tuple(groups)


# Exact references ------------------------------------------------------------


def _mp(v: float) -> mpmath.mpf:
    return mpmath.mpf(float(v))


@functools.cache
def _nll(row: tuple[float, ...]) -> tuple[mpmath.mpf, ...]:
    """``-log_softmax`` of every entry of ``row``, exactly."""
    return tuple(-v for v in exact_log_softmax(np.array(row)))


def exact_loss(
    row: np.ndarray,
    target: Any,
    *,
    weight: np.ndarray | None = None,
    smoothing: float = 0.0,
) -> mpmath.mpf:
    """PyTorch's per-example loss of one row, exactly.

    ``target`` is a class index (an int) or a row of probabilities.
    """
    nll = _nll(tuple(float(v) for v in row))
    n_classes = len(nll)
    w = [mpmath.mpf(1)] * n_classes if weight is None else [_mp(v) for v in weight]
    eps = _mp(smoothing)
    keep, share = 1 - eps, eps / n_classes
    if isinstance(target, (int, np.integer)):
        y = int(target)
        spread = mpmath.fsum(wc * v for wc, v in zip(w, nll, strict=True))
        return keep * w[y] * nll[y] + share * spread
    q = [wc * (keep * _mp(t) + share) for wc, t in zip(w, target, strict=True)]
    # A class without mass costs nothing, whatever its logit (0 * inf = 0).
    return mpmath.fsum(qc * v for qc, v in zip(q, nll, strict=True) if qc != 0)


@functools.cache
def _reference(dtype: str, config: str) -> tuple[tuple[mpmath.mpf, ...], ...]:
    """Exact per-example losses of every group, computed once per session."""
    c = CONFIGS[config]
    out = []
    for g in _groups(dtype):
        targets = g.probs if c.probabilities else g.index
        weight = g.weight if c.weighted else None
        out.append(
            tuple(
                exact_loss(row, t, weight=weight, smoothing=c.smoothing)
                for row, t in zip(g.logits, targets, strict=True)
            )
        )
    return tuple(out)


# Measuring ------------------------------------------------------------------

# (significand bits, exponent of the smallest normal number)
FORMATS = {
    "float16": (11, -14),
    "bfloat16": (8, -126),
    "float32": (24, -126),
    "float64": (53, -1022),
}


def _ulps(bk, got: float, exact: mpmath.mpf, dtype: str) -> float:
    """ulp error of ``got``; results flushed to 0 by FTZ backends pass."""
    bits, emin = FORMATS[dtype]
    got = float(got)
    if (
        bk.manifest.flush_subnormals
        and got == 0.0
        and abs(exact) < mpmath.ldexp(1, emin)
    ):
        return 0.0
    if dtype in DTYPES:
        return ulp_error(got, exact, DTYPES[dtype])
    # NumPy has no bfloat16: the spacing is taken from the exact value's
    # binade, clamped to the subnormal spacing.
    if mpmath.isinf(exact) or math.isinf(got):
        return 0.0 if got == float(exact) else math.inf
    binade = math.frexp(float(abs(exact)))[1] - 1 if exact != 0 else emin
    spacing = mpmath.ldexp(1, max(binade, emin) - (bits - 1))
    return float(abs(_mp(got) - exact) / spacing)


def _call(bk, dtype: str, g: Group, c: Config, **kw: Any) -> tuple[Any, Any]:
    x = bk.asarray(g.logits, dtype)
    if c.weighted:
        kw["weight"] = bk.asarray(g.weight, dtype)
    if c.smoothing:
        kw["label_smoothing"] = c.smoothing
    t = bk.asarray(g.probs, dtype) if c.probabilities else bk.asarray(g.index, None)
    return x, cross_entropy(x, t, **kw)


def _worst(bk, dtype, labels, got, exact) -> tuple[float, str]:
    worst, where = 0.0, ""
    for label, v, e in zip(labels, got, exact, strict=True):
        err = _ulps(bk, v, e, dtype)
        if not err <= worst:  # NaN counts as the worst
            worst, where = err, f"{label}: got {float(v)!r}, exact {mpmath.nstr(e, 20)}"
    return worst, where


# Per-example losses -----------------------------------------------------------


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_per_example_ulps(bk, dtype, config):
    c = CONFIGS[config]
    worst, where = 0.0, ""
    for g, exact in zip(_groups(dtype), _reference(dtype, config), strict=True):
        x, out = _call(bk, dtype, g, c, reduction="none")
        bk.check_array(out, x)
        got = bk.to_numpy(out)
        assert got.shape == g.index.shape
        err, at = _worst(bk, dtype, g.labels, got, exact)
        if not err <= worst:
            worst, where = err, at
    assert worst <= BOUND[dtype], f"{config} {dtype}: {worst:.3f} ulp at {where}"


# The example -------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "y"), [([[0.0, -40.0]], 0), ([[-40.0, 0.0]], 1)], ids=["first", "last"]
)
def test_dominant_example_float64(bk, x, y):
    # exp(-40) = 4.2e-18 is below half an ulp of 1: logsumexp(x) - x[y]
    # rounds to exactly 0 (PyTorch's result); the split keeps every digit.
    expected = 4.248354255291589e-18
    assert float(exact_logsumexp(x[0]) - max(x[0])) == expected
    assert float(exact_loss(np.array(x[0]), y)) == expected
    a = bk.asarray(x)
    t = bk.asarray([y], None)
    for reduction in ("none", "mean", "sum"):
        out = cross_entropy(a, t, reduction=reduction)
        bk.check_array(out, a)
        assert bk.to_numpy(out).ravel().tolist() == [expected], reduction


def test_dominant_example_float32(bk):
    a = bk.asarray([[0.0, -20.0]], "float32")
    out = cross_entropy(a, bk.asarray([0], None), reduction="none")
    bk.check_array(out, a)
    got = float(bk.to_numpy(out)[0])
    exact = exact_loss(np.array([0.0, -20.0]), 0)
    # 2.06e-9: a float32 logsumexp(x) - x[y] is exactly 0 here.
    assert got > 0.0
    assert ulp_error(got, exact, np.float32) <= 0.5


# Reductions -------------------------------------------------------------------

# case: (config, whether every fourth example is dropped: ignore_index=-1
# for class indices, where= for probabilities)
REDUCED = {
    "plain": ("plain", False),
    "weighted-smoothed": ("weighted-smoothed", False),
    "weighted-smoothed-ignored": ("weighted-smoothed", True),
    "probabilities-weighted-smoothed": ("probabilities-weighted-smoothed", False),
    "probabilities-masked": ("probabilities-weighted-smoothed", True),
}
REDUCED_BOUND = {"sum": 2.0, "mean": 4.0}


@pytest.mark.parametrize("n_classes", [6, 16, 256])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("case", list(REDUCED))
def test_sum_and_mean(bk, case, reduction, n_classes):
    """'sum' within 2 ulps and 'mean' within 4 ulps of exact (float64).

    The losses are non-negative, so the exact sum of the computed losses
    has no larger a relative error than they have; theirs (at most 2.4
    ulps, most under 1) take either sign and average out over a batch, and
    the compensated sum adds about half an ulp: 2 ulps (under 1 observed).
    The mean then divides by a plain, uncompensated sum of positive weights
    (or a count), added in each library's own order (Dask's chunk by
    chunk), and rounds the quotient: 2 ulps more (2.1 observed, on Dask).
    """
    config, drop = REDUCED[case]
    c = CONFIGS[config]
    (i,) = [
        k for k, g in enumerate(_groups("float64")) if g.logits.shape[1] == n_classes
    ]
    g = _groups("float64")[i]
    exact = list(_reference("float64", config)[i])
    kw: dict[str, Any] = {"reduction": reduction}
    counted = np.ones(len(exact), dtype=bool)
    if drop:
        counted[::4] = False
        if c.probabilities:
            kw["where"] = bk.asarray(counted, None)
        else:
            g = g._replace(index=np.where(counted, g.index, -1))
            kw["ignore_index"] = -1
    x, out = _call(bk, "float64", g, c, **kw)
    bk.check_array(out, x)
    got = bk.to_numpy(out)
    assert got.shape == ()
    total = mpmath.fsum(e for e, k in zip(exact, counted, strict=True) if k)
    if reduction == "mean":
        if c.probabilities:
            denominator = mpmath.mpf(int(counted.sum()))
        else:
            w = g.weight if c.weighted else np.ones_like(g.weight)
            denominator = mpmath.fsum(_mp(w[y]) for y in g.index[counted])
        total /= denominator
    err = _ulps(bk, got, total, "float64")
    bound = REDUCED_BOUND[reduction]
    assert err <= bound, f"{err:.3f} ulp: got {float(got)!r}, exact {total}"


# Half precision --------------------------------------------------------------

HALF_FAMILIES = ("seed-examples", "dominant", "ties", "normal")


@functools.cache
def _half_reference(key: tuple[Any, ...], config: str) -> tuple[mpmath.mpf, ...]:
    logits, index, probs, weight = (
        np.frombuffer(data, dtype).reshape(shape) for dtype, shape, data in key
    )
    c = CONFIGS[config]
    targets = probs if c.probabilities else index
    return tuple(
        exact_loss(
            row,
            t,
            weight=weight if c.weighted else None,
            smoothing=c.smoothing,
        )
        for row, t in zip(logits, targets, strict=True)
    )


def _held(bk, data: np.ndarray, dtype: str) -> tuple[Any, np.ndarray]:
    """The backend's array in ``dtype`` and the exact values it holds."""
    a = bk.asarray(data, dtype)
    return a, bk.to_numpy(a).astype(np.float64)


def _key(*arrays: np.ndarray) -> tuple[Any, ...]:
    return tuple((a.dtype.str, a.shape, a.tobytes()) for a in arrays)


@pytest.mark.parametrize(
    "config", ["plain", "weighted-smoothed", "probabilities-weighted-smoothed"]
)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_ulps(bk, dtype, config):
    c = CONFIGS[config]
    worst, where = 0.0, ""
    for g in _groups("float64"):
        keep = [
            k
            for k, label in enumerate(g.labels)
            if label.split("[")[0] in HALF_FAMILIES
        ]
        if not keep:
            continue
        x, logits = _held(bk, g.logits[keep], dtype)
        t, probs = _held(bk, g.probs[keep], dtype)
        w, weight = _held(bk, g.weight, dtype)
        index = g.index[keep]
        kw: dict[str, Any] = {"reduction": "none", "label_smoothing": c.smoothing}
        if c.weighted:
            kw["weight"] = w
        target = t if c.probabilities else bk.asarray(index, None)
        out = cross_entropy(x, target, **kw)
        bk.check_array(out, x)
        got = bk.to_numpy(out)
        exact = _half_reference(_key(logits, index, probs, weight), config)
        labels = [g.labels[k] for k in keep]
        err, at = _worst(bk, dtype, labels, got, exact)
        if not err <= worst:
            worst, where = err, at
    assert worst <= HALF_BOUND, f"{config} {dtype}: {worst:.3f} ulp at {where}"


# Logits near the dtype's largest finite value; each loss (and every
# intermediate -log_softmax) is finite in float32, though some exceed the
# half-precision range. (logits, target index, smoothing)
NEAR_MAX = {
    "float16": [
        ([60000.0, -60000.0], 0, 0.0),  # exp(-120000): 0
        ([60000.0, 59968.0], 1, 0.0),  # 32 + log1p(exp(-32))
        ([60000.0, 30000.0], 1, 0.0),  # 30000
        ([60000.0, 60000.0], 0, 0.0),  # log 2
        ([-60000.0, -60000.0], 1, 0.0),  # log 2
        ([-60000.0, 60000.0], 1, 0.0),
        # The unlikely class's -log_softmax, 120000, is beyond float16;
        # its smoothing share, 6000, is not.
        ([60000.0, -60000.0], 0, 0.1),
        ([-60000.0, 60000.0, 0.0], 1, 0.25),
    ],
    "bfloat16": [
        ([3e38, -3e38], 0, 0.0),
        ([3e38, 1e38], 1, 0.0),  # 2e38
        ([3e38, 3e38], 1, 0.0),  # log 2
        ([-3e38, -3e38], 0, 0.0),
        ([-3e38, 3e38], 1, 0.0),
        ([3e38, 1e38], 0, 0.1),  # 0.05 * 2e38
        ([1e38, -1e38, 0.0], 0, 0.25),
    ],
}


@pytest.mark.parametrize("dtype", list(NEAR_MAX))
def test_half_precision_near_max(bk, dtype):
    for row, y, smoothing in NEAR_MAX[dtype]:
        x, held = _held(bk, np.array([row]), dtype)
        assert np.isfinite(held).all()
        out = cross_entropy(
            x, bk.asarray([y], None), reduction="none", label_smoothing=smoothing
        )
        bk.check_array(out, x)
        got = float(bk.to_numpy(out)[0])
        exact = exact_loss(held[0], y, smoothing=smoothing)
        assert math.isfinite(got), f"{row} target {y}: {got}"
        err = _ulps(bk, got, exact, dtype)
        assert err <= HALF_BOUND, f"{row} target {y}: {got!r}, exact {exact}"


def test_bfloat16_smoothing_share_beyond_float32(bk):
    # bfloat16 has float32's range, so computing in float32 does not keep
    # -log_softmax of the unlikely class (6e38) finite; its smoothing
    # share, 0.05 * 6e38 = 3e37, and so the loss, are finite.
    x, held = _held(bk, np.array([[3e38, -3e38]]), "bfloat16")
    out = cross_entropy(x, bk.asarray([0], None), reduction="none", label_smoothing=0.1)
    got = float(bk.to_numpy(out)[0])
    exact = exact_loss(held[0], 0, smoothing=0.1)
    assert math.isfinite(got), f"got {got}, exact {mpmath.nstr(exact, 10)}"
    assert _ulps(bk, got, exact, "bfloat16") <= HALF_BOUND
