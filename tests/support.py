"""Helpers shared by the tests: backend runtimes, exact references, ulps."""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import array_api_compat
import mpmath
import numpy as np
import pytest

import backends

mpmath.mp.dps = 60


class Runtime:
    """A backend ready to use: its array module, device and conversions."""

    def __init__(self, manifest: backends.Backend, module: Any, device: Any) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self.module = module
        self.device = device

    def __repr__(self) -> str:
        return f"Runtime({self.name})"

    @property
    def xp(self) -> Any:
        """The array-api-compat namespace of this backend's arrays."""
        return array_api_compat.array_namespace(self.asarray([0.0]))

    def dtype(self, name: str) -> Any:
        return getattr(self.module, name)

    def supports(self, dtype: str) -> bool:
        return dtype in self.manifest.dtypes

    def asarray(self, data: Any, dtype: str | None = "float64") -> Any:
        """An array of this backend made from NumPy data, in ``dtype``.

        ``dtype=None`` keeps the data's own (boolean or integer) dtype.
        """
        if dtype is not None and "float" in dtype and not self.supports(dtype):
            pytest.skip(f"{self.name} has no {dtype}")
        host = np.asarray(data)
        if dtype == "bfloat16":
            host = host.astype(np.float32)
        elif dtype is not None:
            host = host.astype(dtype)
        if self.name == "dask":
            chunks = tuple(max(1, (n + 1) // 2) for n in host.shape)
            x = self.module.from_array(host, chunks=chunks or ())
        elif self.manifest.convert == "torch":
            x = self.module.asarray(host).to(self.device)
        elif self.name == "jax":
            x = self.module.asarray(host, device=self.device)
        else:
            x = self.module.asarray(host)
        if dtype == "bfloat16":
            xp = array_api_compat.array_namespace(x)
            x = xp.astype(x, self.dtype("bfloat16"))
        return x

    def to_numpy(self, x: Any) -> np.ndarray:
        """Any result of this backend as a NumPy array (float32 for bfloat16)."""
        kind = self.manifest.convert
        if kind == "torch":
            if x.dtype == self.module.bfloat16:
                x = x.float()
            return np.asarray(x.detach().cpu().numpy())
        if kind == "dask":
            return np.asarray(x.compute() if hasattr(x, "compute") else x)
        if kind == "cupy":
            return np.asarray(x.get())
        if self.name == "jax" and str(x.dtype) == "bfloat16":
            x = x.astype("float32")
        return np.asarray(x)

    def check_array(self, result: Any, like: Any, dtype: Any = None) -> None:
        """``result`` is of this backend, on ``like``'s device, in ``dtype``."""
        assert array_api_compat.array_namespace(result) is (
            array_api_compat.array_namespace(like)
        ), f"{type(result)} is not of the input's library"
        assert array_api_compat.device(result) == array_api_compat.device(like)
        want = like.dtype if dtype is None else dtype
        assert result.dtype == want, f"dtype {result.dtype}, expected {want}"


@contextlib.contextmanager
def jax_x64() -> Iterator[Any]:
    """JAX with float64 enabled within the block, or a skip saying why.

    The jax nox session sets JAX_ENABLE_X64; elsewhere ``jax.enable_x64``
    switches it on for the block only.
    """
    jax = pytest.importorskip("jax")
    if jax.config.jax_enable_x64:
        yield jax
        return
    enable = getattr(jax, "enable_x64", None)
    if enable is None:
        pytest.skip("float64 on JAX needs JAX_ENABLE_X64=1 (no jax.enable_x64)")
    with enable(True):
        yield jax


def library_session(request: pytest.FixtureRequest, name: str) -> Any:
    """The module ``name`` for tests of its own transformations, which run
    where its backend is tested; in other sessions they skip (PyTorch is
    installed in every session, as a reference, and compiling is slow)."""
    if name not in request.getfixturevalue("session_backends"):
        pytest.skip(
            f"{name}'s own autodiff and transformations run with --backend {name}"
        )
    return pytest.importorskip(name)


class NoDevice(RuntimeError):
    """The backend is installed but its device is absent."""


@functools.cache
def _import(name: str) -> tuple[Any, Any]:
    manifest = backends.load()[name]
    module = importlib.import_module(manifest.module)
    device = None
    if name == "jax":
        import jax

        device = jax.devices("cpu")[0]
    elif manifest.convert == "torch":
        import torch

        device = torch.device(manifest.devices[0])
        if device.type == "cuda" and not torch.cuda.is_available():
            raise NoDevice("torch finds no CUDA device")
    elif name == "cupy":
        try:
            count = module.cuda.runtime.getDeviceCount()
        except module.cuda.runtime.CUDARuntimeError as exc:
            raise NoDevice(f"CUDA runtime: {exc}") from None
        if count < 1:
            raise NoDevice("cupy finds no CUDA device")
    return module, device


def open_backend(manifest: backends.Backend) -> Runtime:
    """The runtime of ``manifest``, or skip with the reason it cannot run."""
    try:
        module, device = _import(manifest.name)
    except ImportError as exc:
        pytest.skip(f"{manifest.name} is not installed ({exc})")
    except NoDevice as exc:
        pytest.skip(f"{manifest.name} needs a GPU: {exc}")
    return Runtime(manifest, module, device)


# Dask schedulers -------------------------------------------------------------


def dask_client() -> Any:
    """The ``distributed.Client`` that computes Dask graphs in this process
    (``--dask-cluster``), or None: Dask's default, threaded scheduler."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        return distributed.default_client()
    except ValueError:
        return None


@contextlib.contextmanager
def dask_work() -> Iterator[Callable[[], int]]:
    """Within the block, a count of the work Dask has done since it began:
    0 until a graph is computed, on the scheduler that computes here.

    The threaded scheduler tells each task it runs to a callback. A
    distributed scheduler runs elsewhere, and counts the transitions of its
    tasks (submitted, run, released): the LocalCluster of ``--dask-cluster``
    runs its scheduler in this process.
    """
    client = dask_client()
    if client is None:
        import dask

        ran = [0]

        class Count(dask.callbacks.Callback):
            def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
                ran[0] += 1

        with Count():
            yield lambda: ran[0]
        return
    scheduler = client.cluster.scheduler
    # An earlier computation's tasks are released after it returns, as the
    # client lets go of their keys: transitions that would count here.
    # Wait until the count has stood still for a moment.
    gc.collect()
    start, deadline = scheduler.transition_counter, time.monotonic() + 10.0
    while time.monotonic() < deadline:
        time.sleep(0.25)
        if scheduler.transition_counter == start:
            break
        start = scheduler.transition_counter
    yield lambda: scheduler.transition_counter - start


# logmatmulexp against an in-memory result -----------------------------------
#
# Eager calls run the shifted matrix product and recompute exactly the cells
# whose value it cannot vouch for, picked out by reading the product. Under
# jax.jit nothing can be read before the graph runs, and every cell is
# computed exactly by broadcasting; on Dask each block's product is eager,
# and the blocks are combined by logsumexp. So the two agree within the fast
# path's error, not by construction bit for bit. The tolerance is the
# accuracy bound of tests/test_logmatmulexp.py, which both sides meet
# against the exact value: 4 ulps of max(|out|, |r| + |c|, 1) for the
# roundings around the product, plus (K + 2) eps for the product's own
# relative error.


def logmatmulexp_tolerance(a: Any, b: Any, want: Any) -> Any:
    """4 ulps of max(|out|, |r| + |c|, 1) plus (K + 2) eps, per cell."""
    am = a[None, :] if a.ndim == 1 else a
    bm = b[:, None] if b.ndim == 1 else b
    with np.errstate(invalid="ignore"):
        s = (
            np.abs(np.max(am, axis=-1))[..., :, None]
            + np.abs(np.max(bm, axis=-2))[..., None, :]
        )
    batch = np.broadcast_shapes(am.shape[:-2], bm.shape[:-2])
    s = np.broadcast_to(s, (*batch, am.shape[-2], bm.shape[-1])).reshape(want.shape)
    s = np.maximum(np.where(np.isfinite(s), s, 0.0), 1.0)
    s = np.maximum(s, np.where(np.isfinite(want), np.abs(want), 0.0))
    return 4 * np.spacing(s) + (am.shape[-1] + 2) * np.finfo(np.float64).eps


def assert_logmatmulexp_close(got: Any, want: Any, a: Any, b: Any, name: str) -> None:
    """float64 results within ``logmatmulexp_tolerance``, with the same
    NaN, ``+inf`` and ``-inf`` cells."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, name
    assert got.dtype == want.dtype == np.float64, name
    for kind in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(kind(got), kind(want), err_msg=name)
    finite = np.isfinite(want)
    err = np.abs(np.where(finite, got, 0.0) - np.where(finite, want, 0.0))
    tol = logmatmulexp_tolerance(a, b, want)
    assert np.all(err <= tol), (name, got, want, err / tol)


# Exact references -----------------------------------------------------------


def _mp(v: float) -> mpmath.mpf:
    return mpmath.mpf(float(v))


def _exact_split(row: Any, weights: Any = None) -> tuple[mpmath.mpf, mpmath.mpf]:
    """``(m, t)`` with ``sum(b * exp(a)) = exp(m) * (1 + t)``, exactly.

    Summing relative to the maximum keeps the 60 digits on ``t``: a plain
    ``log(sum(exp(a)))`` would spend them on ``m`` and leave too few for
    the tiny log-probabilities the accuracy tests look at.
    """
    row = np.asarray(row, dtype=np.float64).ravel()
    b = np.ones_like(row) if weights is None else np.asarray(weights, np.float64)
    keep = (b.ravel() != 0) & (row != -np.inf)
    row, b = row[keep], b.ravel()[keep]
    if row.size == 0:
        return mpmath.mpf("-inf"), mpmath.mpf(0)
    top = int(np.argmax(row))
    m = _mp(row[top])
    rest = mpmath.fsum(
        _mp(w) * mpmath.exp(_mp(v) - m)
        for i, (v, w) in enumerate(zip(row, b, strict=True))
        if i != top
    )
    return m, rest + (_mp(b[top]) - 1)


def exact_logsumexp(row: Any, weights: Any = None) -> mpmath.mpf:
    """``log|sum(b * exp(a))|`` of a 1-D float row, to 60 digits."""
    m, t = _exact_split(row, weights)
    if t == -1:
        return mpmath.mpf("-inf")
    return m + mpmath.log1p(t) if t > -1 else m + mpmath.log(-1 - t)


def exact_log_softmax(row: Any) -> list[mpmath.mpf]:
    """``x - logsumexp(x)`` entry by entry, each to 60 significant digits."""
    m, t = _exact_split(row)
    lt = mpmath.log1p(t)
    return [(_mp(v) - m) - lt for v in np.asarray(row, np.float64).ravel()]


def exact_softmax(row: Any) -> list[mpmath.mpf]:
    return [mpmath.exp(v) for v in exact_log_softmax(row)]


def ulp_error(computed: Any, exact: mpmath.mpf, dtype: Any) -> float:
    """``|computed - exact|`` in units of the last place of ``exact`` in dtype."""
    computed = float(computed)
    if mpmath.isinf(exact) or np.isinf(computed):
        return 0.0 if computed == float(exact) else np.inf
    rounded = dtype(float(exact))
    spacing = float(np.spacing(abs(rounded)))
    if spacing == 0 or not np.isfinite(spacing):
        spacing = float(np.finfo(dtype).smallest_subnormal)
    return float(abs(mpmath.mpf(computed) - exact) / spacing)


def tiny_terms(n: int, copies: int = 1) -> tuple[list[str], np.ndarray]:
    """Labels and float32 rows of ``n`` entries: a maximum ``m`` and ``n -
    1`` equal entries far below it, whose terms ``t / (n - 1)`` lie below
    ``2**-29`` of the maximum's 1: summed with it, each rounds by the same
    amount (about 0.4 of an ulp of 1, where their float32 spacing allows).
    Twelve rows, each ``copies`` times."""
    labels, rows = [], []
    for m in (0.0, 2.0**-18, 8.0, -5.0):
        for t in (2.0**-19, 2.0**-16, 2.0**-13):
            term = (np.floor(t / (n - 1) * 2.0**52) + 0.4) * 2.0**-52
            row = np.full(n, np.float32(m + np.log(term)), dtype=np.float32)
            row[0] = m
            labels += [f"n={n} m={m} t={t}"] * copies
            rows += [row] * copies
    return labels, np.stack(rows)


def exact_two_values(kind: str, row: np.ndarray) -> list[mpmath.mpf]:
    """The exact results of ``kind`` (``"logsumexp"``, ``"log_softmax"``
    and ``"softmax"`` at entries 0 and 1, ``"cross_entropy"`` of class 0)
    of a row of two values, its maximum at 0 and the other everywhere
    else."""
    m, x = _mp(float(row[0])), _mp(float(row[1]))
    low = mpmath.log1p((row.size - 1) * mpmath.exp(x - m))
    if kind == "logsumexp":
        return [m + low]
    if kind == "cross_entropy":
        return [low]
    lsm = [-low, (x - m) - low]
    return lsm if kind == "log_softmax" else [mpmath.exp(v) for v in lsm]


def closed_form_gradient(kind: str, row: np.ndarray, g: np.ndarray, y: int) -> tuple:
    """The gradient of ``kind`` in a row, given ``g`` (that of its output:
    a row, or one value for the reductions to one), to 60 digits, and the
    sum of the magnitudes of its terms, which bounds its rounding."""
    p = exact_softmax(row)
    if kind == "logsumexp":
        return [g * q for q in p], [abs(g) * q for q in p]
    if kind == "cross_entropy":
        grad = [g * (q - (j == y)) for j, q in enumerate(p)]
        return grad, [abs(g) * (q + (j == y)) for j, q in enumerate(p)]
    gs = [mpmath.mpf(float(v)) for v in g]
    if kind == "log_softmax":
        total, size = mpmath.fsum(gs), mpmath.fsum(abs(v) for v in gs)
        return [v - q * total for v, q in zip(gs, p, strict=True)], [
            abs(v) + q * size for v, q in zip(gs, p, strict=True)
        ]
    dot = mpmath.fsum(v * q for v, q in zip(gs, p, strict=True))
    size = mpmath.fsum(abs(v) * q for v, q in zip(gs, p, strict=True))
    return [q * (v - dot) for v, q in zip(gs, p, strict=True)], [
        q * (abs(v) + size) for v, q in zip(gs, p, strict=True)
    ]


def assert_gradient(
    kind: str, x: np.ndarray, got: np.ndarray, g: np.ndarray, target: Any, dtype: Any
) -> None:
    """``got``, the gradient of ``kind`` over the rows ``x`` given ``g``
    (and the class indices ``target``), holds against the closed form:
    within a few ulps of ``dtype`` of the sum of its terms' magnitudes, and
    ``4 |x - lse|`` more, by which the rounding of ``x - m`` or of the
    output reaches ``exp(x - m)`` (that of the libraries' own gradients
    too)."""
    eps = float(np.finfo(dtype).eps)
    for i, row in enumerate(x):
        want, size = closed_form_gradient(kind, row, g[i], target[i])
        lse = exact_logsumexp(row)
        for j, (v, w, s) in enumerate(zip(got[i], want, size, strict=True)):
            if s == 0:
                # A -inf entry: no share of the sum, and no slope.
                assert v == 0, (kind, i, j, v)
                continue
            tol = (4 * abs(float(row[j]) - float(lse)) + 16) * eps * float(s)
            tol = max(tol, float(np.finfo(dtype).smallest_normal))
            assert abs(mpmath.mpf(float(v)) - w) <= tol, (kind, i, j, v, w)


def assert_float32_family(bk: Runtime, family: str) -> None:
    """The accuracy tests' ``family`` in float32, row by row, within their
    bounds: ``logsumexp`` within an ulp of the larger of its result and
    the row's maximum, every ``log_softmax`` and ``softmax`` entry (at or
    above the smallest normal) and every loss (class at the row's maximum,
    minimum and middle) within 4."""
    from lsekit import cross_entropy, log_softmax, logsumexp, softmax
    from tests.families import rows

    normal = np.finfo(np.float32).smallest_normal
    for row in rows(family, np.float32):
        a = bk.asarray(row, "float32")
        exact = exact_logsumexp(row)
        scale = np.float32(max(abs(float(exact)), abs(float(row.max()))))
        got = float(bk.to_numpy(logsumexp(a)))
        assert abs(mpmath.mpf(got) - exact) <= np.spacing(scale), (family, row)
        pairs = [
            *zip(bk.to_numpy(log_softmax(a)), exact_log_softmax(row), strict=True),
            *(
                (v, e)
                for v, e in zip(
                    bk.to_numpy(softmax(a)), exact_softmax(row), strict=True
                )
                if e >= normal
            ),
        ]
        targets = np.array([np.argmax(row), np.argmin(row), row.size // 2])
        losses = cross_entropy(
            bk.asarray(np.stack([row] * 3), "float32"),
            bk.asarray(targets, "int64"),
            reduction="none",
        )
        logp = exact_log_softmax(row)
        pairs += [
            (v, -logp[t]) for v, t in zip(bk.to_numpy(losses), targets, strict=True)
        ]
        for v, e in pairs:
            assert ulp_error(v, e, np.float32) <= 4.0, (family, row, v, e)


def require_kernel() -> None:
    """Skip the test where lsekit's C kernel was not built; fail instead
    where ``LSEKIT_REQUIRE_KERNEL`` says it must have been (nox sets it
    where a C compiler is found)."""
    import os

    from lsekit._fast import _fused

    if _fused._load() is None:
        if os.environ.get("LSEKIT_REQUIRE_KERNEL"):
            pytest.fail("the C kernel was not built (LSEKIT_REQUIRE_KERNEL is set)")
        pytest.skip("the C kernel was not built")
