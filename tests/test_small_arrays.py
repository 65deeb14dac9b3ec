"""Small float32 arrays on NumPy and eager PyTorch, through both kernels
that take them: the C kernel (``lsekit._fast._fused``) where it was built,
and otherwise NumPy's operations in float64, at once
(``lsekit._fast._widened``); against exact references (mpmath, 60 digits).

The accuracy tests hand the kernels their families row by row; here:
which arrays take them, rows they hand back (an ``inf``, a NaN, every
entry ``-inf``) among rows they keep, the loss's options, and gradients.
"""

from __future__ import annotations

import importlib

import mpmath
import numpy as np
import pytest

from lsekit import cross_entropy, log_softmax, logsumexp, softmax
from lsekit._fast import _fused, _widened
from tests.support import (
    assert_gradient,
    exact_log_softmax,
    exact_logsumexp,
    exact_softmax,
    require_kernel,
    ulp_error,
)

EAGER = {"numpy": "lsekit._fast.numpy", "torch": "lsekit._fast.torch"}

PUBLIC = {
    "logsumexp": lambda x, y: logsumexp(x, axis=1),
    "log_softmax": lambda x, y: log_softmax(x, axis=1),
    "softmax": lambda x, y: softmax(x, axis=1),
    "cross_entropy": lambda x, y: cross_entropy(x, y, reduction="none"),
}


@pytest.fixture(params=["fused", "widened"])
def kernel(request, bk, monkeypatch):
    """The eager kernel module of ``bk``, the kernel (``request.param``),
    and the shapes of the arrays that it computed: ``_fused``'s C kernel,
    or ``_widened``'s with the C kernel off."""
    if bk.name not in EAGER:
        pytest.skip(f"{bk.name} has no eager kernels")
    calls = []
    if request.param == "fused":
        require_kernel()
        for name in ("rows", "run", "cross_entropy"):
            monkeypatch.setattr(_fused, name, _spy(getattr(_fused, name), calls))
    else:
        original = _widened._split

        def split(ops, x2):
            calls.append(tuple(x2.shape))
            return original(ops, x2)

        monkeypatch.setattr(_widened, "_split", split)
        monkeypatch.setattr(_fused, "ENABLED", False)
    return importlib.import_module(EAGER[bk.name]), calls, request.param


def _spy(func, calls):
    """``func``, recording the shape of the rows of each call in ``calls``."""

    def spied(ops, x2, *args):
        calls.append(tuple(x2.shape))
        return func(ops, x2, *args)

    return spied


def _rows(n: int, count: int = 8) -> np.ndarray:
    return np.random.default_rng(5).normal(0.0, 3.0, size=(count, n))


@pytest.mark.parametrize("kind", list(PUBLIC))
def test_which_arrays(bk, kernel, kind):
    """float32 arrays take the C kernel, whatever their size; without it,
    those of up to ``SMALL`` entries take ``_widened``'s. float64 takes
    neither."""
    module, calls, path = kernel
    small = module.SMALL
    cases = [
        ((8, 8), "float32", True),
        ((1, small), "float32", True),
        ((2, small // 2 + 1), "float32", path == "fused"),
        ((8, 8), "float64", False),
    ]
    for (rows, n), dtype, expected in cases:
        calls.clear()
        x = bk.asarray(_rows(n, rows), dtype)
        PUBLIC[kind](x, bk.asarray(np.zeros(rows, dtype=np.int64), "int64"))
        assert bool(calls) == expected, (rows, n, dtype)


def _mixed() -> np.ndarray:
    """Finite rows (a dominant term, a tie, a negative maximum, -inf
    entries), and rows the kernels hand back: an ``inf``, a NaN, every
    entry ``-inf``."""
    x = _rows(6, 7)
    x[0] = [0.0, -40.0, -41.0, -45.0, -60.0, -100.0]  # logsumexp 4.2e-18
    x[1, [1, 4]] = 9.0
    x[2] -= 30.0
    x[3, [0, 5]] = -np.inf
    x[4, 2] = np.inf
    x[5, 3] = np.nan
    x[6] = -np.inf
    return x.astype(np.float32)


def test_rows_handed_back(bk, kernel):
    """Among the rows the kernels keep (every finite one, within the
    accuracy tests' bounds), those with an ``inf``, a NaN or only ``-inf``
    take the standard-only path's values: ``inf``, NaN, ``-inf`` for
    ``logsumexp``; NaN at the ``inf`` and ``-inf`` or 0 elsewhere, NaN
    throughout, and ``-inf`` or 0 throughout for ``log_softmax`` and
    ``softmax``."""
    x = _mixed()
    a = bk.asarray(x, "float32")
    lse = bk.to_numpy(logsumexp(a, axis=1))
    lsm = bk.to_numpy(log_softmax(a, axis=1))
    sm = bk.to_numpy(softmax(a, axis=1))
    assert kernel[1]
    for i, row in enumerate(x[:4].astype(np.float64)):
        assert ulp_error(lse[i], exact_logsumexp(row), np.float32) <= 1.0, i
        for v, e in zip(lsm[i], exact_log_softmax(row), strict=True):
            assert ulp_error(v, e, np.float32) <= 4.0, (i, v, e)
        for v, e in zip(sm[i], exact_softmax(row), strict=True):
            assert ulp_error(v, e, np.float32) <= 4.0, (i, v, e)
    expected = {
        "logsumexp": (lse[4:], [np.inf, np.nan, -np.inf]),
        "log_softmax at inf": (lsm[4], [-np.inf, -np.inf, np.nan, *[-np.inf] * 3]),
        "softmax at inf": (sm[4], [0.0, 0.0, np.nan, 0.0, 0.0, 0.0]),
        "log_softmax at NaN": (lsm[5], [np.nan] * 6),
        "softmax at NaN": (sm[5], [np.nan] * 6),
        "log_softmax of -inf": (lsm[6], [-np.inf] * 6),
        "softmax of -inf": (sm[6], [0.0] * 6),
    }
    for label, (got, want) in expected.items():
        assert np.array_equal(got, np.array(want), equal_nan=True), (label, got)


SMOOTHING = 0.2


def _loss_exact(row: np.ndarray, y: int, smoothing: float) -> mpmath.mpf:
    logp = exact_log_softmax(row.astype(np.float64))
    if not smoothing:
        return -logp[y]
    eps = mpmath.mpf(smoothing)
    return -(1 - eps) * logp[y] - eps / len(row) * mpmath.fsum(logp)


@pytest.mark.parametrize("smoothing", [0.0, SMOOTHING])
@pytest.mark.parametrize("ignore", [None, 2])
def test_loss(bk, kernel, smoothing, ignore):
    """The loss of the finite rows (the target at a dominant term, at a
    ``-inf`` entry, at an ignored class), smoothed or not, holds against
    mpmath: an infinite loss where the target's logit or, smoothed, any
    logit is ``-inf``, 0 where the target is ignored."""
    x = _mixed()[:4]
    target = np.array([0, 2, 1, 0])
    got = bk.to_numpy(
        cross_entropy(
            bk.asarray(x, "float32"),
            bk.asarray(target, "int64"),
            reduction="none",
            label_smoothing=smoothing,
            ignore_index=-100 if ignore is None else ignore,
        )
    )
    assert kernel[1]
    for row, y, g in zip(x, target, got, strict=True):
        exact = 0 if y == ignore else _loss_exact(row, y, smoothing)
        assert ulp_error(g, exact, np.float32) <= 4.0, (row, y, g, exact)


@pytest.mark.parametrize("kind", list(PUBLIC))
def test_gradient(bk, kernel, kind):
    """Under autograd the small rows take the kernels too, with the closed
    forms' gradients; the row with ``-inf`` entries included."""
    if bk.name != "torch":
        pytest.skip(f"{bk.name} has no autograd")
    torch = bk.xp
    x = _mixed()[:4]
    target = np.array([0, 2, 1, 1])
    g = np.random.default_rng(8).normal(size=x.shape if "softmax" in kind else 4)
    leaf = torch.asarray(x).requires_grad_(True)
    out = PUBLIC[kind](leaf, torch.asarray(target))
    out.backward(torch.asarray(g, dtype=out.dtype))
    assert kernel[1]
    assert_gradient(
        kind, x.astype(np.float64), leaf.grad.numpy(), g, target, np.float32
    )
