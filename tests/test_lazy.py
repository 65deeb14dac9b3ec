"""The implementation is lazy-safe: jit-compiled and Dask graphs give the
eager results, and Dask computes nothing before ``compute()``."""

from __future__ import annotations

import numpy as np
import pytest

from lsekit import log_softmax, logsumexp, softmax

X = np.array([[0.0, -40.0, 3.0], [-np.inf, -np.inf, -np.inf], [1000.0, 999.0, 1.0]])
MASK = np.array([[True, True, False], [True, True, True], [False, True, True]])


def _calls(xp_asarray):
    a = xp_asarray(X)
    m = xp_asarray(MASK)
    return (
        {
            "logsumexp": lambda a, m: logsumexp(a, axis=1, where=m),
            "logsumexp_b": lambda a, m: logsumexp(
                a, axis=1, b=m[0, :] * 2.0 - 1.0, return_sign=True
            ),
            "softmax": lambda a, m: softmax(a, axis=1, where=m),
            "log_softmax": lambda a, m: log_softmax(a, axis=-1),
        },
        a,
        m,
    )


def test_jax_jit_matches_eager():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    calls, a, m = _calls(jnp.asarray)
    for name, f in calls.items():
        eager = f(a, m)
        jitted = jax.jit(f)(a, m)
        np.testing.assert_array_equal(
            np.asarray(jax.tree_util.tree_leaves(jitted)),
            np.asarray(jax.tree_util.tree_leaves(eager)),
            err_msg=name,
        )


def test_dask_is_lazy_until_compute():
    da = pytest.importorskip("dask.array")
    import dask

    calls, a, m = _calls(lambda v: da.from_array(v, chunks=2))
    computed = []

    class Watch(dask.callbacks.Callback):
        def _start(self, dsk):
            computed.append(len(dsk))

    with Watch():
        results = {name: f(a, m) for name, f in calls.items()}
        assert computed == [], "the graph ran before compute()"
    for name, r in results.items():
        eager = calls[name](X, MASK)
        got = dask.compute(r)[0]
        for g, e in zip(np.atleast_1d(got), np.atleast_1d(eager), strict=True):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(e), err_msg=name)
