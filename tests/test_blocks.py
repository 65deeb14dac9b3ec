"""The eager kernels' blocks, against exact references (mpmath, 60 digits).

NumPy's and eager PyTorch's kernels walk the rows in blocks of a fixed
number of bytes: several whole rows per block, the last block shorter, or a
row longer than a block cut into slices whose sums are completed before the
row is normalised. The arrays of the other tests fit in one block; here the
block is shrunk so that every layout runs on a few short rows, with each
row's maximum in the first, a middle or the last slice, ties at the
maximum, and one term dominating the sum. float32 arrays take the C
kernel of ``_fused`` where it is built (``tests/test_fused.py``), and
small ones the kernels of ``_widened`` otherwise
(``tests/test_small_arrays.py``): here the blocked ones take every size.
"""

from __future__ import annotations

import functools
import importlib

import mpmath
import numpy as np
import pytest

from lsekit import cross_entropy, log_softmax, logsumexp, softmax
from lsekit._fast import _fused
from tests.families import FAMILIES
from tests.support import (
    assert_float32_family,
    assert_gradient,
    exact_log_softmax,
    exact_logsumexp,
    exact_softmax,
    exact_two_values,
    tiny_terms,
    ulp_error,
)

# The backends with blocked kernels, and their modules.
BLOCKED = {"numpy": "lsekit._fast.numpy", "torch": "lsekit._fast.torch"}
DTYPES = {"float32": np.float32, "float64": np.float64}
NCOLS = 50
# Entries per block: a row cut in 4 slices (the last of 2), two whole rows
# and a short last block, every row in one block.
WIDTHS = {"slices": 16, "rows": 2 * NCOLS, "one": 64 * NCOLS}


def _data(dtype: type) -> np.ndarray:
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 4.0, size=(7, NCOLS))
    x[0, 0] = 30.0  # maximum in the first slice
    x[1, 25] = 30.0  # in a middle slice
    x[2, -1] = 30.0  # in the last, short slice
    x[3, [3, 40]] = 12.5  # a tie, the two in different slices
    x[4] = -50.0  # one dominant term: the sum is 1 + 49 e**-60
    x[4, 33] = 10.0
    x[5] -= 20.0  # a negative maximum
    x[6] *= 10.0
    return x.astype(dtype)


@pytest.fixture(params=list(WIDTHS), ids=list(WIDTHS))
def blocked(request, bk, monkeypatch):
    """The kernel module of ``bk`` with its blocks of ``WIDTHS`` entries of
    the array's dtype, and the count of its exponential passes."""
    if bk.name not in BLOCKED:
        pytest.skip(f"{bk.name} has no blocked kernels")
    module = importlib.import_module(BLOCKED[bk.name])
    calls, floors = [], []

    def exp_into(x, out, floor):
        calls.append(tuple(x.shape))
        floors.append(floor)
        return original(x, out, floor)

    original = module.exp_into
    monkeypatch.setattr(module, "exp_into", exp_into)
    monkeypatch.setattr(module, "SMALL", 0)
    monkeypatch.setattr(_fused, "ENABLED", False)
    return module, WIDTHS[request.param], calls, floors


def _run(bk, blocked, monkeypatch, dtype, func, *args, data=_data, **kwargs):
    """``(x, func(x, ...))`` on the test array (``data(dtype)``), with the
    blocks of ``blocked``, which must have run: each call's block within
    the width, and for a row longer than a block, slices of it and of its
    remainder."""
    module, width, calls, _ = blocked
    npdt = DTYPES[dtype]
    monkeypatch.setattr(module, "BLOCK_BYTES", width * np.dtype(npdt).itemsize)
    x = data(npdt)
    got = bk.to_numpy(func(bk.asarray(x, dtype), *args, **kwargs))
    assert calls, "the blocked kernels did not run"
    assert max(r * c for r, c in calls) <= max(width, NCOLS)
    if width < NCOLS:
        assert {c for _, c in calls} == {width, NCOLS % width}
    return x, got


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_logsumexp(bk, blocked, monkeypatch, dtype):
    x, got = _run(bk, blocked, monkeypatch, dtype, logsumexp, axis=1)
    for row, g in zip(x, got, strict=True):
        assert ulp_error(g, exact_logsumexp(row), DTYPES[dtype]) <= 1.0, row


# The results that _aimed gives its rows, and which rows of them
# _blocked.direct hands to the max-shift kernel: those too near 0 for the
# unshifted terms' rounding (below 4.5, or 8.5 for NumPy's float32 exp,
# within 2.5 ulps), those whose sum of terms is too small (a result below
# log(50) - 62.4), and those whose largest term overflows (an entry above
# 88.72).
AIMS = (-75.0, -30.0, -3.0, 0.5, 6.0, 12.0, 40.0, 88.0, 95.0)


def _aimed(dtype: type) -> np.ndarray:
    """Float32 rows whose log-sum-exp is each of ``AIMS`` in turn, then rows
    holding ``inf``, NaN, and only ``-inf``."""
    rng = np.random.default_rng(11)
    z = rng.normal(0.0, 2.0, (len(AIMS), NCOLS))
    top = z.max(axis=1, keepdims=True)
    lse = top + np.log(np.exp(z - top).sum(axis=1, keepdims=True))
    x = z - lse + np.array(AIMS)[:, None]
    special = np.zeros((3, NCOLS))
    special[0, 7] = np.inf
    special[1, 9] = np.nan
    special[2] = -np.inf
    return np.concatenate([x, special]).astype(dtype)


def test_logsumexp_direct(bk, blocked, monkeypatch):
    """float32 logsumexp from the unshifted terms' sum, in one pass
    (``_blocked.direct``), where its rounding stays under half an ulp of
    the result: the other rows alone go to the max-shift kernel, and every
    result holds against mpmath."""
    module = blocked[0]
    kernels = importlib.import_module("lsekit._fast._blocked")
    handed = []
    original = kernels.logsumexp

    def spy(ops, x2):
        handed.extend(bk.to_numpy(x2).tolist())
        return original(ops, x2)

    monkeypatch.setattr(kernels, "logsumexp", spy)
    x, got = _run(bk, blocked, monkeypatch, "float32", logsumexp, axis=1, data=_aimed)
    low = 8.5 if module.EXP_ULPS[32] > 2 else 4.5
    aims = np.array(AIMS)
    far = (np.abs(aims) >= low) & (aims > -58.0) & (aims < 88.5)
    expected = [*x[: len(AIMS)][~far], *x[len(AIMS) :]]
    assert np.array_equal(np.array(handed), np.array(expected), equal_nan=True)
    for row, g in zip(x[: len(AIMS)], got, strict=False):
        assert ulp_error(g, exact_logsumexp(row), np.float32) <= 1.0, row
    assert got[-3] == np.inf
    assert np.isnan(got[-2])
    assert got[-1] == -np.inf


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_log_softmax(bk, blocked, monkeypatch, dtype):
    x, got = _run(bk, blocked, monkeypatch, dtype, log_softmax, axis=1)
    for row, g in zip(x, got, strict=True):
        for v, e in zip(g, exact_log_softmax(row), strict=True):
            assert ulp_error(v, e, DTYPES[dtype]) <= 4.0, (row, v, e)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_softmax(bk, blocked, monkeypatch, dtype):
    npdt = DTYPES[dtype]
    x, got = _run(bk, blocked, monkeypatch, dtype, softmax, axis=1)
    for row, g in zip(x, got, strict=True):
        for v, e in zip(g, exact_softmax(row), strict=True):
            if e < np.finfo(npdt).smallest_normal:
                continue
            assert ulp_error(v, e, npdt) <= 4.0, (row, v, e)


def _check_loss(bk, blocked, monkeypatch, dtype, target, data=_data):
    """Each example's loss of the rows ``data(dtype)`` and class indices
    ``target`` against mpmath; the rows."""
    x, got = _run(
        bk,
        blocked,
        monkeypatch,
        dtype,
        cross_entropy,
        bk.asarray(target, "int64"),
        reduction="none",
        data=data,
    )
    for row, y, g in zip(x, target, got, strict=True):
        exact = -exact_log_softmax(row)[y]
        assert ulp_error(g, exact, DTYPES[dtype]) <= 4.0, (row, y, g, exact)
    return x


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_cross_entropy(bk, blocked, monkeypatch, dtype):
    target = np.array([0, 25, NCOLS - 1, 3, 33, 10, 49])
    _check_loss(bk, blocked, monkeypatch, dtype, target)


LOW = {np.float32: (-200.0, -95.0, -86.9), np.float64: (-800.0, -720.0, -707.9)}
# Entries of a row whose softmax divisor is about 1: one whose exp is
# normal, by a little; the lowest whose exp rounds to the smallest
# subnormal number; the highest whose exp rounds to 0.
EDGES = {
    np.float32: (-87.2, -103.9, -104.1),
    np.float64: (-708.2, -744.5, -745.5),
}


def _far_below(dtype: type, masked: bool = True) -> np.ndarray:
    """The rows of ``_data`` with entries far below their maxima, within
    the first slice of each: ``-inf`` (a mask) and one whose exp underflows
    to 0 if ``masked``, otherwise two whose exp is subnormal; one more of
    those, and one just above the kernels' FLOOR; a row of log-probabilities
    (maximum 0, the others' sum far below 1) with the ``EDGES``; and a last
    row entirely below FLOOR, as the log-probabilities of a long sequence
    are."""
    x = _data(dtype)
    x[:, 11:14] = LOW[dtype]
    if masked:
        x[:, 10] = -np.inf
    else:
        x[:, 10:12] = LOW[dtype][1]
    edges = np.full((1, NCOLS), -30.0)
    edges[0, 0] = 0.0
    edges[0, 20:23] = EDGES[dtype]
    last = x[-1:] - (1000.0 if dtype == np.float32 else 2000.0)
    return np.concatenate([x, edges, last]).astype(dtype)


def _floored(blocked, x: np.ndarray) -> bool:
    """Whether the kernels raise the entries of ``x`` to FLOOR, by its first
    block's smallest entry."""
    module, width = blocked[:2]
    first = x[: max(1, width // x.shape[1]), :width]
    return module.floored(float(first.min()), 8 * x.dtype.itemsize)


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "subnormal"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kind", ["logsumexp", "log_softmax", "softmax"])
def test_entries_far_below_the_maximum(bk, blocked, monkeypatch, dtype, kind, masked):
    """Entries whose exp is not a normal number are raised to the kernels'
    FLOOR before exp where the library's exp is slow on them (``floored``),
    but for softmax, which writes those exponentials out; the results hold
    against mpmath, the row below FLOOR included (the path above recomputes
    it), and softmax's quotients below the smallest normal number are
    within the dtype's smallest subnormal number of the exact ones."""
    npdt = DTYPES[dtype]
    func = {"logsumexp": logsumexp, "log_softmax": log_softmax, "softmax": softmax}
    x, got = _run(
        bk,
        blocked,
        monkeypatch,
        dtype,
        func[kind],
        axis=1,
        data=lambda d: _far_below(d, masked),
    )
    floored = kind != "softmax" and _floored(blocked, x)
    floors = [f is not None for f in blocked[3]]
    if kind == "logsumexp" and dtype == "float32":
        # The rows that the unshifted sum does not certify go to the
        # max-shift kernel, which decides from its own first block.
        floors = floors[:1]
    assert set(floors) == {floored}
    tiny = np.finfo(npdt).smallest_subnormal
    for row, g in zip(x, got, strict=True):
        if kind == "logsumexp":
            assert ulp_error(g, exact_logsumexp(row), npdt) <= 1.0, row
            continue
        exact = exact_log_softmax(row) if kind == "log_softmax" else exact_softmax(row)
        for v, e in zip(g, exact, strict=True):
            if kind == "softmax" and e < np.finfo(npdt).smallest_normal:
                assert abs(mpmath.mpf(float(v)) - e) <= tiny, (row, v, e)
                continue
            assert ulp_error(v, e, npdt) <= 4.0, (row, v, e)


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "subnormal"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_loss_with_entries_far_below_the_maximum(
    bk, blocked, monkeypatch, dtype, masked
):
    """The loss of those rows, targets among the low entries included."""
    target = np.array([0, 12, 13, 3, 33, 11, 49, 21, 5])
    data = functools.partial(_far_below, masked=masked)
    x = _check_loss(bk, blocked, monkeypatch, dtype, target, data)
    assert {f is not None for f in blocked[3]} == {_floored(blocked, x)}


SMOOTHING = 0.2


def _smoothed_exact(row: np.ndarray, y: int) -> mpmath.mpf:
    """The loss of class ``y`` smoothed by ``SMOOTHING``, exactly."""
    logp = exact_log_softmax(row.astype(np.float64))
    own = (1 - mpmath.mpf(SMOOTHING)) * -logp[y]
    return own - mpmath.mpf(SMOOTHING) / len(row) * mpmath.fsum(logp)


def _smoothed_data(dtype: type) -> np.ndarray:
    """The rows of ``_data``, one with a ``-inf`` entry (an infinite loss,
    which the standard-only path gives) and one of logits far from 0 and
    close together (whose sum over the classes leaves too few digits):
    both recomputed."""
    x = _data(dtype)
    x[2, 7] = -np.inf
    x[5] = 1e30 + x[5] * 1e23
    return x.astype(dtype)


@pytest.mark.parametrize("ignore", [None, 33])
def test_smoothed_cross_entropy(bk, blocked, monkeypatch, ignore):
    """float32 logits with label smoothing take the kernels, and hold
    against mpmath; an ignored example's loss is 0."""
    target = np.array([0, 25, NCOLS - 1, 3, 33, 10, 49])
    x, got = _run(
        bk,
        blocked,
        monkeypatch,
        "float32",
        cross_entropy,
        bk.asarray(target, "int64"),
        reduction="none",
        label_smoothing=SMOOTHING,
        ignore_index=ignore,
        data=_smoothed_data,
    )
    for row, y, g in zip(x, target, got, strict=True):
        exact = 0 if y == ignore else _smoothed_exact(row, y)
        assert ulp_error(g, exact, np.float32) <= 4.0, (row, y, g, exact)


def test_smoothed_gradient(bk, blocked, monkeypatch):
    """Under autograd the smoothed loss takes the kernels, and its gradient
    is ``p - (1 - eps) onehot - eps / C``."""
    if bk.name != "torch":
        pytest.skip(f"{bk.name} has no autograd")
    torch = bk.xp
    target = np.array([0, 25, NCOLS - 1, 3, 33, 10, 49])
    g = np.random.default_rng(9).normal(size=len(target))

    def func(x):
        x.requires_grad_(True)
        y = torch.asarray(target)
        out = cross_entropy(x, y, reduction="none", label_smoothing=SMOOTHING)
        assert _by_kernels(out)
        out.backward(torch.asarray(g, dtype=out.dtype))
        return x.grad

    x, got = _run(bk, blocked, monkeypatch, "float32", func)
    for i, row in enumerate(x.astype(np.float64)):
        p = np.array([float(q) for q in exact_softmax(row)])
        want = g[i] * (p - SMOOTHING / NCOLS)
        want[target[i]] -= g[i] * (1 - SMOOTHING)
        scale = abs(g[i]) * (p + 1.0 / NCOLS)
        assert np.all(np.abs(got[i] - want) <= 64 * 2.0**-24 * scale + 1e-30), i


# Class weights (one of them 0), a mask of examples (a masked one with an
# index out of range) and an ignored class, on the rows of _data.
WEIGHTS = np.linspace(0.25, 2.0, NCOLS)
WEIGHTS[25] = 0.0
MASKED_TARGET = np.array([0, 25, NCOLS - 1, 3, 33, 10, 99])
MASK = np.array([True, True, True, False, True, True, False])


def _weighted(bk, dtype, ignore, **kwargs):
    """The loss with ``WEIGHTS``, ``MASK`` and ``ignore``, on ``bk``."""
    return lambda x: cross_entropy(
        x,
        bk.asarray(MASKED_TARGET, "int64"),
        weight=bk.asarray(WEIGHTS, dtype),
        where=bk.asarray(MASK, None),
        ignore_index=ignore,
        **kwargs,
    )


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("ignore", [None, 33])
def test_weighted_masked_cross_entropy(bk, blocked, monkeypatch, dtype, ignore):
    """Class weights, a mask of examples and ``ignore_index`` apply to the
    kernels' loss: a counted example's loss is its class's weight times its
    exact loss, any other's 0, and the mean divides their sum by the counted
    weights."""
    npdt = DTYPES[dtype]
    counted = MASK & (ignore != MASKED_TARGET)
    x, got = _run(
        bk, blocked, monkeypatch, dtype, _weighted(bk, dtype, ignore, reduction="none")
    )
    exact = [
        mpmath.mpf(float(WEIGHTS[y])) * -exact_log_softmax(row)[y] if keep else 0
        for row, y, keep in zip(x, MASKED_TARGET, counted, strict=True)
    ]
    for label, (g, e) in enumerate(zip(got, exact, strict=True)):
        assert ulp_error(g, e, npdt) <= 4.0, (label, g, e)
    _, mean = _run(
        bk, blocked, monkeypatch, dtype, _weighted(bk, dtype, ignore, reduction="mean")
    )
    total = mpmath.fsum(WEIGHTS[MASKED_TARGET[counted]].tolist())
    assert ulp_error(mean, mpmath.fsum(exact) / total, npdt) <= 4.0


PUBLIC = {
    "logsumexp": lambda x, y: logsumexp(x, axis=1),
    "log_softmax": lambda x, y: log_softmax(x, axis=1),
    "softmax": lambda x, y: softmax(x, axis=1),
    "cross_entropy": lambda x, y: cross_entropy(x, y, reduction="none"),
}


@pytest.mark.parametrize("kind", list(PUBLIC))
def test_many_tiny_terms(bk, kind):
    """Long float32 rows where one term dominates many equal tiny ones, in
    blocks of their default size: rows of 2**17 entries, several to a
    block, and of 2**20, cut in slices. PyTorch's kernel sums every term
    with the maximum's, whose rounding must stay within its bound."""
    if bk.name not in BLOCKED:
        pytest.skip(f"{bk.name} has no blocked kernels")
    for n in (1 << 17, 1 << 20):
        labels, x = tiny_terms(n)
        target = bk.asarray(np.zeros(len(x), dtype=np.int64), "int64")
        got = bk.to_numpy(PUBLIC[kind](bk.asarray(x, "float32"), target))
        for label, row, g in zip(labels, x, got, strict=True):
            values = np.atleast_1d(g)[:2]
            for v, e in zip(values, exact_two_values(kind, row), strict=True):
                bound = 1.0 if kind == "logsumexp" else 4.0
                assert ulp_error(v, e, np.float32) <= bound, (label, kind, v, e)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_families(bk, monkeypatch, family):
    """The accuracy tests' families in float32, which those tests hand to
    the C kernel row by row, through the blocked kernels, to the same
    bounds (``assert_float32_family``)."""
    if bk.name not in BLOCKED:
        pytest.skip(f"{bk.name} has no blocked kernels")
    module = importlib.import_module(BLOCKED[bk.name])
    calls = []

    def exp_into(x, out, floor):
        calls.append(x.shape)
        return original(x, out, floor)

    original = module.exp_into
    monkeypatch.setattr(module, "exp_into", exp_into)
    monkeypatch.setattr(module, "SMALL", 0)
    monkeypatch.setattr(_fused, "ENABLED", False)
    assert_float32_family(bk, family)
    assert calls, "the blocked kernels did not run"


def _by_kernels(out) -> bool:
    """Whether the kernels' autograd function computed ``out``."""
    seen, todo = set(), [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "_ReverseBackward":
            return True
        todo.extend(n for n, _ in node.next_functions)
    return False


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kind", list(PUBLIC))
def test_gradient(bk, blocked, monkeypatch, dtype, kind):
    """The kernels run under autograd, in every layout of blocks, and their
    gradients hold against the closed forms (``assert_gradient``). The rows
    include those that the kernels recompute."""
    if bk.name != "torch":
        pytest.skip(f"{bk.name} has no autograd")
    torch = bk.xp
    npdt = DTYPES[dtype]
    target = np.array([0, 25, NCOLS - 1, 3, 33, 10, 49])
    rng = np.random.default_rng(3)
    g = rng.normal(size=(7, NCOLS) if kind in ("softmax", "log_softmax") else 7)
    leaf = []

    def func(x, *args, **kwargs):
        x.requires_grad_(True)
        leaf.append(x)
        out = PUBLIC[kind](x, torch.asarray(target))
        assert _by_kernels(out), kind
        out.backward(torch.asarray(g, dtype=out.dtype))
        return x.grad

    x, got = _run(bk, blocked, monkeypatch, dtype, func)
    assert_gradient(kind, x, got, g, target, npdt)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_weighted_masked_gradient(bk, blocked, monkeypatch, dtype):
    """Under autograd the weighted, masked loss takes the kernels too: the
    counted examples' gradients are their weights times the unweighted
    closed form, the others' 0."""
    if bk.name != "torch":
        pytest.skip(f"{bk.name} has no autograd")
    torch = bk.xp
    g = np.random.default_rng(4).normal(size=len(MASK))

    def func(x):
        x.requires_grad_(True)
        out = _weighted(bk, dtype, 33, reduction="none")(x)
        assert _by_kernels(out)
        out.backward(torch.asarray(g, dtype=out.dtype))
        return x.grad

    x, got = _run(bk, blocked, monkeypatch, dtype, func)
    counted = MASK & (MASKED_TARGET != 33)
    assert np.all(got[~counted] == 0.0)
    scale = g * np.where(counted, WEIGHTS[np.where(counted, MASKED_TARGET, 0)], 0)
    assert_gradient(
        "cross_entropy",
        x[counted],
        got[counted],
        scale[counted],
        MASKED_TARGET[counted],
        DTYPES[dtype],
    )


@pytest.mark.parametrize("kind", list(PUBLIC))
def test_backward_keeps_no_more_than_the_logits(bk, kind):
    """What autograd keeps for the backward pass of the kernels' function
    is one array of the logits' size (the logits, or the output of
    ``softmax`` and ``log_softmax``, whose gradients need nothing else, as
    PyTorch's own) and a few values per row."""
    if bk.name != "torch":
        pytest.skip(f"{bk.name} has no autograd")
    torch = bk.xp
    # Rows without a dominant term: none is recomputed.
    rows = np.random.default_rng(9).normal(0.0, 2.0, size=(4, NCOLS))
    x = torch.asarray(rows.astype(np.float32)).requires_grad_(True)
    target = torch.asarray(np.array([0, 25, 3, 33]))
    kept = []

    def pack(t):
        kept.append(t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = PUBLIC[kind](x * 1.0, target)
    assert _by_kernels(out), kind
    assert sum(kept) <= x.numel() * 4 + 64 * len(rows), (kind, kept)
