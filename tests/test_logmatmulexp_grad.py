"""Gradients of logmatmulexp, on PyTorch and JAX.

``out_ij = log sum_k exp(a_ik + b_kj)``, so ``d out_ij / d a_ik = d out_ij /
d b_kj = exp(a_ik + b_kj - out_ij)``: the share of term ``k`` in cell
``(i, j)``. Against an incoming gradient ``G``,

    grad_a_ik = sum_j G_ij exp(a_ik + b_kj - out_ij),
    grad_b_kj = sum_i G_ij exp(a_ik + b_kj - out_ij),

where a ``-inf`` cell (no pair of finite terms) has no shares at all. The
reference below evaluates that closed form in mpmath, independently of
lsekit, and sums a broadcast operand's gradient over the batch dimensions
it was broadcast along.

The cases reach both halves of the backward pass (two matrix products over
the certified cells, and each uncertified cell's own shares), and on JAX
both routes: the case matrix runs under ``jax.jit`` (the blocked broadcast),
and eager ``jax.grad`` (the matrix products and per-cell repair) is checked
against it and the reference on crossed maxima.

These tests are specific to the two autodiff libraries and do not take the
``bk`` fixture; each runs where its library's backend is tested (``--backend
torch`` or ``--backend jax``, or every CPU backend by default) and skips
elsewhere, PyTorch being installed in every session as a reference. JAX runs
in float64 under ``jax.enable_x64`` where the session did not enable it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
import pytest

from lsekit import logmatmulexp
from tests.support import jax_x64, library_session

INF = math.inf

# Each share is exp(x) with x = a_ik + b_kj - out_ij evaluated in floating
# point: x carries an absolute error of a few ulps of the largest of |a|, |b|,
# |out|, which is a relative error of the share. Here those reach ~1600
# (crossed maxima at a gap of 800), i.e. 1600 * 2^-52 ~ 4e-13 at worst; the
# sums over j (or i) add a few eps more. So each gradient entry is held to
# 1e-12 of the sum of the absolute values of its shares: that is 1e-12
# relative wherever the shares have one sign (G > 0), and the absolute part
# of a sum that cancels (signed G) is as good as its largest share allows.
RTOL = 1e-12
# float32: the same argument with eps = 2^-24 at magnitudes up to ~200
# (crossed maxima at a gap of 100): 200 * 2^-24 ~ 1.2e-5 per share, plus the
# float32 matrix products' roundings (K * eps); 2.5e-5 is observed, and 1e-4
# leaves a margin of 4.
RTOL32 = 1e-4


# Exact reference ---------------------------------------------------------------


@dataclass(frozen=True)
class Exact:
    out: np.ndarray
    grad_a: np.ndarray
    grad_b: np.ndarray
    # The sums of |share| that make each gradient entry (its error scale).
    size_a: np.ndarray
    size_b: np.ndarray
    # Entries with at least one finite term; the others feed only -inf
    # cells and must get exactly 0.
    live_a: np.ndarray
    live_b: np.ndarray


def _unbroadcast(x: np.ndarray, shape: tuple[int, ...], reduce: Any) -> np.ndarray:
    """``x`` reduced over the axes an operand of ``shape`` was broadcast along."""
    x = reduce(x, axis=tuple(range(x.ndim - len(shape))))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return reduce(x, axis=axes, keepdims=True)


def exact(a: np.ndarray, b: np.ndarray, g: np.ndarray) -> Exact:
    """``logmatmulexp(a, b)`` and its gradients against ``g``, in mpmath."""
    a, b, g = (np.asarray(x, dtype=np.float64) for x in (a, b, g))
    shape_a, shape_b = a.shape, b.shape
    if a.ndim == 1:
        a, g = a[None, :], np.expand_dims(g, -2 if b.ndim > 1 else -1)
    if b.ndim == 1:
        b, g = b[:, None], g[..., None]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    (m, k), n = a.shape[-2:], b.shape[-1]
    a = np.broadcast_to(a, (*batch, m, k))
    b = np.broadcast_to(b, (*batch, k, n))
    g = np.broadcast_to(g, (*batch, m, n))
    out = np.full((*batch, m, n), -INF)
    shares_a = np.empty((*batch, m, k), dtype=object)
    shares_b = np.empty((*batch, k, n), dtype=object)
    for index in np.ndindex(shares_a.shape):
        shares_a[index] = []
    for index in np.ndindex(shares_b.shape):
        shares_b[index] = []
    with mpmath.workdps(40):
        for c in np.ndindex(batch):
            for i in range(m):
                for j in range(n):
                    terms = {
                        q: mpmath.mpf(a[c][i, q]) + mpmath.mpf(b[c][q, j])
                        for q in range(k)
                        if a[c][i, q] > -INF and b[c][q, j] > -INF
                    }
                    if not terms:
                        continue
                    top = max(terms.values())
                    o = top + mpmath.log(
                        mpmath.fsum(mpmath.exp(t - top) for t in terms.values())
                    )
                    out[(*c, i, j)] = float(o)
                    for q, t in terms.items():
                        share = mpmath.mpf(g[c][i, j]) * mpmath.exp(t - o)
                        shares_a[(*c, i, q)].append(share)
                        shares_b[(*c, q, j)].append(share)

        def total(shares: np.ndarray, f: Any) -> np.ndarray:
            v = [float(mpmath.fsum(f(s) for s in cell)) for cell in shares.flat]
            return np.array(v).reshape(shares.shape)

        grad_a, size_a = total(shares_a, lambda s: s), total(shares_a, abs)
        grad_b, size_b = total(shares_b, lambda s: s), total(shares_b, abs)
    live_a = np.vectorize(bool, otypes=[bool])(shares_a)
    live_b = np.vectorize(bool, otypes=[bool])(shares_b)
    # Back to the operands' own shapes: summed (or any-ed) over the batch
    # axes they were broadcast along, the axis of a 1-D operand removed.
    full_a = (*shape_a[:-2], m, k)
    full_b = (*shape_b[:-2], k, n)

    def as_a(x: np.ndarray, reduce: Any) -> np.ndarray:
        return _unbroadcast(x, full_a, reduce).reshape(shape_a)

    def as_b(x: np.ndarray, reduce: Any) -> np.ndarray:
        return _unbroadcast(x, full_b, reduce).reshape(shape_b)

    out_shape = (*batch, *((m,) if len(shape_a) > 1 else ()))
    out_shape += (n,) if len(shape_b) > 1 else ()
    return Exact(
        out.reshape(out_shape),
        as_a(grad_a, np.sum),
        as_b(grad_b, np.sum),
        as_a(size_a, np.sum),
        as_b(size_b, np.sum),
        as_a(live_a, np.any),
        as_b(live_b, np.any),
    )


def check_gradient(
    got: Any,
    want: np.ndarray,
    size: np.ndarray,
    live: np.ndarray,
    rtol: float,
    what: str,
) -> None:
    got = np.asarray(got)
    assert got.shape == want.shape, what
    assert np.isfinite(got).all(), f"{what}: {got}"
    # Exactly 0, not merely small: an entry without finite terms is in no
    # cell's sum.
    assert (got[~live] == 0.0).all(), f"{what}: {got[~live]}"
    # Subnormal shares carry no relative accuracy (and XLA on CPU flushes
    # them to zero): below the smallest normal number only the absolute
    # error counts.
    floor = float(np.finfo(got.dtype).smallest_normal)
    error = np.abs(got.astype(np.float64) - want)
    bound = rtol * size + floor
    assert (error <= bound).all(), (
        f"{what}: error / (sum |share|) up to {np.max(error / (size + floor)):.3g}"
    )


def check(got: tuple[Any, Any, Any], want: Exact, rtol: float, what: str) -> None:
    out, grad_a, grad_b = (np.asarray(x) for x in got)
    assert out.shape == want.out.shape, what
    # The forward pass is exact; a couple of ulps here keeps the test about
    # the gradient.
    eps = float(np.finfo(out.dtype).eps)
    np.testing.assert_allclose(out, want.out, rtol=4 * eps, atol=4 * eps, err_msg=what)
    check_gradient(grad_a, want.grad_a, want.size_a, want.live_a, rtol, f"{what} a")
    check_gradient(grad_b, want.grad_b, want.size_b, want.live_b, rtol, f"{what} b")


# The two autodiff libraries ------------------------------------------------------


class Torch:
    name = "torch"

    def __init__(self) -> None:
        self.torch = pytest.importorskip("torch")

    def value_and_grad(
        self, a: np.ndarray, b: np.ndarray, g: np.ndarray, finite: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        torch = self.torch
        at = torch.tensor(a, requires_grad=True)
        bt = torch.tensor(b, requires_grad=True)
        out = logmatmulexp(at, bt)
        assert out.dtype == at.dtype
        # The whole of G, -inf cells included: those must add nothing,
        # whatever gradient reaches them.
        out.backward(torch.from_numpy(np.asarray(g, dtype=a.dtype)))
        return out.detach().numpy(), at.grad.numpy(), bt.grad.numpy()


def _jax_loss(a: Any, b: Any, weights: Any, finite: Any) -> tuple[Any, Any]:
    """``(vdot(G, out), out)`` over the finite cells of the exact result.

    A -inf cell times any G is NaN or -inf, so those cells are kept out by a
    mask computed outside, from the reference: not from ``out``, so the
    where's other branch is a constant 0 and those cells' cotangent is 0.
    The mask and G are arguments, not constants, so that one compilation
    serves every case of a shape.
    """
    import jax.numpy as jnp

    out = logmatmulexp(a, b)
    return jnp.vdot(weights, jnp.where(finite, out, 0.0)), out


@functools.cache
def _jax_transform(kind: str) -> Any:
    import jax

    if kind == "grad-jit":
        return jax.jit(jax.grad(lambda *args: _jax_loss(*args)[0], (0, 1)))
    value_and_grad = jax.value_and_grad(_jax_loss, (0, 1), has_aux=True)
    return jax.jit(value_and_grad) if kind == "jit" else value_and_grad


class Jax:
    """``jax.value_and_grad``, under ``jax.jit`` unless ``kind='eager'``.

    The case matrix runs jitted: eager JAX compiles each operation anew for
    every shape, and the eager route's shapes include the number of
    uncertified cells, which costs seconds per case. The eager route is
    checked on the cases of ``test_jax_jit_matches_eager``.
    """

    name = "jax"

    def __init__(self, kind: str = "jit") -> None:
        self.jax = pytest.importorskip("jax")
        self.kind = kind

    def value_and_grad(
        self, a: np.ndarray, b: np.ndarray, g: np.ndarray, finite: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        jnp = self.jax.numpy
        weights = np.where(finite, g, 0.0).astype(a.dtype)
        args = (jnp.asarray(a), jnp.asarray(b), jnp.asarray(weights), finite)
        assert args[0].dtype == a.dtype
        (_, out), (grad_a, grad_b) = _jax_transform(self.kind)(*args)
        assert out.dtype == a.dtype
        return np.asarray(out), np.asarray(grad_a), np.asarray(grad_b)


def _jax_x64() -> Iterator[Jax]:
    engine = Jax()
    with jax_x64():
        yield engine


@pytest.fixture
def jax_engine(request: pytest.FixtureRequest) -> Iterator[Jax]:
    library_session(request, "jax")
    yield from _jax_x64()


@pytest.fixture
def torch(request: pytest.FixtureRequest) -> Any:
    return library_session(request, "torch")


@pytest.fixture(params=["torch", "jax"])
def engine(request: pytest.FixtureRequest) -> Iterator[Any]:
    library_session(request, request.param)
    if request.param == "torch":
        yield Torch()
    else:
        yield from _jax_x64()


# Cases ---------------------------------------------------------------------------

# One matrix shape for nearly every case: on JAX every new shape compiles
# every operation anew.
M, K, N = 4, 5, 3
rng = np.random.default_rng(31)


def _normal(*shape: int) -> np.ndarray:
    return rng.normal(scale=3.0, size=shape)


def _crossed(gap: float) -> tuple[np.ndarray, np.ndarray]:
    # Rows 0 and 1 of a peak at k = 0, every column of b at k = 1: their
    # cells' terms all sit about `gap` below r + c. Rows 2 and 3 meet the
    # columns at their maxima and stay on the matrix product.
    a, b = _normal(M, K), _normal(K, N)
    a[:2, 0] += gap
    b[1, :] += gap
    return a, b


def _banded() -> tuple[np.ndarray, np.ndarray]:
    i, k, j = np.arange(M)[:, None], np.arange(K), np.arange(N)
    a = np.where(np.abs(i - k) <= 1, _normal(M, K), -INF)
    b = np.where(np.abs(k[:, None] - j) <= 1, _normal(K, N), -INF)
    return a, b  # cell (3, 0) has no k in both bands: -inf


def _block_sparse() -> tuple[np.ndarray, np.ndarray]:
    # Rows 0-1 of a reach k = 0..2, rows 2-3 reach k = 3..4; k = 0..2 of b
    # reach columns 0-1, k = 4 reaches column 2 only, and k = 3 nothing. So
    # cells (0-1, 2) and (2-3, 0-1) are -inf, and a[2:, 3], finite, feeds
    # nothing.
    a, b = _normal(M, K), _normal(K, N)
    a[:2, 3:] = -INF
    a[2:, :3] = -INF
    b[:3, 2] = -INF
    b[3, :] = -INF
    b[4, :2] = -INF
    return a, b


def _inf_rows_cols() -> tuple[np.ndarray, np.ndarray]:
    a, b = _normal(M, K), _normal(K, N)
    a[1, :] = -INF  # a -inf row of the result
    b[:, 2] = -INF  # a -inf column of the result
    a[:, 0] = -INF  # so b[0, :] feeds nothing
    b[3, :] = -INF  # so a[:, 3] feeds nothing
    # Crossed maxima too: the -inf rows and columns go through the exact
    # repair path along with the crossed cells.
    a[0, 4] += 800.0
    b[2, :2] += 800.0
    return a, b


def _batched() -> tuple[np.ndarray, np.ndarray]:
    a, b = _normal(2, M, K), _normal(2, K, N)
    a[1, :2, 0] += 800.0
    b[1, 1, :] += 800.0
    b[0, :, 1] = -INF
    return a, b


def _broadcast() -> tuple[np.ndarray, np.ndarray]:
    a, b = _normal(2, 1, M, K), _normal(3, K, N)
    a[1, 0, :2, 0] += 800.0  # crossed in batch (1, 2) only
    b[2, 1, :] += 800.0
    a[0, 0, 3, :] = -INF  # feeds only -inf cells, in all three copies
    b[0, 3, :] = -INF
    return a, b


def _broadcast_shared() -> tuple[np.ndarray, np.ndarray]:
    # One matrix b for a batch of a: its gradient is the sum over the batch.
    a, b = _normal(2, M, K), _normal(K, N)
    a[0, :2, 0] += 800.0
    b[1, :] += 800.0
    return a, b


def _vectors() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    a, b = _crossed(800.0)
    return {
        "vector-a": (a[0], b),  # every cell crossed
        "vector-b": (a, b[:, 0]),
        "vectors": (a[0], b[:, 0]),
    }


CASES: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "normal": (_normal(M, K), _normal(K, N)),
    "crossed-100": _crossed(100.0),
    "crossed-800": _crossed(800.0),
    "seed": (np.array([[-500.0, 900.0]]), np.array([[900.0], [-500.0]])),
    "banded": _banded(),
    "block-sparse": _block_sparse(),
    "inf-rows-cols": _inf_rows_cols(),
    "all-inf-a": (np.full((M, K), -INF), _normal(K, N)),
    "batched": _batched(),
    "broadcast": _broadcast(),
    "broadcast-shared-b": _broadcast_shared(),
    **_vectors(),
}
INF_CASES = ["banded", "block-sparse", "inf-rows-cols", "broadcast"]
# Magnitudes up to ~200, where float32 still resolves the shares to RTOL32.
F32_CASES = ["normal", "crossed-100", "banded", "block-sparse"]
# Each shape costs JAX a compilation; these shapes' 1-D and broadcast
# handling is lsekit's own, the same code for both libraries, so PyTorch
# alone covers them.
TORCH_ONLY = ["vector-b", "vectors", "broadcast-shared-b"]
CLOSED_FORM = [("torch", case) for case in CASES] + [
    ("jax", case) for case in CASES if case not in TORCH_ONLY
]


def incoming(case: str, dtype: Any = np.float64) -> np.ndarray:
    """The gradient G that flows into the result, random and signed."""
    a, b = CASES[case]
    shape = np.matmul(np.ones_like(a), np.ones_like(b)).shape
    seed = sum(map(ord, case))
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def operands(case: str, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray]:
    a, b = CASES[case]
    return np.asarray(a, dtype=dtype), np.asarray(b, dtype=dtype)


@functools.cache
def reference(case: str, dtype: str = "float64") -> Exact:
    a, b = operands(case, dtype)
    return exact(a, b, incoming(case, dtype))


def test_cases_take_the_paths_they_are_meant_to():
    # The cases are chosen to reach both halves of the backward pass: the two
    # matrix products over certified cells, and the uncertified cells' own
    # shares. Which cells are which is internal, but a case that silently
    # stopped reaching the repair path would leave it untested.
    xp = pytest.importorskip("array_api_compat.numpy")
    from lsekit._linalg import _forward

    def uncertified(case: str, dtype: Any = np.float64) -> np.ndarray:
        a, b = operands(case, dtype)
        with np.errstate(all="ignore"):
            _, saved = _forward(xp.asarray(a), xp.asarray(b), keep=True)
        return ~np.asarray(saved.certified)

    # Rows 0-1 crossed, rows 2-3 not: both halves in one call.
    assert uncertified("crossed-800")[:2].all()
    assert not uncertified("crossed-800").all()
    assert uncertified("seed").all()
    assert uncertified("inf-rows-cols").any()
    assert not uncertified("inf-rows-cols").all()
    # float64 holds e^-100: the gap-100 cells are certified (P ~ e^-100 is
    # far above the threshold, ~e^-318) and stay on the matrix products,
    # with G / P ~ e^100. float32 does not, and repairs them.
    assert not uncertified("crossed-100")[:2].any()
    assert uncertified("crossed-100", np.float32)[:2].all()


# Closed form -------------------------------------------------------------------


@pytest.mark.parametrize(("engine", "case"), CLOSED_FORM, indirect=["engine"])
def test_closed_form(engine, case):
    want = reference(case)
    a, b = operands(case)
    got = engine.value_and_grad(a, b, incoming(case), np.isfinite(want.out))
    check(got, want, RTOL, f"{engine.name} {case}")


@pytest.mark.parametrize("case", F32_CASES)
def test_closed_form_float32(engine, case):
    want = reference(case, "float32")
    a, b = operands(case, np.float32)
    got = engine.value_and_grad(a, b, incoming(case, np.float32), np.isfinite(want.out))
    for x in got:
        assert x.dtype == np.float32
    check(got, want, RTOL32, f"{engine.name} {case} float32")


@pytest.mark.parametrize(
    ("engine", "case", "shape_a", "shape_b"),
    [
        ("torch", "broadcast", (2, 1, M, K), (3, K, N)),
        ("torch", "broadcast-shared-b", (2, M, K), (K, N)),
        ("torch", "vectors", (K,), (K,)),
        ("jax", "broadcast", (2, 1, M, K), (3, K, N)),
        ("jax", "vector-a", (K,), (K, N)),
    ],
    indirect=["engine"],
)
def test_gradients_have_the_operands_shapes(engine, case, shape_a, shape_b):
    # The reference sums over the broadcast batch axes, so the closed-form
    # test checks this too; here the shapes are stated outright.
    want = reference(case)
    a, b = operands(case)
    out, grad_a, grad_b = engine.value_and_grad(
        a, b, incoming(case), np.isfinite(want.out)
    )
    assert (a.shape, b.shape) == (shape_a, shape_b)
    assert (grad_a.shape, grad_b.shape) == (shape_a, shape_b)
    assert out.shape == np.matmul(np.ones_like(a), np.ones_like(b)).shape


# PyTorch -----------------------------------------------------------------------

GRADCHECK = {
    "2d": (_normal(M, K), _normal(K, N)),
    "batched": (_normal(2, M, K), _normal(2, K, N)),
    "broadcast": (_normal(2, 1, M, K), _normal(3, K, N)),
    "vector-a": (_normal(K), _normal(K, N)),
    "vector-b": (_normal(M, K), _normal(K)),
    "vectors": (_normal(K), _normal(K)),
    "crossed-100": CASES["crossed-100"],
    "crossed-800": CASES["crossed-800"],
    "seed": CASES["seed"],
}


@pytest.mark.parametrize("case", list(GRADCHECK))
def test_torch_gradcheck(torch, case):
    # Finite differences need finite outputs: the -inf structure is checked
    # against the closed form instead.
    a, b = (torch.tensor(x, dtype=torch.float64) for x in GRADCHECK[case])
    assert torch.isfinite(logmatmulexp(a, b)).all()
    a.requires_grad_()
    b.requires_grad_()
    assert torch.autograd.gradcheck(logmatmulexp, (a, b))


@pytest.mark.parametrize("case", INF_CASES)
def test_torch_inf_cells_take_no_gradient(torch, case):
    # G only at the -inf cells: whatever flows into them, nothing flows out.
    want = reference(case)
    dead = ~np.isfinite(want.out)
    assert dead.any()
    g = np.where(dead, incoming(case), 0.0)
    a, b = (torch.tensor(x, requires_grad=True) for x in operands(case))
    logmatmulexp(a, b).backward(torch.from_numpy(g))
    assert (a.grad == 0).all()
    assert (b.grad == 0).all()


@pytest.mark.parametrize("case", INF_CASES)
def test_torch_finite_where_broadcast_logsumexp_is_nan(torch, case):
    want = reference(case)
    g = torch.from_numpy(incoming(case))

    a, b = (torch.tensor(x, requires_grad=True) for x in operands(case))
    naive = torch.logsumexp(a[..., :, :, None] + b[..., None, :, :], dim=-2)
    naive.backward(g)
    # A -inf cell's gradient there is exp(-inf - (-inf)): NaN.
    assert torch.isnan(a.grad).any() or torch.isnan(b.grad).any()

    a, b = (torch.tensor(x, requires_grad=True) for x in operands(case))
    out = logmatmulexp(a, b)
    np.testing.assert_array_equal(
        np.isfinite(out.detach().numpy()), np.isfinite(naive.detach().numpy())
    )
    out.backward(g)
    got = (out.detach().numpy(), a.grad.numpy(), b.grad.numpy())
    check(got, want, RTOL, case)


@pytest.mark.parametrize("which", ["a", "b"])
@pytest.mark.parametrize("case", ["crossed-800", "inf-rows-cols", "broadcast"])
def test_torch_one_operand_requires_grad(torch, case, which):
    want = reference(case)
    a, b = (torch.tensor(x) for x in operands(case))
    leaf = a if which == "a" else b
    other = b if which == "a" else a
    leaf.requires_grad_()
    out = logmatmulexp(a, b)
    assert out.requires_grad
    out.backward(torch.from_numpy(incoming(case)))
    assert other.grad is None
    if which == "a":
        check_gradient(a.grad.numpy(), want.grad_a, want.size_a, want.live_a, RTOL, "a")
    else:
        check_gradient(b.grad.numpy(), want.grad_b, want.size_b, want.live_b, RTOL, "b")


def test_torch_float32_sum_backward(torch):
    case = "crossed-100"
    a, b = (torch.tensor(x, requires_grad=True) for x in operands(case, np.float32))
    out = logmatmulexp(a, b)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert a.grad.dtype == b.grad.dtype == torch.float32
    # G = 1 > 0: no cancellation, so RTOL32 is a plain relative bound here.
    want = exact(*operands(case, np.float32), np.ones(out.shape))
    check((out.detach().numpy(), a.grad.numpy(), b.grad.numpy()), want, RTOL32, case)


def test_torch_gradient_keeps_each_operands_dtype(torch):
    # The product runs in the promoted dtype; each gradient comes back in its
    # own operand's.
    x, y = operands("crossed-800")
    a = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    b = torch.tensor(y, dtype=torch.float64, requires_grad=True)
    out = logmatmulexp(a, b)
    assert out.dtype == torch.float64
    out.sum().backward()
    assert a.grad.dtype == torch.float32
    assert b.grad.dtype == torch.float64
    want = exact(a.detach().numpy(), y, np.ones(out.shape))
    check_gradient(b.grad.numpy(), want.grad_b, want.size_b, want.live_b, RTOL, "b")
    # a's gradient is the float64 one rounded to float32: the two roundings
    # (its and the reference's) are at most an ulp apart.
    check_gradient(
        a.grad.numpy(),
        want.grad_a.astype(np.float32),
        want.size_a,
        want.live_a,
        float(np.finfo(np.float32).eps),
        "a",
    )


def test_torch_no_graph_without_requires_grad(torch):
    a, b = (torch.tensor(x) for x in operands("crossed-800"))
    out = logmatmulexp(a, b)
    assert not out.requires_grad
    assert out.grad_fn is None
    a.requires_grad_()
    with torch.no_grad():
        out = logmatmulexp(a, b)
    assert not out.requires_grad
    assert out.grad_fn is None
    # and with grad enabled again, the same call does build one
    assert logmatmulexp(a, b).grad_fn is not None


# JAX ---------------------------------------------------------------------------


# Eager JAX compiles every operation of both routes for each new shape
# (seconds): one case, whose rows 0-1 are repaired cell by cell and rows 2-3
# stay on the matrix products.
@pytest.mark.parametrize("case", ["crossed-800"])
def test_jax_jit_matches_eager(jax_engine, case):
    want = reference(case)
    args = (*operands(case), incoming(case), np.isfinite(want.out))
    eager = Jax("eager").value_and_grad(*args)
    jitted = jax_engine.value_and_grad(*args)
    check(eager, want, RTOL, f"eager {case}")
    check(jitted, want, RTOL, f"jit {case}")
    # Not bit for bit: under jit every cell's value comes from the blocked
    # broadcast, summed in another order than the per-cell repair, and XLA
    # fuses and may contract a * b + c into one rounding. An ulp of out_ij
    # moves each share exp(a + b - out) by that much relative, so the bound
    # is a few ulps of the largest |out| (~1600 here) times the sum of
    # |share|.
    finite = np.isfinite(want.out)
    ulps = 4 * np.finfo(np.float64).eps * (1 + np.max(np.abs(want.out[finite])))
    eps = np.finfo(np.float64).eps
    np.testing.assert_allclose(jitted[0], eager[0], rtol=4 * eps, atol=4 * eps)
    for e, j, size in zip(
        eager[1:], jitted[1:], (want.size_a, want.size_b), strict=True
    ):
        assert (np.abs(j - e) <= ulps * size).all(), np.max(np.abs(j - e) / size)
    # jax.jit(jax.grad) is the same function as the jitted value_and_grad's
    # gradient part.
    a, b, g, mask = args
    jnp = jax_engine.jax.numpy
    grads = _jax_transform("grad-jit")(
        jnp.asarray(a), jnp.asarray(b), jnp.asarray(np.where(mask, g, 0.0)), mask
    )
    for x, y in zip(grads, jitted[1:], strict=True):
        np.testing.assert_allclose(np.asarray(x), y, rtol=ulps, atol=0)


def test_jax_jit_takes_the_broadcast_route(jax_engine, monkeypatch):
    # The comparison above is only worth something if eager and jitted
    # gradients come from different code: the per-cell repair, readable
    # only outside a trace, and the blocked broadcast. (JAX transposes the
    # forward-mode rule, so the tangents are what runs.)
    import lsekit._core.linalg as impl

    jax = jax_engine.jax
    calls: list[str] = []
    for name in ("cell_tangents", "exact_tangent"):
        original = getattr(impl, name)

        def spy(*args: Any, _name: str = name, _f: Any = original) -> Any:
            calls.append(_name)
            return _f(*args)

        monkeypatch.setattr(impl, name, spy)
    want = reference("crossed-800")
    a, b = (jax.numpy.asarray(x) for x in operands("crossed-800"))
    args = (a, b, jax.numpy.asarray(incoming("crossed-800")), np.isfinite(want.out))

    def loss(*args: Any) -> Any:
        return _jax_loss(*args)[0]

    jax.grad(loss, (0, 1))(*args)
    assert calls == ["cell_tangents"]
    calls.clear()
    # A new function: jit traces it (the cached ones would not run Python).
    jax.jit(jax.grad(loss, (0, 1)))(*args)
    assert calls == ["exact_tangent"]
