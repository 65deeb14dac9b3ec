"""The implementation is lazy-safe: jit-compiled and Dask graphs give the
eager results, and Dask computes nothing before ``compute()``.

``cross_entropy`` cannot check class indices where their values are not
known yet (``jax.jit``, ``torch.compile``, Dask); there an out-of-range index
must give a NaN loss, never an error from inside the trace and never the
loss of some other, clamped or wrapped, class.
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
import pytest

from lsekit import cross_entropy, log_softmax, logmatmulexp, logsumexp, softmax
from tests.support import assert_logmatmulexp_close, dask_work, library_session

# Each library's tests run where its backend is tested (``--backend jax``,
# ``--backend dask``, ``--backend torch``, or every CPU backend by default),
# and skip elsewhere: PyTorch is installed in every session as a reference,
# and torch.compile takes long.


@pytest.fixture
def jax(request: pytest.FixtureRequest) -> Any:
    return library_session(request, "jax")


@pytest.fixture
def da(request: pytest.FixtureRequest) -> Any:
    library_session(request, "dask")
    return pytest.importorskip("dask.array")


@pytest.fixture
def torch(request: pytest.FixtureRequest) -> Any:
    return library_session(request, "torch")


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


def test_jax_jit_matches_eager(jax):
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


def test_dask_is_lazy_until_compute(da):
    import dask

    calls, a, m = _calls(lambda v: da.from_array(v, chunks=2))
    with dask_work() as work:
        results = {name: f(a, m) for name, f in calls.items()}
        assert work() == 0, "the graph ran before compute()"
    for name, r in results.items():
        eager = calls[name](X, MASK)
        got = dask.compute(r)[0]
        for g, e in zip(np.atleast_1d(got), np.atleast_1d(eager), strict=True):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(e), err_msg=name)


# cross_entropy --------------------------------------------------------------

RNG = np.random.default_rng(20240611)
LOGITS = RNG.normal(size=(5, 4)) * 10
LOGITS[0] = [0.0, -40.0, 3.0, 1.0]  # a tiny and a large loss in one row
LOGITS_3D = RNG.normal(size=(3, 4, 2)) * 5  # PyTorch's (N, C, d) layout
INDEX = np.array([1, 3, 0, 2, 2])
INDEX_3D = np.array([[0, 3], [1, 1], [2, 0]])
PROBS = RNG.dirichlet(np.ones(4), size=5)
WEIGHT = np.array([1.0, 0.5, 2.0, 3.0])
COUNTED = np.array([True, False, True, True, True])
REDUCTIONS = ["none", "mean", "sum"]


def _ce_cases(asarray):
    """``name: (f, inputs, maxulp)`` with ``f(*inputs)`` a cross_entropy call.

    ``maxulp`` is how far a compiled graph may be from the eager result:
    see ``test_jax_jit_cross_entropy_matches_eager``.
    """
    w, m = asarray(WEIGHT), asarray(COUNTED)
    index = asarray(LOGITS), asarray(INDEX)
    probs = asarray(LOGITS), asarray(PROBS)
    cases = {}
    for r in REDUCTIONS:
        cases[f"index-{r}"] = (
            lambda x, t, r=r: cross_entropy(x, t, reduction=r),
            index,
            0,
        )
        cases[f"index-ignore-where-{r}"] = (
            lambda x, t, r=r: cross_entropy(x, t, ignore_index=2, where=m, reduction=r),
            index,
            0,
        )
        cases[f"index-weight-smoothing-{r}"] = (
            lambda x, t, r=r: cross_entropy(
                x,
                t,
                weight=w,
                ignore_index=2,
                label_smoothing=0.1,
                where=m,
                reduction=r,
            ),
            index,
            1,
        )
        cases[f"probabilities-{r}"] = (
            lambda x, t, r=r: cross_entropy(x, t, reduction=r),
            probs,
            1,
        )
        cases[f"probabilities-weight-smoothing-{r}"] = (
            lambda x, t, r=r: cross_entropy(
                x, t, weight=w, label_smoothing=0.2, where=m, reduction=r
            ),
            probs,
            1,
        )
        cases[f"axis-1-of-3d-{r}"] = (
            lambda x, t, r=r: cross_entropy(
                x,
                t,
                axis=1,
                weight=w,
                ignore_index=3,
                label_smoothing=0.1,
                reduction=r,
            ),
            (asarray(LOGITS_3D), asarray(INDEX_3D)),
            1,
        )
    return cases


@pytest.mark.parametrize("name", list(_ce_cases(np.asarray)))
def test_jax_jit_cross_entropy_matches_eager(jax, name):
    if not jax.config.jax_enable_x64:
        pytest.skip("the 1-ulp bound is for float64 (set JAX_ENABLE_X64=1)")
    f, inputs, maxulp = _ce_cases(jax.numpy.asarray)[name]
    eager = np.asarray(f(*inputs))
    jitted = np.asarray(jax.jit(f)(*inputs))
    assert jitted.dtype == eager.dtype == np.float64
    assert jitted.shape == eager.shape
    assert np.all(np.isfinite(eager))
    # Index targets without weight and smoothing only subtract and add, and
    # give the eager bits. Elsewhere XLA fuses the elementwise chain under
    # jit and contracts a * b + c into one fused multiply-add (one rounding
    # where eager op-by-op dispatch rounds twice): 1 ulp, no more.
    np.testing.assert_array_max_ulp(jitted, eager, maxulp=maxulp)


def test_jax_jit_cross_entropy_out_of_range_is_nan(jax):
    jnp = jax.numpy
    x = jnp.asarray(LOGITS[:3])
    for bad in (4, -1, 2**30):
        t = jnp.asarray([0, bad, 2])
        with pytest.raises(ValueError, match=f"class index {bad}, "):
            cross_entropy(x, t)  # eager JAX reads the values and refuses
        none = np.asarray(
            jax.jit(lambda x, t: cross_entropy(x, t, reduction="none"))(x, t)
        )
        mean = np.asarray(jax.jit(cross_entropy)(x, t))
        # NaN, not the loss of a clamped (class 3) or wrapped (class 3 for -1)
        # index; the good examples keep their eager losses.
        assert np.isnan(none[1]), (bad, none)
        good = np.asarray(cross_entropy(x[::2], t[::2], reduction="none"))
        np.testing.assert_array_equal(none[::2], good)
        assert np.isnan(mean), (bad, mean)
    # Uncounted bad indices stay harmless under jit as well.
    t = jnp.asarray([0, -100, 2])
    ignored = jax.jit(lambda x, t: cross_entropy(x, t, ignore_index=-100))(x, t)
    masked = jax.jit(lambda x, t, m: cross_entropy(x, t, where=m))(
        x, jnp.asarray([0, 9, 2]), jnp.asarray([True, False, True])
    )
    want = np.asarray(cross_entropy(x[::2], jnp.asarray([0, 2])))
    np.testing.assert_array_equal(np.asarray(ignored), want)
    np.testing.assert_array_equal(np.asarray(masked), want)


def test_dask_cross_entropy_is_lazy_until_compute(da):
    import dask

    # Chunks of 2 split the class axis, so the reductions cross chunks.
    lazy = _ce_cases(lambda v: da.from_array(v, chunks=2))
    eager = _ce_cases(np.asarray)
    with dask_work() as work:
        results = {name: f(*inputs) for name, (f, inputs, _) in lazy.items()}
        assert work() == 0, "the graph ran before compute()"
        # The control: the same count does see a compute.
        computed_results = dask.compute(results)[0]
        assert work() > 0, "the count missed a compute()"
    for name, r in results.items():
        assert isinstance(r, da.Array), name
        f, inputs, _ = eager[name]
        # Dask runs the standard-only path on NumPy chunks, in the order of
        # operations of eager NumPy's own, except where eager NumPy takes its
        # fast path (class indices without weights): both are within the
        # 4 ulps per example of test_cross_entropy_accuracy.
        got = computed_results[name]
        np.testing.assert_array_max_ulp(got, f(*inputs), maxulp=4)


def test_dask_cross_entropy_out_of_range_is_nan(da):
    x = da.from_array(LOGITS[:3], chunks=2)
    for bad in (4, -1):
        t = da.from_array(np.array([0, bad, 2]), chunks=2)
        none = cross_entropy(x, t, reduction="none").compute()
        assert np.isnan(none[1]), (bad, none)
        good = cross_entropy(LOGITS[:3:2], np.array([0, 2]), reduction="none")
        np.testing.assert_array_equal(none[::2], good)
        assert np.isnan(cross_entropy(x, t).compute())
        assert np.isnan(cross_entropy(x, t, reduction="sum").compute())


# Inductor warns about torch.jit in its CPU passes, which is not lsekit's.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")
def test_torch_compile_cross_entropy_matches_eager_and_gives_nan(torch):
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        pytest.skip("torch.compile's CPU backend needs a C++ compiler; none found")
    x = torch.asarray(LOGITS)
    w = torch.asarray(WEIGHT)

    def f(x, t):
        return cross_entropy(
            x, t, weight=w, ignore_index=2, label_smoothing=0.1, reduction="none"
        )

    compiled = torch.compile(f, fullgraph=False)
    t = torch.asarray(INDEX)
    eager = f(x, t).numpy()
    # Bit-equal here; Inductor's C++ may contract multiply-adds as XLA does.
    np.testing.assert_array_max_ulp(compiled(x, t).numpy(), eager, maxulp=1)
    t_bad = torch.asarray([1, 4, 0, 2, -1])
    with pytest.raises(ValueError, match="class index -1, "):
        f(x, t_bad)  # eager PyTorch reads the values and refuses
    got = compiled(x, t_bad).numpy()
    assert np.isnan(got[1]), got
    assert np.isnan(got[4]), got
    np.testing.assert_array_max_ulp(got[[0, 2, 3]], eager[[0, 2, 3]], maxulp=1)


# logmatmulexp -----------------------------------------------------------------
#
# Under jax.jit and on Dask the cells to recompute cannot be picked out
# before the graph runs; the results agree with the eager ones within the
# bound of tests/support.py. (Observed: bit-equal under jit, 1 ulp apart on
# Dask.)


def _lme_cases():
    rng = np.random.default_rng(20241122)
    band_a = np.triu(np.tril(rng.normal(0, 30, (5, 4)), 1), -1)
    band_b = np.triu(np.tril(rng.normal(0, 30, (4, 3)), 1), -1)
    return {
        "typical": (rng.normal(0, 3, (4, 5)), rng.normal(0, 3, (5, 3))),
        # 400 + log 2 at (0, 0): both terms 1400 below r + c.
        "crossed": (
            np.array([[-500.0, 900.0, 0.0], [1.0, 2.0, 3.0]]),
            np.array([[900.0, 0.0], [-500.0, 1.0], [0.0, 2.0]]),
        ),
        "wide-broadcast-batch": (
            rng.normal(0, 600, (2, 1, 3, 4)),
            rng.normal(0, 600, (3, 4, 2)),
        ),
        "vector-times-batch": (rng.normal(0, 600, 4), rng.normal(0, 600, (2, 4, 3))),
        "banded-minus-inf": (
            np.where(band_a == 0, -np.inf, band_a),
            np.where(band_b == 0, -np.inf, band_b),
        ),
    }


LME_NONFINITE = (
    np.array([[np.inf, 0.0, 1.0], [np.nan, 2.0, 0.0], [-np.inf, -np.inf, 5.0]]),
    np.array([[0.0, -np.inf], [1.0, 2.0], [np.inf, 3.0]]),
)


def _matmul_shape(a, b):
    return np.matmul(np.zeros(a.shape), np.zeros(b.shape)).shape


def test_jax_jit_logmatmulexp_matches_eager(jax):
    if not jax.config.jax_enable_x64:
        pytest.skip("the bound is for float64 (set JAX_ENABLE_X64=1)")
    jnp = jax.numpy
    jitted = jax.jit(logmatmulexp)
    cases = {**_lme_cases(), "inf-and-nan": LME_NONFINITE}
    for name, (a, b) in cases.items():
        x, y = jnp.asarray(a), jnp.asarray(b)
        eager = np.asarray(logmatmulexp(x, y))
        assert eager.shape == _matmul_shape(a, b), name
        assert_logmatmulexp_close(jitted(x, y), eager, a, b, name)
    # The guard: the crossed cell is finite and right on both sides.
    got = np.asarray(jitted(*map(jnp.asarray, cases["crossed"])))
    np.testing.assert_allclose(got[0, 0], 400 + np.log(2), rtol=1e-15)


def test_dask_logmatmulexp_is_lazy_until_compute(da):
    import dask

    # Infinite operands too: each block's product is eager, inside lsekit's
    # floating-point error state, and warns no more than on NumPy.
    cases = {**_lme_cases(), "inf-and-nan": LME_NONFINITE}
    with dask_work() as work:
        results = {
            name: logmatmulexp(da.from_array(a, chunks=2), da.from_array(b, chunks=2))
            for name, (a, b) in cases.items()
        }
        assert work() == 0, "the graph ran before compute()"
        computed_results = dask.compute(results)[0]
        assert work() > 0, "the count missed a compute()"
    for name, (a, b) in cases.items():
        assert isinstance(results[name], da.Array), name
        assert results[name].shape == _matmul_shape(a, b), name
        assert_logmatmulexp_close(
            computed_results[name], logmatmulexp(a, b), a, b, name
        )


@pytest.mark.parametrize("unknown", ["rows", "columns", "inner"])
def test_dask_logmatmulexp_of_unknown_length(da, unknown):
    # Boolean indexing leaves a Dask length unknown (NaN) until computed.
    a, b = _lme_cases()["crossed"]
    a = np.concatenate([a, [[7.0, -1.0, 2.0]]])
    da_a, da_b = da.from_array(a, chunks=2), da.from_array(b, chunks=2)
    if unknown == "rows":
        x, y = da_a[da_a[:, 2] != 3.0], da_b
        na, nb = a[a[:, 2] != 3.0], b
    elif unknown == "columns":
        x, y = da_a, da_b[:, da_b[0] > 0]
        na, nb = a, b[:, b[0] > 0]
    else:
        keep = np.array([True, True, False])
        mask = da.from_array(keep, chunks=2)
        x, y = da_a[:, mask], da_b[mask]
        na, nb = a[:, keep], b[keep]
    assert any(np.isnan(d) for d in (*x.shape, *y.shape))
    # Dask's own matrix product needs the lengths: lsekit says so, before
    # any graph is built, and works once they are known.
    with pytest.raises(ValueError, match=r"needs known lengths.*compute_chunk_sizes"):
        logmatmulexp(x, y)
    # Masking the inner axis leaves an empty chunk: its blocks' products
    # have no terms (-inf), which the combination of the blocks absorbs.
    x, y = x.compute_chunk_sizes(), y.compute_chunk_sizes()
    got = logmatmulexp(x, y).compute()
    assert_logmatmulexp_close(got, logmatmulexp(na, nb), na, nb, unknown)
