"""First and second derivatives on PyTorch and JAX, against closed forms.

With ``p = softmax(x)`` over a slice:

- ``d logsumexp / dx = p`` (with weights, ``d/da = sign * b * exp(a - out)``
  and ``d/db = sign * exp(a - out)``, the zero weights included);
- the Jacobian of softmax is ``diag(p) - p pᵀ``, that of log_softmax
  ``I - 1 pᵀ``;
- the Hessian of logsumexp is ``diag(p) - p pᵀ``; that of a cross-entropy
  example, its target mass ``Q`` times the same;
- ``d logmatmulexp_ij / d a_ik = d / d b_kj = exp(a_ik + b_kj - out_ij)``.

The closed forms are evaluated with SciPy's softmax and logsumexp in float64,
independently of lsekit. Where PyTorch and JAX give NaN (an all ``-inf``
slice, masked entries, zero weights), lsekit's derivatives are finite: 0 for
entries that do not count, and the one-sided limit elsewhere.

Both reverse mode (``torch.autograd``, ``torch.func.jacrev``, ``jax.grad``,
``jax.jacrev``) and forward mode (``torch.func.jacfwd``, ``jax.jacfwd``) are
checked, and ``gradcheck`` / ``gradgradcheck`` compare PyTorch's analytic
derivatives with finite differences. float64 throughout; on JAX under
``jax.enable_x64`` where the session did not enable it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from scipy import special

from lsekit import cross_entropy, log_softmax, logmatmulexp, logsumexp, softmax
from tests.support import jax_x64, library_session

# torch.func's forward mode warns about PyTorch's own use of torch.jit.script.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

INF = np.inf
RTOL = 1e-12
ATOL = 1e-14


# The two autodiff libraries ------------------------------------------------------


class Torch:
    name = "torch"

    def __init__(self) -> None:
        self.torch = pytest.importorskip("torch")
        self.lib = self.torch

    def asarray(self, x: Any) -> Any:
        return self.torch.asarray(np.asarray(x))

    def numpy(self, x: Any) -> np.ndarray:
        return x.detach().numpy()

    def grad(self, f: Callable[..., Any], *args: Any) -> tuple[np.ndarray, ...]:
        xs = [self.asarray(a).requires_grad_(True) for a in args]
        grads = self.torch.autograd.grad(f(*xs), xs)
        return tuple(self.numpy(g) for g in grads)

    def jacobian(self, f: Callable[[Any], Any], x: Any, forward: bool) -> np.ndarray:
        jac = self.torch.func.jacfwd if forward else self.torch.func.jacrev
        return self.numpy(jac(f)(self.asarray(x)))

    def hvp(self, f: Callable[[Any], Any], x: Any, v: Any) -> np.ndarray:
        # Double backward, as torch.autograd.functional.hvp and most training
        # code take it.
        xt = self.asarray(x).requires_grad_(True)
        (g,) = self.torch.autograd.grad(f(xt), xt, create_graph=True)
        (h,) = self.torch.autograd.grad((g * self.asarray(v)).sum(), xt)
        return self.numpy(h)


class Jax:
    name = "jax"

    def __init__(self, jax: Any) -> None:
        self.jax = jax
        self.lib = jax.numpy

    def asarray(self, x: Any) -> Any:
        return self.jax.numpy.asarray(np.asarray(x))

    def numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def grad(self, f: Callable[..., Any], *args: Any) -> tuple[np.ndarray, ...]:
        argnums = tuple(range(len(args)))
        grads = self.jax.grad(f, argnums)(*map(self.asarray, args))
        return tuple(map(np.asarray, grads))

    def jacobian(self, f: Callable[[Any], Any], x: Any, forward: bool) -> np.ndarray:
        jac = self.jax.jacfwd if forward else self.jax.jacrev
        return np.asarray(jac(f)(self.asarray(x)))

    def hvp(self, f: Callable[[Any], Any], x: Any, v: Any) -> np.ndarray:
        # Forward over reverse, as jax.hessian and the JAX docs take it.
        _, h = self.jax.jvp(self.jax.grad(f), (self.asarray(x),), (self.asarray(v),))
        return np.asarray(h)


@pytest.fixture(params=["torch", "jax"])
def engine(request: pytest.FixtureRequest) -> Iterator[Any]:
    library_session(request, request.param)
    if request.param == "torch":
        yield Torch()
    else:
        with jax_x64() as jax:
            yield Jax(jax)


@pytest.fixture
def torch(request: pytest.FixtureRequest) -> Any:
    return library_session(request, "torch")


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape}, want {want.shape}"
    assert np.isfinite(got).all(), f"{what}: not finite\n{got}"
    scale = float(np.max(np.abs(want), initial=1.0))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * scale, err_msg=what)


# Inputs ------------------------------------------------------------------------

rng = np.random.default_rng(31)
ROWS = rng.normal(scale=3.0, size=(5, 6))
ROWS[1, [0, 3]] = -INF  # -inf among finite entries
ROWS[2, :] = -INF  # an all -inf slice: PyTorch and JAX give NaN
ROWS[3, :2] = [0.0, -40.0]  # a dominant entry
ROWS[3, 2:] = -60.0
ROWS[4, :3] = ROWS[4].max()  # a three-way tie at the maximum
MASK = rng.uniform(size=ROWS.shape) < 0.7
MASK[0, :] = False  # fully masked
MASK[4, :] = True
WEIGHTS = rng.uniform(0.2, 2.0, size=ROWS.shape)
WEIGHTS[:, 1] = 0.0  # zero weights, at finite logits too
WEIGHTS[0, 4] = -0.5  # a negative weight (return_sign)
WEIGHTS[3, 0] = 0.0  # the dominant entry weighs nothing
COTANGENT = rng.normal(size=ROWS.shape[0])


def _softmax_rows(x: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """SciPy's softmax of each row; 0 for a row with nothing in it."""
    if where is not None:
        x = np.where(where, x, -INF)
    out = np.zeros_like(x)
    for i, row in enumerate(x):
        if np.isfinite(row).any():
            out[i] = special.softmax(row)
    return out


# logsumexp ---------------------------------------------------------------------


@pytest.mark.parametrize("forward", [False, True], ids=["reverse", "forward"])
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "where"])
def test_logsumexp_gradient_is_softmax(engine, masked, forward):
    where = engine.asarray(MASK) if masked else None
    g = engine.asarray(COTANGENT)

    def f(x: Any) -> Any:
        return (logsumexp(x, axis=-1, where=where) * g).sum()

    got = engine.jacobian(f, ROWS, forward)
    want = COTANGENT[:, None] * _softmax_rows(ROWS, MASK if masked else None)
    assert_close(got, want, f"{engine.name} logsumexp gradient")
    # Exactly zero, not NaN, where an entry does not count.
    assert (got[2] == 0.0).all()
    assert (got[ROWS == -INF] == 0.0).all()
    if masked:
        assert (got[~MASK] == 0.0).all()


@pytest.mark.parametrize("axis", [None, 0, (0, 1)])
def test_logsumexp_gradient_over_axes(engine, axis):
    x = np.where(np.isfinite(ROWS), ROWS, 0.0)

    def f(z: Any) -> Any:
        return (logsumexp(z, axis=axis, keepdims=True) * 1.5).sum()

    (got,) = engine.grad(f, x)
    lse = special.logsumexp(x, axis=axis, keepdims=True)
    assert_close(got, 1.5 * np.exp(x - lse), f"{engine.name} axis={axis}")


def test_logsumexp_weights_gradient(engine):
    # d/da = sign * b * exp(a - out), d/db = sign * exp(a - out): finite
    # and correct at zero weights, which the sum leaves out (PyTorch's and
    # JAX's own give 0 for d/db there, or NaN for a whole zero row).
    a = np.where(np.isfinite(ROWS), ROWS, -INF)
    g = engine.asarray(COTANGENT)

    def f(x: Any, w: Any) -> Any:
        out, _ = logsumexp(x, axis=-1, b=w, return_sign=True)
        return (out * g).sum()

    got_a, got_b = engine.grad(f, a, WEIGHTS)
    out, sign = special.logsumexp(a, axis=-1, b=WEIGHTS, return_sign=True)
    with np.errstate(invalid="ignore"):
        share = (
            np.where(np.isneginf(out)[:, None], 0.0, np.exp(a - out[:, None]))
            * (COTANGENT * sign)[:, None]
        )
    assert_close(got_a, WEIGHTS * share, f"{engine.name} d/da")
    assert_close(got_b, share, f"{engine.name} d/db")
    assert (got_a[:, 1] == 0.0).all()
    assert (np.abs(got_b[[0, 1, 3, 4], 1]) > 0).all()


def test_logsumexp_gradient_of_masked_weights_is_zero(engine):
    # A masked entry is absent: neither its logit nor its weight moves the
    # result.
    def f(x: Any, w: Any) -> Any:
        return logsumexp(x, axis=-1, b=w, where=engine.asarray(MASK)).sum()

    a = np.abs(np.where(np.isfinite(ROWS), ROWS, 0.0))
    got_a, got_b = engine.grad(f, a, np.abs(WEIGHTS))
    assert (got_a[~MASK] == 0.0).all()
    assert (got_b[~MASK] == 0.0).all()
    assert np.isfinite(got_b).all()


# softmax and log_softmax Jacobians ----------------------------------------------


def _row_jacobians(p: np.ndarray, log: bool) -> np.ndarray:
    """Per-row Jacobians, (rows, C, rows, C), block diagonal."""
    n, c = p.shape
    jac = np.zeros((n, c, n, c))
    for i, row in enumerate(p):
        if log:
            block = np.eye(c) - np.outer(np.ones(c), row)
        else:
            block = np.diag(row) - np.outer(row, row)
        jac[i, :, i, :] = block
    return jac


@pytest.mark.parametrize("forward", [False, True], ids=["reverse", "forward"])
@pytest.mark.parametrize("func", ["softmax", "log_softmax"])
def test_normalisation_jacobians(engine, func, forward):
    fn = {"softmax": softmax, "log_softmax": log_softmax}[func]
    got = engine.jacobian(lambda x: fn(x, axis=-1), ROWS, forward)
    p = _softmax_rows(ROWS)
    want = _row_jacobians(p, func == "log_softmax")
    # An all -inf slice is constant (0, or -inf): no derivative.
    want[2, :, 2, :] = 0.0
    assert_close(got, want, f"{engine.name} {func}")


@pytest.mark.parametrize("func", ["softmax", "log_softmax"])
def test_normalisation_jacobians_where(engine, func):
    fn = {"softmax": softmax, "log_softmax": log_softmax}[func]
    mask = engine.asarray(MASK)
    got = engine.jacobian(lambda x: fn(x, axis=-1, where=mask), ROWS, False)
    p = _softmax_rows(ROWS, MASK)
    want = _row_jacobians(p, func == "log_softmax")
    # Masked entries are constants: they neither move nor are moved.
    want[~MASK, :, :] = 0.0
    want[:, :, ~MASK] = 0.0
    want[2, :, 2, :] = 0.0
    assert_close(got, want, f"{engine.name} {func} where")


# Second derivatives ----------------------------------------------------------------


def test_logsumexp_hessian_vector_product(engine):
    x = np.where(np.isfinite(ROWS), ROWS, -INF)
    v = np.random.default_rng(1).normal(size=x.shape)
    g = engine.asarray(COTANGENT)

    def f(z: Any) -> Any:
        return (logsumexp(z, axis=-1) * g).sum()

    got = engine.hvp(f, x, v)
    p = _softmax_rows(x)
    want = COTANGENT[:, None] * (p * v - p * np.sum(p * v, axis=1, keepdims=True))
    assert_close(got, want, f"{engine.name} logsumexp hvp")
    assert (got[2] == 0.0).all()


CE_WEIGHT = rng.uniform(0.5, 2.0, size=6)
CE_TARGET = np.array([2, 5, 0, 0, 1])
CE_LOGITS = np.where(np.isfinite(ROWS), ROWS, 0.0)
CE_LOGITS[1, [0, 3]] = -INF  # -inf in classes that are not the target


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_hessian_vector_product(engine, reduction):
    smoothing, ignore = 0.1, 1
    weight, target = engine.asarray(CE_WEIGHT), engine.asarray(CE_TARGET)
    v = np.random.default_rng(2).normal(size=CE_LOGITS.shape)

    def f(z: Any) -> Any:
        return cross_entropy(
            z,
            target,
            weight=weight,
            ignore_index=ignore,
            label_smoothing=smoothing,
            reduction=reduction,
        )

    got = engine.hvp(f, CE_LOGITS, v)
    # Each counted example's loss is sum_c q_c * nll_c, whose Hessian is
    # Q (diag(p) - p pᵀ) with Q = sum_c q_c; the mean divides by the summed
    # target weights.
    counted = np.not_equal(CE_TARGET, ignore)
    q_total = (1 - smoothing) * CE_WEIGHT[CE_TARGET] + smoothing * CE_WEIGHT.mean()
    scale = np.where(counted, q_total, 0.0)
    if reduction == "mean":
        scale /= CE_WEIGHT[CE_TARGET][counted].sum()
    p = _softmax_rows(CE_LOGITS)
    want = scale[:, None] * (p * v - p * np.sum(p * v, axis=1, keepdims=True))
    assert_close(got, want, f"{engine.name} cross_entropy hvp {reduction}")
    assert (got[~counted] == 0.0).all()
    assert (got[1, [0, 3]] == 0.0).all()


def test_cross_entropy_hessian_is_diag_p_minus_ppt(engine):
    # The whole Hessian of one example, not only its products.
    row = np.array([1.0, -2.0, 0.5, 3.0])

    def f(z: Any) -> Any:
        return cross_entropy(z, engine.asarray(np.array(2)))

    x = engine.asarray(row)
    if engine.name == "torch":
        hessian = engine.numpy(engine.torch.func.hessian(f)(x))
    else:
        hessian = np.asarray(engine.jax.hessian(f)(x))
    p = special.softmax(row)
    assert_close(hessian, np.diag(p) - np.outer(p, p), f"{engine.name} hessian")


# logmatmulexp ---------------------------------------------------------------------

LEFT = rng.normal(scale=2.0, size=(3, 4))
RIGHT = rng.normal(scale=2.0, size=(4, 2))
LEFT[0] = [-500.0, 900.0, -500.0, -500.0]  # crossed maxima
RIGHT[:, 0] = [900.0, -500.0, -500.0, -500.0]
LEFT[2, 1] = -INF
RIGHT[3, 1] = -INF


def _lme_jacobians(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d out_ij / d a_pk and d out_ij / d b_kq, from the shares of the terms."""
    terms = a[:, :, None] + b[None, :, :]
    share = np.exp(terms - special.logsumexp(terms, axis=1, keepdims=True))
    m, k = a.shape
    n = b.shape[1]
    jac_a = np.zeros((m, n, m, k))
    jac_b = np.zeros((m, n, k, n))
    for i in range(m):
        for j in range(n):
            jac_a[i, j, i, :] = share[i, :, j]
            jac_b[i, j, :, j] = share[i, :, j]
    return jac_a, jac_b


@pytest.mark.parametrize("forward", [False, True], ids=["reverse", "forward"])
def test_logmatmulexp_jacobians(engine, forward):
    want_a, want_b = _lme_jacobians(LEFT, RIGHT)
    b, a = engine.asarray(RIGHT), engine.asarray(LEFT)
    got_a = engine.jacobian(lambda x: logmatmulexp(x, b), LEFT, forward)
    got_b = engine.jacobian(lambda y: logmatmulexp(a, y), RIGHT, forward)
    assert_close(got_a, want_a, f"{engine.name} d/da")
    assert_close(got_b, want_b, f"{engine.name} d/db")


def test_logmatmulexp_hessian_vector_product(engine):
    # Against central differences of the (exact, tested) gradient.
    b = engine.asarray(RIGHT)
    g = engine.asarray(np.random.default_rng(3).normal(size=(3, 2)))

    def f(x: Any) -> Any:
        return (logmatmulexp(x, b) * g).sum()

    a = np.where(np.isfinite(LEFT), LEFT, -INF)
    v = np.where(np.isfinite(LEFT), np.random.default_rng(4).normal(size=LEFT.shape), 0)
    got = engine.hvp(f, a, v)
    h = 1e-5
    (up,) = engine.grad(f, a + h * v)
    (down,) = engine.grad(f, a - h * v)
    want = (up - down) / (2 * h)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


# PyTorch's gradcheck and gradgradcheck ---------------------------------------------


def _finite_part(torch: Any, x: np.ndarray) -> tuple[Any, Callable[[Any], Any]]:
    """The finite entries of ``x`` as the variable, the -inf ones fixed."""
    fixed = torch.asarray(~np.isfinite(x))
    start = torch.asarray(np.where(np.isfinite(x), x, 0.0)).requires_grad_(True)

    def embed(z: Any) -> Any:
        return torch.where(fixed, -INF, z)

    return start, embed


GRADCHECK = {
    "logsumexp": lambda z, t: logsumexp(z, axis=-1),
    "logsumexp-where": lambda z, t: logsumexp(z, axis=-1, where=t.asarray(MASK)),
    "logsumexp-axis-none": lambda z, t: logsumexp(z),
    "softmax": lambda z, t: softmax(z, axis=-1),
    "softmax-where": lambda z, t: softmax(z, axis=1, where=t.asarray(MASK)),
    "log_softmax": lambda z, t: log_softmax(z, axis=-1),
    "log_softmax-where": lambda z, t: log_softmax(z, axis=-1, where=t.asarray(MASK)),
}


@pytest.mark.parametrize("case", list(GRADCHECK))
def test_torch_gradcheck_and_gradgradcheck(torch, case):
    start, embed = _finite_part(torch, ROWS)
    fn = GRADCHECK[case]

    def f(z: Any) -> Any:
        out = fn(embed(z), torch)
        # -inf results (log_softmax at -inf logits) have no finite
        # differences; the finite ones are checked.
        return torch.where(torch.isfinite(out), out, 0.0)

    assert torch.autograd.gradcheck(f, (start,))
    assert torch.autograd.gradgradcheck(f, (start,))


def test_torch_gradcheck_weights(torch):
    # Finite differences step the zero weights through 0, so the slope
    # there is checked too; logits of one scale keep the sum far from 0
    # within a step.
    a = torch.asarray(np.random.default_rng(5).normal(size=ROWS.shape))
    a.requires_grad_(True)
    b = torch.asarray(WEIGHTS).requires_grad_(True)

    def f(x: Any, w: Any) -> Any:
        return logsumexp(x, axis=-1, b=w, return_sign=True)[0]

    assert torch.autograd.gradcheck(f, (a, b))
    assert torch.autograd.gradgradcheck(f, (a, b))


@pytest.mark.parametrize("crossed", [False, True], ids=["normal", "crossed"])
def test_torch_logmatmulexp_gradgradcheck(torch, crossed):
    other = np.random.default_rng(6)
    a = LEFT if crossed else other.normal(size=(2, 3, 4))
    b = RIGHT if crossed else other.normal(size=(2, 4, 3))
    left, embed_a = _finite_part(torch, a)
    right, embed_b = _finite_part(torch, b)

    def f(x: Any, y: Any) -> Any:
        return logmatmulexp(embed_a(x), embed_b(y))

    assert torch.autograd.gradcheck(f, (left, right))
    assert torch.autograd.gradgradcheck(f, (left, right))


CE_CASES = {
    "weighted-smoothed-ignore": {
        "weight": CE_WEIGHT,
        "label_smoothing": 0.1,
        "ignore_index": 1,
    },
    # A class of zero weight: its -inf logit costs nothing, even smoothed.
    "zero-weight-smoothed": {
        "weight": np.where(np.arange(6) == 3, 0.0, CE_WEIGHT),
        "label_smoothing": 0.2,
    },
    "where": {"where": MASK[:, 0]},
}


def _ce_setup(engine: Any, case: str) -> tuple[np.ndarray, dict[str, Any]]:
    kw = dict(CE_CASES[case])
    logits = CE_LOGITS.copy()
    if case == "zero-weight-smoothed":
        logits[1, [0, 3]] = [0.5, -INF]
    elif "label_smoothing" in kw:
        # Smoothing puts mass on every class: a -inf logit of a class that
        # weighs something costs inf.
        logits[1, [0, 3]] = [0.5, -4.0]
    kw = {
        k: engine.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()
    }
    return logits, kw


def _ce_jacobian(logits: np.ndarray, case: str) -> np.ndarray:
    """d loss_n / d x_n = Q_n p_n - q_n, per example ('none')."""
    kw = CE_CASES[case]
    n, c = logits.shape
    weight = kw.get("weight", np.ones(c))
    eps = kw.get("label_smoothing", 0.0)
    q = eps / c * np.tile(weight, (n, 1))
    q[np.arange(n), CE_TARGET] += (1 - eps) * weight[CE_TARGET]
    counted = np.ones(n, dtype=bool)
    if "ignore_index" in kw:
        counted &= np.not_equal(CE_TARGET, kw["ignore_index"])
    if "where" in kw:
        counted &= kw["where"]
    p = _softmax_rows(logits)
    rows = np.where(counted[:, None], q.sum(axis=1, keepdims=True) * p - q, 0.0)
    jac = np.zeros((n, n, c))
    jac[np.arange(n), np.arange(n)] = rows
    return jac


@pytest.mark.parametrize("forward", [False, True], ids=["reverse", "forward"])
@pytest.mark.parametrize("case", list(CE_CASES))
def test_cross_entropy_jacobian(engine, case, forward):
    logits, kw = _ce_setup(engine, case)
    target = engine.asarray(CE_TARGET)
    got = engine.jacobian(
        lambda z: cross_entropy(z, target, reduction="none", **kw), logits, forward
    )
    assert_close(got, _ce_jacobian(logits, case), f"{engine.name} {case}")


@pytest.mark.parametrize("case", list(CE_CASES))
def test_torch_cross_entropy_gradgradcheck(torch, case):
    engine = Torch()
    logits, kw = _ce_setup(engine, case)
    start, embed = _finite_part(torch, logits)
    target = torch.asarray(CE_TARGET)

    def f(z: Any) -> Any:
        return cross_entropy(embed(z), target, reduction="none", **kw)

    assert torch.autograd.gradcheck(f, (start,))
    assert torch.autograd.gradgradcheck(f, (start,))


# Where the peers give NaN -----------------------------------------------------------


def test_peers_give_nan_where_lsekit_does_not(engine):
    # The cases that lsekit's finite gradients are for: PyTorch's and JAX's
    # own logsumexp and log_softmax give NaN on an all -inf slice.
    x = np.full(4, -INF)
    if engine.name == "torch":
        torch = engine.torch
        (peer,) = engine.grad(lambda z: torch.logsumexp(z, 0), x)
    else:
        (peer,) = engine.grad(engine.jax.nn.logsumexp, x)
    (got,) = engine.grad(lambda z: logsumexp(z), x)
    assert np.isnan(peer).all()
    assert (got == 0.0).all()


# Half precision ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_gradients(engine, dtype):
    # Computed in float32, the gradient is rounded once to the half dtype:
    # within one of its ulps of softmax, even for logits at its maximum.
    top = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38}[dtype]
    rows = np.array([[1.0, -2.0, 0.5, 3.0], [top, top, 0.5 * top, 0.0]])
    half = getattr(engine.lib, dtype)
    x = engine.lib.asarray(rows, dtype=half)
    if engine.name == "torch":
        x.requires_grad_(True)
        (grad,) = engine.torch.autograd.grad(logsumexp(x, axis=-1).sum(), x)
        x, got = x.detach().double().numpy(), grad.double().numpy()
    else:
        grad = engine.jax.grad(lambda z: logsumexp(z, axis=-1).sum())(x)
        x, got = np.asarray(x, dtype=np.float64), np.asarray(grad, dtype=np.float64)
    assert grad.dtype == half
    step = 2.0 ** -(10 if dtype == "float16" else 7)
    np.testing.assert_allclose(got, _softmax_rows(x), rtol=step, atol=0)


# On the backend's device ----------------------------------------------------------


def _backend_grad(bk: Any, f: Callable[[Any], Any], x: Any) -> Any:
    if bk.name == "jax":
        import jax

        return jax.grad(f)(x)
    import torch

    leaf = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(leaf), leaf)
    return grad


def test_gradients_on_the_backends_device(bk):
    # Every function's gradient, taken on the backend's own device (CUDA in
    # the torch_cuda session), stays there and matches its closed form.
    if bk.manifest.convert != "torch" and bk.name != "jax":
        pytest.skip(f"{bk.name} has no autodiff")
    x = CE_LOGITS[:, :4]
    right = RIGHT
    xs, target, other = (
        bk.asarray(x),
        bk.asarray(CE_TARGET % 4, None),
        bk.asarray(right),
    )
    p = _softmax_rows(x)
    first = np.eye(4)[0]
    onehot = np.eye(4)[CE_TARGET % 4]
    cases = {
        "logsumexp": (lambda z: logsumexp(z, axis=-1).sum(), p),
        "softmax": (lambda z: softmax(z, axis=-1)[:, 0].sum(), p[:, :1] * (first - p)),
        "log_softmax": (lambda z: log_softmax(z, axis=-1)[:, 0].sum(), first - p),
        "cross_entropy": (
            lambda z: cross_entropy(z, target, reduction="sum"),
            p - onehot,
        ),
        "logmatmulexp": (
            lambda z: logmatmulexp(z, other).sum(),
            _lme_jacobians(x, right)[0].sum(axis=(0, 1)),
        ),
    }
    for name, (f, want) in cases.items():
        grad = _backend_grad(bk, f, xs)
        bk.check_array(grad, xs)
        assert_close(bk.to_numpy(grad), want, f"{bk.name} {name}")
